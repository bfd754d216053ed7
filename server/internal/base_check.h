// Whether stored tasks were compressed against the base this server has resident.
// A delta merges only into the base it was made against (codec/FORMAT.md, "Base hash");
// every task records that base's XXH3-128 hash (storage::TaskInfo::base_hash, taken from
// the container header), so the check is a comparison of 16 bytes per task, without
// reading any record.
#ifndef DELTASERVE_SERVER_INTERNAL_BASE_CHECK_H_
#define DELTASERVE_SERVER_INTERNAL_BASE_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/container.h"
#include "codec/safetensors.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

// Tasks of the local store made against another base than `resident`.
struct OtherBaseTasks {
  uint64_t count = 0;                 // how many tasks, over every tenant
  std::vector<std::string> examples;  // "tenant/task" of the first `max_examples`, in
                                      // tenant then task order
  std::string first_base_hex;         // base hash of the first of them ("" if none)
};

// Scans the task metadata of every tenant of `store` (one RocksDB iteration per tenant;
// no record is read). Errors: the store's, when its metadata cannot be read.
absl::StatusOr<OtherBaseTasks> FindTasksOfAnotherBase(const storage::DeltaStore& store,
                                                      const codec::BaseHash& resident,
                                                      size_t max_examples = 10);

// Logs one warning naming the count, the first tasks and what to do, if `found.count` > 0;
// `base_path` and `resident_hex` describe the resident base.
void WarnTasksOfAnotherBase(const OtherBaseTasks& found, const std::string& base_path,
                            const std::string& resident_hex);

// OK if `info` was compressed against `resident`; else FailedPrecondition "task 'T' was
// compressed against base H1, not the resident base H2; deltaserved serves one base
// (--base): pull it from a server started with the base it was compressed against, or
// push it again compressed against this one".
absl::Status CheckTaskBase(const storage::TaskInfo& info, const codec::BaseHash& resident);

// OK if every tensor of `info` (the task's metadata: no record is read) fits the base
// tensor it merges into, as far as the metadata tells (codec::CheckRecordFitsBase): a
// tensor that is not raw names a base tensor of `base` (its own name or its tie,
// codec::kBaseAliasKey); an unchanged one has that tensor's dtype and shape; a lossy one
// a float base tensor (its base_shape and payload are checked when merged). PutDelta
// refuses containers that do not fit, so this refuses tasks stored before it did, at
// StreamWeights and PinTask, before a byte is sent: FailedPrecondition "task 'T' does
// not fit the resident base: tensor 'x': ...; push it again (PutDelta now refuses such
// a container)".
absl::Status CheckTaskFitsBase(const storage::TaskInfo& info, const codec::ModelReader& base);

// Sets `out`->other_base: whether `out`->base_hash (hex, as FillTaskInfo sets it) differs
// from `resident_hex`, the resident base's hash. ListTasks and GetTask call it on every
// task they return, so that `deltactl list` and `info` show which tasks cannot be pulled.
void MarkOtherBase(const std::string& resident_hex, v1::TaskInfo* out);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_BASE_CHECK_H_
