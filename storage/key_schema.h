// The RocksDB key schema and value formats of DeltaStore (storage/store.h). This header
// is the one place they are defined; tests use it to inject faults into a raw database.
//
// Column families
//   "default"  small values: task meta and tenant usage
//   "records"  large values: container header bytes and tensor records (no compression:
//              records are already compressed; optionally kept in blob files)
//
// Keys (all ASCII; '/' separates fields and cannot occur in a tenant or task name, see
// ValidateName, so the prefix "t/<tenant>/" of one tenant never matches another
// tenant's keys, e.g. "t/ab/" vs "t/a/"):
//   default  "t/<tenant>/<task>"          -> task meta (format below)
//   default  "u/<tenant>"                 -> tenant usage (format below); absent = zero,
//                                            deleted when the tenant's last task goes
//   records  "h/<tenant>/<task>"          -> the container's header bytes, as they are
//   records  "r/<tenant>/<task>/" + u64be -> record bytes of tensor <index> (8-byte
//                                            big-endian index: keys sort in record order)
//   records  "f/<tenant>/<task>/<name>"    -> the bytes of side file <name>
//                                            (storage/side_files.h; names hold no '/')
// A task exists iff its meta key exists; its header, records and side files are written
// and deleted in the same WriteBatch as the meta, or (a commit of at least
// StoreOptions::ingest_min_bytes) in table files ingested in one IngestExternalFiles call
// with the meta's (storage/internal/ingest.h; staged under <db>/ingest, not keys).
//
// Task meta value, version 1, 2 or 3 (integers little-endian; str = u32 length + bytes):
//   "DSTM"  magic, 4 bytes
//   u16     version: 1 for a task without side files, 2 with, 3 with the container's
//           content hash (written by every commit since session 10; 1 and 2 are still
//           read: tasks committed before have no content hash). A reader returns
//           DataLoss for any other magic or version.
//   i64     created_unix (seconds)
//   16 B    base hash (XXH3-128 of the base, codec::BaseHash)
//   u64     header_bytes, u64 total_bytes (whole container), u64 weights
//   u32     metadata count, then per entry: str key, str value
//   u32     tensor count, then per tensor:
//             str name, u8 dtype (codec::DType), u8 encoding (codec::Encoding),
//             u8 rank, rank x i64 dims, u64 record_bytes
//   versions 2 and 3:
//   u32     side file count, then per file: str name, u64 size, u64 XXH3-64 of its bytes
//   version 3 only:
//   u64     XXH3-64 (seed 0) of the whole container (header, records, trailer): the
//           task's version identity (TaskInfo::container_xxh3_64)
//   u64     XXH3-64 of every preceding byte of the value
// Tenant usage value, version 1:
//   "DSTU" magic, u16 version = 1, u64 bytes, u64 tasks, u64 XXH3-64 of the preceding bytes
// A reader returns DataLoss (naming tenant and task) for a bad magic, version, checksum,
// truncation, trailing bytes or out-of-range enum; it never reads outside the value.
#ifndef DELTASERVE_STORAGE_KEY_SCHEMA_H_
#define DELTASERVE_STORAGE_KEY_SCHEMA_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/store.h"

namespace deltaserve::storage {

inline constexpr char kDefaultColumnFamily[] = "default";
inline constexpr char kRecordsColumnFamily[] = "records";

// REQUIRES for all: tenant and task pass ValidateName.
std::string TaskMetaKey(std::string_view tenant, std::string_view task);
// Prefix of every task meta key of `tenant` ("t/<tenant>/").
std::string TaskMetaPrefix(std::string_view tenant);
std::string UsageKey(std::string_view tenant);
inline constexpr char kUsagePrefix[] = "u/";
std::string HeaderKey(std::string_view tenant, std::string_view task);
std::string RecordKey(std::string_view tenant, std::string_view task, uint64_t index);
// REQUIRES: ValidateSideFileName(name), or name "" for the prefix of the task's side files.
std::string SideFileKey(std::string_view tenant, std::string_view task, std::string_view name);
// Smallest key greater than every key starting with `prefix` (an exclusive upper bound
// for a prefix scan). REQUIRES: prefix non-empty and its last byte != 0xff.
std::string PrefixEnd(std::string_view prefix);

// Task meta value (tenant and task are not stored: they are in the key).
std::string EncodeTaskMeta(const TaskInfo& info);
// Fills everything but tenant/task (set from the arguments) and bits_per_weight
// (recomputed). DataLoss naming tenant and task on any fault.
absl::StatusOr<TaskInfo> DecodeTaskMeta(std::string_view value, std::string_view tenant,
                                        std::string_view task);

std::string EncodeUsage(const TenantUsage& usage);
// DataLoss naming the tenant on any fault.
absl::StatusOr<TenantUsage> DecodeUsage(std::string_view value, std::string_view tenant);

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_KEY_SCHEMA_H_
