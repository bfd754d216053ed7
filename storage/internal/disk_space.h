// Free space on the filesystem holding the database, and the commit admission rule that
// keeps RocksDB away from a full disk (Debian's librocksdb is built with assertions on:
// an I/O error in its write path may abort the process, so the store must not let it
// reach ENOSPC at all).
#ifndef DELTASERVE_STORAGE_INTERNAL_DISK_SPACE_H_
#define DELTASERVE_STORAGE_INTERNAL_DISK_SPACE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace deltaserve::storage {

// Bytes available to an unprivileged writer (statvfs f_bavail * f_frsize) on the
// filesystem holding `path`. Unavailable naming the path and errno if statvfs fails.
absl::StatusOr<uint64_t> FreeBytes(const std::string& path);

// Disk bytes a commit of `bytes` may take before RocksDB frees any: the write-ahead log
// copy plus the memtable flush into an SST file.
inline uint64_t CommitFootprint(uint64_t bytes) { return 2 * bytes; }

// OK if `free_bytes` leaves `reserve_bytes` free after writing `footprint` more; else
// ResourceExhausted "disk full: ..." naming `path`, the figures and the option.
absl::Status CheckRoom(const std::string& path, uint64_t free_bytes, uint64_t footprint,
                       uint64_t reserve_bytes, const std::string& what);

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_DISK_SPACE_H_
