#include "codec/internal/ecq_compress.h"

#include <algorithm>
#include <cmath>

#include "codec/delta_codec.h"
#include "codec/internal/ordered_parallel.h"
#include "common/status_macros.h"

namespace deltaserve::codec::internal {
namespace {

// Rate control's trial codings of summaries code every 8th entropy chunk of a tensor
// (EcqTensor::ProbeDeltaBytes): over the stream_bench model's 0.5 G weights the
// extrapolated size is within about 0.1% of the coded one.
constexpr int kEcqProbeChunkStride = 8;

}  // namespace

double EcqStepScale(EcqWeighting w, const TensorView& base, uint64_t delta_size,
                    double delta_energy) {
  double sum = 0.0;
  uint64_t n = 0;
  if (w == EcqWeighting::kDeltaRms) {
    sum = delta_energy;
    n = delta_size;
  } else if (w == EcqWeighting::kWeightRms) {
    n = static_cast<uint64_t>(base.info.num_elements());
    std::vector<float> buf(4096);
    for (uint64_t i = 0; i < n; i += buf.size()) {
      const uint64_t m = std::min<uint64_t>(buf.size(), n - i);
      ToFloat32(base.data.data() + i * DTypeSize(base.info.dtype), base.info.dtype,
                static_cast<int64_t>(m), buf.data());
      for (uint64_t j = 0; j < m; ++j) sum += static_cast<double>(buf[j]) * buf[j];
    }
  }
  const double rms = n ? std::sqrt(sum / static_cast<double>(n)) : 0.0;
  return rms > 0.0 && std::isfinite(rms) ? rms : 1.0;
}

absl::Status PlanAndSetEcqPayloads(const std::vector<std::unique_ptr<EcqTensor>>& tensors,
                                   const std::vector<size_t>& ecq_records, uint64_t header_bytes,
                                   const EcqTarget& target, int threads, const EcqDeltaFn& delta_of,
                                   std::vector<TensorRecord>* records,
                                   std::vector<std::vector<uint8_t>>* payloads) {
  if (tensors.empty()) return absl::OkStatus();
  uint64_t all_weights = 0, ecq_weights = 0;
  for (const TensorRecord& r : *records) all_weights += r.info.num_elements();
  double overhead = 0.0;
  for (size_t i : ecq_records) {
    const TensorRecord& r = (*records)[i];
    ecq_weights += r.info.num_elements();
    overhead += static_cast<double>(SerializedRecordSize(r));  // framing: payload is empty
  }
  overhead += static_cast<double>(header_bytes + kContainerTrailerBytes) *
              static_cast<double>(ecq_weights) / static_cast<double>(all_weights);
  std::vector<const EcqTensor*> views;
  for (const auto& t : tensors) views.push_back(t.get());
  // Summaries: codes (chunk_stride 0) or probes every tensor at `step`, choosing first
  // if *fixed is empty.
  auto code = [&](float step, int chunk_stride, std::vector<EcqTrial>* fixed,
                  EcqPlan* plan) -> absl::Status {
    const size_t n = tensors.size();
    auto step_of = [&](size_t i) { return static_cast<float>(step * tensors[i]->step_scale()); };
    if (fixed->empty()) {
      fixed->resize(n);
      ParallelFor(n, threads, [&](size_t i) { (*fixed)[i] = tensors[i]->Choose(step_of(i)); });
    }
    std::vector<absl::StatusOr<std::vector<uint8_t>>> coded(n);
    std::vector<absl::StatusOr<double>> probed(n);
    std::vector<EcqTrial> trials(n);
    ParallelFor(n, threads, [&](size_t i) {
      // Kept by the worker thread for its next tensor: fresh pages for every tensor
      // cost more system time than the coding (page faults).
      const int64_t cols = tensors[i]->cols();
      if (chunk_stride > 0) {
        probed[i] = tensors[i]->ProbeDeltaBytes(
            [&](int64_t r0, int64_t r1, float* out) {
              return delta_of(i, r0 * cols, (r1 - r0) * cols, out);
            },
            step_of(i), (*fixed)[i], chunk_stride);
        return;
      }
      thread_local std::vector<float> delta;
      delta.resize(static_cast<size_t>(tensors[i]->rows() * cols));
      absl::Status s = delta_of(i, 0, static_cast<int64_t>(delta.size()), delta.data());
      coded[i] = s.ok() ? tensors[i]->EncodeDelta(delta.data(), step_of(i), (*fixed)[i],
                                                  &trials[i])
                        : absl::StatusOr<std::vector<uint8_t>>(s);
    });
    plan->payloads.clear();
    plan->payload_bytes = 0;
    plan->distortion = 0.0;
    double probed_bytes = 0.0;
    for (size_t i = 0; i < n; ++i) {
      if (chunk_stride > 0) {
        if (!probed[i].ok()) return probed[i].status();
        probed_bytes += *probed[i];
        continue;
      }
      if (!coded[i].ok()) return coded[i].status();
      plan->payload_bytes += coded[i]->size();
      plan->distortion += trials[i].distortion;
      plan->payloads.push_back(*std::move(coded[i]));
    }
    if (chunk_stride > 0) plan->payload_bytes = static_cast<uint64_t>(std::llround(probed_bytes));
    return absl::OkStatus();
  };
  EcqEncodeAllFn encode_all, probe_all;  // prepared tensors: PlanEcq's own, no probes
  if (tensors.front()->summary()) {
    encode_all = [&](float step, std::vector<EcqTrial>* fixed, EcqPlan* plan) {
      return code(step, 0, fixed, plan);
    };
    probe_all = [&](float step, std::vector<EcqTrial>* fixed, EcqPlan* plan) {
      return code(step, kEcqProbeChunkStride, fixed, plan);
    };
  }
  DS_ASSIGN_OR_RETURN(
      EcqPlan plan, PlanEcq(views, ecq_weights, overhead, target, threads, encode_all, probe_all));
  *payloads = std::move(plan.payloads);
  for (size_t k = 0; k < ecq_records.size(); ++k) {
    (*records)[ecq_records[k]].payload = (*payloads)[k];
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec::internal
