// The one conversion of rocksdb::Status to absl::Status (STYLE.md, "Errors").
#ifndef DELTASERVE_STORAGE_INTERNAL_STATUS_H_
#define DELTASERVE_STORAGE_INTERNAL_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace deltaserve::storage {

// OK stays OK. Otherwise the most specific absl code, with `context` (what we were
// doing, e.g. "reading tenant 'a' task 'b'") prefixed to RocksDB's message:
//   NotFound -> NotFound, Corruption -> DataLoss, InvalidArgument -> InvalidArgument,
//   NotSupported -> Unimplemented, IOError with no space -> ResourceExhausted,
//   other IOError / Busy / TryAgain / ShutdownInProgress / Incomplete -> Unavailable,
//   TimedOut -> DeadlineExceeded, Aborted -> Aborted, anything else -> Internal.
absl::Status FromRocksStatus(const rocksdb::Status& s, std::string_view context);

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_STATUS_H_
