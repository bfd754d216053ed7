// Conversions between codec/storage types and deltaserve.v1 messages.
#ifndef DELTASERVE_SERVER_INTERNAL_CONVERT_H_
#define DELTASERVE_SERVER_INTERNAL_CONVERT_H_

#include <optional>

#include "absl/status/statusor.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

v1::DType ToProtoDType(codec::DType dtype);
// DTYPE_UNSPECIFIED -> nullopt (keep each tensor's recorded dtype). InvalidArgument for
// a number outside the enum.
absl::StatusOr<std::optional<codec::DType>> FromProtoDType(v1::DType dtype);

// Fills `out` from a stored task; per-tensor summaries only if `with_tensors`.
void FillTaskInfo(const storage::TaskInfo& info, bool with_tensors, bool pinned,
                  v1::TaskInfo* out);

// Bytes of all merged tensors of `info` in `out_dtype` (nullopt: recorded dtypes).
uint64_t TaskMergedBytes(const storage::TaskInfo& info, std::optional<codec::DType> out_dtype);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CONVERT_H_
