// Merged tensors of a task: the decode -> merge -> hash pipeline that turns a stored
// record into the bytes StreamWeights sends, the cache keys they live under, and
// pinning a whole task in the merged-tensor cache.
#ifndef DELTASERVE_SERVER_INTERNAL_MERGED_TENSORS_H_
#define DELTASERVE_SERVER_INTERNAL_MERGED_TENSORS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "codec/tensor.h"
#include "server/internal/context.h"
#include "server/internal/tensor_cache.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

// Cache key of tensor `index` of a task version in `out_dtype` (nullopt: recorded).
std::string MergedTensorKey(const std::string& group, uint64_t version, size_t index,
                            std::optional<codec::DType> out_dtype);

// Called once the merged tensor's buffer exists and before its bytes are decoded; the
// tensor's `fill` then tells which bytes are final (see TensorFill), and ends with the
// decode's status.
using StartedFn = std::function<void(const MergedTensorPtr& filling)>;

// Reads record `index` of `reader`, merges it into the base in `out_dtype` (nullopt:
// the recorded dtype) and hashes the result. A large tensor is merged in row parts by
// this worker and up to pool-size - 1 helpers. `started`, if given, gets the tensor
// before its decode (to stream its rows as they become final). Returns the complete
// tensor (fill done). Observes deltaserve_decode_seconds and _merge_seconds.
// Errors: those of TaskReader::ReadRecord and codec::MergeTensor (also given to the
// fill's waiters when `started` ran); FailedPrecondition (ServiceContext::CheckBase)
// when a mapped base file changed before or during the merge. Blocking (RocksDB read, decode): call on the
// worker pool only.
absl::StatusOr<MergedTensorPtr> DecodeMergedTensor(const ServiceContext& ctx,
                                                   const storage::TaskReader& reader, size_t index,
                                                   std::optional<codec::DType> out_dtype,
                                                   const StartedFn& started = nullptr);

// Decodes every tensor of the task into the cache and pins the task there. Blocking:
// call on the worker pool (or before serving). Returns the task's pinned bytes.
// ResourceExhausted if pinned tensors would exceed the cache budget; NotFound;
// FailedPrecondition when a mapped base file changed (ServiceContext::CheckBase).
absl::StatusOr<uint64_t> PinTask(const ServiceContext& ctx, const std::string& tenant,
                                 const std::string& task, std::optional<codec::DType> out_dtype);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_MERGED_TENSORS_H_
