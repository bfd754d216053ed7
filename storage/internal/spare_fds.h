// A RocksDB file system that keeps a few spare file descriptors for RocksDB's own files.
//
// RocksDB 7.8 rates a plain I/O error met while it creates a file at a memtable switch
// (the next write-ahead log) or a flush (a table file) as fatal with paranoid_checks
// (the default): the database turns read-only and DB::Resume() refuses until it is
// reopened, i.e. until the daemon restarts. One EMFILE (descriptors taken by sockets
// or by another component) was enough. This wrapper holds `spares` descriptors open on
// /dev/null; when opening a file fails with EMFILE or ENFILE it closes one spare and
// tries again, so RocksDB's files win over everything else for as long as spares last.
// Spares are reopened at the next file open once descriptors are free again.
// (Tried and dropped: marking the error retryable starts RocksDB 7.8's auto-recovery,
// which with atomic_flush hung in WaitForFlushMemTables and then in DB::Close;
// suppressing it in EventListener::OnBackgroundError left the failed flush unscheduled
// and writes stalled for good.)
#ifndef DELTASERVE_STORAGE_INTERNAL_SPARE_FDS_H_
#define DELTASERVE_STORAGE_INTERNAL_SPARE_FDS_H_

#include <memory>

#include "rocksdb/file_system.h"

namespace deltaserve::storage {

// Wraps `base` (thread-safe as `base` is). The spares are closed when it is destroyed.
std::shared_ptr<rocksdb::FileSystem> NewSpareFdFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base, int spares);

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_SPARE_FDS_H_
