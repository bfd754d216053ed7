// Rate control for codec v2 (codec/delta_ecq.h): one quantizer step for all the
// tensors of a container, found by bisection, so that the container meets a size or an
// error target. With the total squared error as the distortion, one step everywhere is
// the rate-distortion optimum of entropy-coded uniform quantization (equal slope
// dD/dR = -ln(2) s^2 / 6 in every tensor, band and patch: reverse water-filling, Cover &
// Thomas 2006, Section 10.3.3); coefficients below the water level fall into the dead
// zone and cost a fraction of a bit.
#ifndef DELTASERVE_CODEC_ECQ_ALLOC_H_
#define DELTASERVE_CODEC_ECQ_ALLOC_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/delta_ecq.h"

namespace deltaserve::codec {

// Exactly one of the two targets is used: max_error if > 0, otherwise bits_per_weight.
struct EcqTarget {
  // Average bits per weight over the coded tensors, counting `overhead_bytes` besides
  // the payloads. Must be > 0 when max_error is 0.
  double bits_per_weight = 0.0;
  // Largest relative error sqrt(sum ||d - d_hat||^2 / sum ||d||^2) over the coded
  // tensors (measured in the transform domain, an upper bound of the weight-domain
  // error). The smallest payloads meeting it are chosen.
  double max_error = 0.0;
};

struct EcqPlan {
  float step = 0.0f;
  std::vector<std::vector<uint8_t>> payloads;  // one per tensor, in the given order
  uint64_t payload_bytes = 0;
  double distortion = 0.0, energy = 0.0;  // sums over the tensors
  double bits_per_weight = 0.0;            // (payload_bytes + overhead) * 8 / weights
  // Bits target below what the all-zero payloads take: the plan holds those.
  bool floor_reached = false;
};

// How PlanEcq codes every tensor at a common step (each at step x its step_scale()):
// sets plan->payloads, payload_bytes and distortion (plan->step is set by the caller).
// With an empty *fixed it also fills *fixed with each tensor's choice, which later calls
// keep. Default (null): EcqTensor::Encode of prepared tensors.
using EcqEncodeAllFn =
    std::function<absl::Status(float step, std::vector<EcqTrial>* fixed, EcqPlan* plan)>;

// Plans and encodes `tensors` (not null, each from EcqTensor::Prepare). `weights` is the
// number of weights the bits target is averaged over and `overhead_bytes` the bytes
// counted besides the payloads (record framing and container header share). The bits
// target is met within 0.5% (1% for summaries, EcqTensor::Summarize) where the step's
// granularity allows (measured sizes, not estimates). InvalidArgument for a bad target, no tensors or weights == 0.
// `threads` (>= 1) evaluate and code tensors in parallel; the plan is the same whatever
// their number.
//
// `probe_all` (optional, bits target only) estimates what encode_all would code at a
// step, with the same choices, more cheaply: it sets plan->payload_bytes only (an
// estimate; no payloads) and fills an empty *fixed as encode_all does. Before each
// coding but the last round's, PlanEcq probes the step first and, if the probe misses
// the target by more than the tolerance, corrects the step from the probe instead of
// from a whole coding (a coding of a large model is most of its compress time).
absl::StatusOr<EcqPlan> PlanEcq(absl::Span<const EcqTensor* const> tensors, uint64_t weights,
                                double overhead_bytes, const EcqTarget& target,
                                int threads = 1, const EcqEncodeAllFn& encode_all = nullptr,
                                const EcqEncodeAllFn& probe_all = nullptr);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_ECQ_ALLOC_H_
