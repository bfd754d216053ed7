#include "client/internal/pull_memory.h"

#include <malloc.h>

namespace deltaserve::client {

bool KeepFreedMemoryForPull() {
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kPullMmapThresholdBytes)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(kPullTrimThresholdBytes)) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace deltaserve::client
