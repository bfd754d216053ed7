/* deploy_early_signals' stand-in for a slow library initialiser: LD_PRELOADed into
 * deltaserved, its constructor (which runs after the executable's DT_PREINIT_ARRAY and
 * before main, as gRPC's, protobuf's and OpenBLAS's do) creates $DELTASERVE_HOLD_DIR/held
 * and waits until $DELTASERVE_HOLD_DIR/go exists. The test sends its signal in between:
 * a window that is otherwise ~20-40 ms wide and cannot be hit on purpose. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((constructor)) static void HoldStart(void) {
  const char* dir = getenv("DELTASERVE_HOLD_DIR");
  if (dir == NULL) return;
  char held[4096], go[4096];
  snprintf(held, sizeof(held), "%s/held", dir);
  snprintf(go, sizeof(go), "%s/go", dir);
  FILE* f = fopen(held, "w");
  if (f != NULL) fclose(f);
  const struct timespec ms = {0, 1000000};
  while (access(go, F_OK) != 0) nanosleep(&ms, NULL); /* EINTR: the loop goes on */
}
