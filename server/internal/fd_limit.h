// The process's file-descriptor budget (RLIMIT_NOFILE): raised to the hard limit at
// start, and split between RocksDB's table files and everything else (sockets, the
// write-ahead log, new SST files during flushes and compactions), so that RocksDB
// itself never runs out of descriptors (EMFILE).
#ifndef DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_
#define DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_

#include <cstdint>

namespace deltaserve::server::internal {

struct FdBudget {
  uint64_t soft_before = 0;  // soft limit found at start
  uint64_t soft = 0;         // soft limit now (raised to `hard` when possible)
  uint64_t hard = 0;
  // RocksDB max_open_files: half the soft limit (at least 16, at most 65536).
  int rocksdb_max_open_files = -1;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (as far as the kernel allows) and
// computes the split. Never fails: if getrlimit fails, returns soft = hard = 0 and
// rocksdb_max_open_files = -1 (no bound).
FdBudget RaiseFdLimit();

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_
