#include "codec/internal/ecq_compress.h"

#include "common/status_macros.h"

namespace deltaserve::codec::internal {

absl::Status PlanAndSetEcqPayloads(const std::vector<std::unique_ptr<EcqTensor>>& tensors,
                                   const std::vector<size_t>& ecq_records,
                                   uint64_t header_bytes, const EcqTarget& target,
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
  DS_ASSIGN_OR_RETURN(EcqPlan plan, PlanEcq(views, ecq_weights, overhead, target));
  *payloads = std::move(plan.payloads);
  for (size_t k = 0; k < ecq_records.size(); ++k) {
    (*records)[ecq_records[k]].payload = (*payloads)[k];
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec::internal
