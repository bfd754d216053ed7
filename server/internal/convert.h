// Conversions from storage types to deltaserve.v1 messages (dtypes: proto/protocol.h).
#ifndef DELTASERVE_SERVER_INTERNAL_CONVERT_H_
#define DELTASERVE_SERVER_INTERNAL_CONVERT_H_

#include <optional>

#include "absl/status/statusor.h"
#include "codec/tensor.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

// Fills `out` from a stored task; per-tensor summaries only if `with_tensors`.
void FillTaskInfo(const storage::TaskInfo& info, bool with_tensors, bool pinned,
                  v1::TaskInfo* out);

// Bytes of all merged tensors of `info` in `out_dtype` (nullopt: recorded dtypes).
uint64_t TaskMergedBytes(const storage::TaskInfo& info, std::optional<codec::DType> out_dtype);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CONVERT_H_
