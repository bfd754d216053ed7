// Parallel pulls: one task fetched over several StreamWeights calls on disjoint tensor
// ranges (StreamWeightsRequest.resume_from_index .. end_index), PullOptions::streams > 1.
#ifndef DELTASERVE_CLIENT_INTERNAL_PULL_RANGES_H_
#define DELTASERVE_CLIENT_INTERNAL_PULL_RANGES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/client.h"
#include "client/internal/weights_stream.h"

namespace deltaserve::client {

// Cuts the tensors [first, bytes.size()) into at most `streams` contiguous non-empty
// ranges [begin, end) of container indices, in order, each of about total / streams
// bytes (`bytes[i]`: output bytes of tensor i): a range ends after the tensor whose
// middle reaches the range's share, or early enough to leave one tensor for each range
// still to come. Empty if first >= bytes.size(). REQUIRES: streams >= 1.
std::vector<std::pair<uint32_t, uint32_t>> CutTensorRanges(absl::Span<const uint64_t> bytes,
                                                           uint32_t first, uint32_t streams);

// GetTask(include_tensors) of `task`; errors prefixed `label`.
absl::StatusOr<v1::TaskInfo> GetTaskTensors(const DeltaClient::Impl& impl,
                                            const std::string& task, const std::string& label);

// The tensors `info` (GetTask with include_tensors) lists, by container index, as a pull
// with `options` receives them (dtype: codec::OutputDType of options.out_dtype). DataLoss
// (prefixed `label`) for an index out of range or listed twice, or an unknown dtype.
absl::StatusOr<std::vector<codec::TensorInfo>> ListedTensors(const v1::TaskInfo& info,
                                                             const PullOptions& options,
                                                             absl::string_view label);

// Pulls `task` over options.streams parallel StreamWeights calls, one per range of
// CutTensorRanges over GetTask(include_tensors)'s sizes, each on a connection of its
// own; range i's verified tensors go to make_sink(i) (called once per range, in order,
// before any call starts). A range that fails with UNAVAILABLE is resumed after its
// last verified tensor (its unfinished tensor dropped from its sink), up to
// options.range_retries times. Errors: the first range's error that is not retried
// (the others are cancelled); ABORTED if a stream serves another version of the task
// than GetTask reported; NotFound for an unknown resume_from name. `listed`: the
// caller's GetTaskTensors answer (else it is fetched here).
absl::StatusOr<PullStats> PullRanges(
    const DeltaClient::Impl& impl, const std::string& task, const PullOptions& options,
    const std::function<absl::StatusOr<WeightsSink*>(size_t range)>& make_sink,
    const v1::TaskInfo* listed = nullptr);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_PULL_RANGES_H_
