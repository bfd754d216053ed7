#include "server/internal/fd_limit.h"

#include <sys/resource.h>

#include <algorithm>

namespace deltaserve::server::internal {

FdBudget RaiseFdLimit() {
  FdBudget b;
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return b;
  b.soft_before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    // May fail (e.g. a hard limit above fs.nr_open): the soft limit then stays.
    (void)setrlimit(RLIMIT_NOFILE, &raised);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return b;
  }
  b.soft = rl.rlim_cur;
  b.hard = rl.rlim_max;
  const uint64_t half = b.soft / 2;
  b.rocksdb_max_open_files = static_cast<int>(std::clamp<uint64_t>(half, 16, 65536));
  return b;
}

}  // namespace deltaserve::server::internal
