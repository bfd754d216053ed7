// Size and fidelity report of a delta container, printed by `deltactl inspect`,
// `deltactl eval` and after `deltactl compress`.
//
// Bits per weight are counted honestly: every byte of the container file (header with
// its metadata, each record's name, shapes, parameters, payload and checksum, and the
// trailer) is divided over weights:
//   whole model   = 8 x container bytes / weights of every tensor in the container;
//   lossy         = 8 x (record bytes of the lossy tensors, Delta-DCT or codec v2, + their
//                   share of the header and trailer, in proportion to their weights) /
//                   their weights.
// (A lossy record of an embedding with added rows includes those raw rows and counts
// their weights.) JSON totals name these `*_lossy`; the same values are also under the
// older names `*_dct` (lossy_tensors, bits_per_weight_dct, ...) for scripts written before
// codec v2. Compression ratio = 16 / bits per weight, i.e. against a 16-bit delta.
// Relative errors (eval): delta ||d - d_hat|| / ||d|| with d = W_ft - W_base over the
// base-shaped part (tensors without a base have none); weight ||W_ft - W_hat|| / ||W_ft||
// with W_hat what `deltactl decompress` writes (the recorded dtype). Totals are the
// same ratios over the concatenation of the tensors concerned.
#ifndef DELTASERVE_CLIENT_INTERNAL_DELTACTL_REPORT_H_
#define DELTASERVE_CLIENT_INTERNAL_DELTACTL_REPORT_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/payload_info.h"
#include "codec/safetensors.h"
#include "nlohmann/json.hpp"

namespace deltaserve::client {

struct TensorReport {
  codec::TensorInfo info;
  codec::Encoding encoding = codec::Encoding::kRaw;
  std::string tied_to;  // base tensor of another name it merges into (a tie), or ""
  // Lossy records: transform, DCT patch and low-rank factors (codec/payload_info.h).
  std::optional<codec::PayloadInfo> payload;
  uint64_t record_bytes = 0;
  // Filled by EvaluateReport: sums of squares, in double.
  bool evaluated = false;
  bool has_delta = false;  // a base tensor exists, so d is defined
  double d_sq = 0, d_err_sq = 0, w_sq = 0, w_err_sq = 0;
};

struct ContainerReport {
  std::string path;
  codec::ContainerHeader header;
  uint64_t container_bytes = 0, header_bytes = 0, trailer_bytes = 0;
  std::vector<TensorReport> tensors;
  bool evaluated = false;
};

struct ReportTotals {
  uint64_t tensors = 0, lossy_tensors = 0, raw_tensors = 0, unchanged_tensors = 0;
  uint64_t weights = 0, lossy_weights = 0, lossy_record_bytes = 0;
  double bpw_whole = 0, bpw_lossy = 0;      // 0 when there are no such weights
  double ratio_whole = 0, ratio_lossy = 0;  // 16 / bpw
  // Evaluated reports only; nullopt where undefined (no delta / no weights).
  std::optional<double> rel_delta_error, rel_delta_error_lossy;
  std::optional<double> rel_weight_error, rel_weight_error_lossy;
  // ||W_ft - W_base|| / ||W_ft|| (no delta applied at all), for scale; over the tensors
  // with a base of the same shape.
  std::optional<double> rel_weight_error_base_only, rel_weight_error_base_only_lossy;
};

// Sizes and payload transforms per record; verifies every record's checksum and each
// lossy payload's header (DataLoss naming the tensor).
absl::StatusOr<ContainerReport> ReportContainer(const codec::MappedContainer& container);

// Decodes every record against `base` and compares with `finetuned`. NotFound naming a
// tensor of the container missing from `finetuned`; MergeTensor's errors otherwise.
absl::Status EvaluateReport(const codec::ModelReader& base, const codec::ModelReader& finetuned,
                            const codec::ContainerReader& container, ContainerReport* report,
                            const codec::ProgressFn& progress);

ReportTotals ComputeTotals(const ContainerReport& report);

// Human-readable report: the per-tensor table (if `per_tensor`) then the totals.
void PrintReport(const ContainerReport& report, bool per_tensor, std::FILE* out);
// The same as one JSON object {"container", "base_hash", "metadata", "tensors", "totals"}.
nlohmann::json ReportJson(const ContainerReport& report);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_DELTACTL_REPORT_H_
