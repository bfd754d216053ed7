// CompressModel's step for codec v2 (LossyCodec::kEcq): rate control over every lossy
// tensor of the container at once (codec/ecq_alloc.h), then the payloads into the
// records.
#ifndef DELTASERVE_CODEC_INTERNAL_ECQ_COMPRESS_H_
#define DELTASERVE_CODEC_INTERNAL_ECQ_COMPRESS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "codec/container.h"
#include "codec/delta_ecq.h"
#include "codec/ecq_alloc.h"

namespace deltaserve::codec {
enum class EcqWeighting : uint8_t;
}  // namespace deltaserve::codec

namespace deltaserve::codec::internal {

// The step multiplier of a tensor under `w` (codec/delta_codec.h, EcqWeighting): 1, the
// RMS of `base`, or the RMS of its delta of `delta_size` values whose sum of squares is
// `delta_energy` (EcqTensor::energy()); 1 when that RMS is 0 or not finite.
double EcqStepScale(EcqWeighting w, const TensorView& base, uint64_t delta_size,
                    double delta_energy);

// Bytes of a container's trailer (FORMAT.md, "Trailer").
inline constexpr uint64_t kContainerTrailerBytes = 24;

// Recomputes elements [begin, begin + count) of the delta of the k-th ecq tensor (its
// index in `tensors`; row-major) into delta[0, count).
using EcqDeltaFn =
    std::function<absl::Status(size_t k, int64_t begin, int64_t count, float* delta)>;

// `records` are all the container's records, in order; records[ecq_records[i]] is the
// kEcq record of tensors[i], with an empty payload. Counts, as `deltactl inspect` does
// for lossy tensors, their record framing plus their weight share of the header
// (`header_bytes`) and trailer besides the payloads; plans them to `target`; stores the
// payloads in `payloads` and points the records at them, using `threads` threads.
// Summaries (EcqTensor::Summarize) are coded from their deltas, which `delta_of`
// recomputes (one per thread at a time; rate control's probes only the rows they code); each choice is made by EcqTensor::Choose.
// Errors: PlanEcq's, delta_of's.
absl::Status PlanAndSetEcqPayloads(const std::vector<std::unique_ptr<EcqTensor>>& tensors,
                                   const std::vector<size_t>& ecq_records,
                                   uint64_t header_bytes, const EcqTarget& target, int threads,
                                   const EcqDeltaFn& delta_of,
                                   std::vector<TensorRecord>* records,
                                   std::vector<std::vector<uint8_t>>* payloads);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_ECQ_COMPRESS_H_
