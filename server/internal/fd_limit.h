// The process's file-descriptor budget (RLIMIT_NOFILE): raised to the hard limit at
// start, and split between RocksDB's table files, client connections and everything
// else (the write-ahead log, new SST files during flushes and compactions, gRPC's own
// descriptors, metrics scrapes, checkpoints), so that neither RocksDB nor the accept
// loop runs out of descriptors (EMFILE) in normal operation.
#ifndef DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_
#define DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_

#include <cstdint>

namespace deltaserve::server::internal {

struct FdBudget {
  uint64_t soft_before = 0;  // soft limit found at start
  uint64_t soft = 0;         // soft limit now (raised to `hard` when possible)
  uint64_t hard = 0;
  uint64_t open = 0;         // descriptors already open when the budget was made
  // Kept for everything else: soft / 16 (at least 16, at most 256) plus the store's
  // spare descriptors (storage::kStoreSpareFileDescriptors).
  uint64_t reserve = 0;
  // Of what is left (soft - open - reserve): RocksDB max_open_files gets half (at least
  // 20, RocksDB's own minimum; at most 65536), connections the rest (at least 1).
  int rocksdb_max_open_files = -1;
  int max_connections = 1;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (as far as the kernel allows) and
// computes the split. Never fails: if getrlimit fails, returns soft = hard = 0,
// rocksdb_max_open_files = -1 (no bound) and max_connections = 65536.
FdBudget RaiseFdLimit();

// Descriptors open in this process now (entries of /proc/self/fd); 0 if unreadable.
uint64_t CountOpenFds();

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_FD_LIMIT_H_
