#include "server/internal/fd_limit.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>

#include "storage/store.h"

namespace deltaserve::server::internal {

uint64_t CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  uint64_t n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // the directory's own descriptor
}

FdBudget RaiseFdLimit() {
  FdBudget b;
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    b.max_connections = 65536;
    return b;
  }
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
  b.open = CountOpenFds();
  b.reserve = std::clamp<uint64_t>(b.soft / 16, 16, 256) + storage::kStoreSpareFileDescriptors;
  const uint64_t used = b.open + b.reserve;
  const uint64_t left = b.soft > used ? b.soft - used : 0;
  b.rocksdb_max_open_files = static_cast<int>(std::clamp<uint64_t>(left / 2, 20, 65536));
  const uint64_t rest =
      left > static_cast<uint64_t>(b.rocksdb_max_open_files) ? left - b.rocksdb_max_open_files : 0;
  b.max_connections = static_cast<int>(std::clamp<uint64_t>(rest, 1, 1 << 20));
  return b;
}

}  // namespace deltaserve::server::internal
