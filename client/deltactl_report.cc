// `deltactl inspect` and `deltactl eval`: per-tensor size (and fidelity) report of a
// delta container. Counting rules: client/internal/deltactl_report.h.
#include "client/internal/deltactl_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/internal/container_file.h"
#include "client/internal/deltactl_command.h"
#include "codec/record_checks.h"
#include "common/cli_validators.h"
#include "common/status_macros.h"

namespace deltaserve::client {
namespace {

using codec::Encoding;

std::optional<double> Ratio(double err_sq, double ref_sq) {
  if (ref_sq > 0) return std::sqrt(err_sq / ref_sq);
  if (err_sq == 0) return 0.0;
  return std::nullopt;
}

double Bpw(double bytes, uint64_t weights) { return weights == 0 ? 0 : 8 * bytes / weights; }

// "-" when absent, else the value with `digits` decimals.
std::string Opt(const std::optional<double>& v, int digits) {
  return v ? absl::StrFormat("%.*f", digits, *v) : std::string("-");
}

nlohmann::json JsonOpt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::vector<float> AsFloats(const uint8_t* data, codec::DType dtype, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  codec::ToFloat32(data, dtype, n, out.data());
  return out;
}

// "ecq identity 10, ecq identity + low rank 3" or "dct p32 169": lossy tensors per
// encoding and transform, in order of first appearance. A transform named like its
// encoding (Delta-DCT's dct) is not repeated ("dct dct p32" read as a typo).
std::string TransformCounts(const ContainerReport& report) {
  std::vector<std::pair<std::string, int>> counts;
  for (const auto& r : report.tensors) {
    if (!r.payload) continue;
    codec::PayloadInfo kind = *r.payload;
    std::string label(codec::EncodingName(r.encoding));
    if (kind.transform != label) absl::StrAppend(&label, " ", kind.transform);
    if (kind.patch_size > 0) absl::StrAppend(&label, " p", kind.patch_size);
    if (kind.rank > 0) absl::StrAppend(&label, " + low rank");
    auto it = std::find_if(counts.begin(), counts.end(),
                           [&](const auto& c) { return c.first == label; });
    if (it == counts.end()) {
      counts.emplace_back(std::move(label), 1);
    } else {
      ++it->second;
    }
  }
  std::string out;
  for (const auto& [label, n] : counts) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", label, " ", n);
  }
  return out;
}

}  // namespace

absl::StatusOr<ContainerReport> ReportContainer(const codec::MappedContainer& container) {
  const codec::ContainerReader& reader = container.reader();
  ContainerReport report;
  report.path = container.path();
  report.header = reader.header();
  report.container_bytes = container.bytes().size();
  report.header_bytes = reader.header_bytes().size();
  report.trailer_bytes = reader.trailer_bytes().size();
  for (size_t i = 0; i < reader.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord rec, reader.record(i));
    TensorReport t;
    t.info = rec.info;
    t.encoding = rec.encoding;
    if (rec.encoding != Encoding::kRaw) t.tied_to = rec.base_name;
    t.record_bytes = reader.record_bytes(i).size();
    if (IsLossyEncoding(rec.encoding)) {
      absl::StatusOr<codec::PayloadInfo> info = codec::DescribePayload(rec);
      if (!info.ok()) return common::Annotate(info.status(), absl::StrCat("tensor '", rec.info.name, "'"));
      t.payload = *std::move(info);
    }
    report.tensors.push_back(std::move(t));
  }
  return report;
}

absl::Status EvaluateReport(const codec::ModelReader& base, const codec::ModelReader& finetuned,
                            const codec::ContainerReader& container, ContainerReport* report,
                            const codec::ProgressFn& progress) {
  for (size_t i = 0; i < container.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord rec, container.record(i));
    TensorReport& t = report->tensors.at(i);
    auto ft = finetuned.Get(rec.info.name);
    if (!ft.ok()) {
      return absl::NotFoundError(
          absl::StrCat("tensor '", rec.info.name, "' of the delta is not in the finetuned model"));
    }
    if (ft->info.shape != rec.info.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", rec.info.name, "': finetuned shape ", codec::ShapeString(ft->info.shape),
          ", the delta holds ", codec::ShapeString(rec.info.shape)));
    }
    const int64_t n = rec.info.num_elements();
    std::vector<uint8_t> merged(codec::MergedBytes(rec, rec.info.dtype));
    DS_RETURN_IF_ERROR(codec::MergeTensor(&base, rec, rec.info.dtype, absl::MakeSpan(merged)));
    const auto w_hat = AsFloats(merged.data(), rec.info.dtype, n);
    const auto w = AsFloats(ft->data.data(), ft->info.dtype, n);
    t.evaluated = true;
    t.has_delta = false;
    t.d_sq = t.d_err_sq = t.w_sq = t.w_err_sq = 0;
    for (int64_t j = 0; j < n; ++j) {
      t.w_sq += double{w[j]} * w[j];
      t.w_err_sq += (double{w[j]} - w_hat[j]) * (double{w[j]} - w_hat[j]);
    }
    auto bv = base.Get(rec.base_tensor());
    if (bv.ok() && bv->info.num_elements() <= n) {
      t.has_delta = true;
      const auto b = AsFloats(bv->data.data(), bv->info.dtype, bv->info.num_elements());
      for (size_t j = 0; j < b.size(); ++j) {
        const double d = double{w[j]} - b[j], d_hat = double{w_hat[j]} - b[j];
        t.d_sq += d * d;
        t.d_err_sq += (d - d_hat) * (d - d_hat);
      }
    }
    if (progress) progress(i + 1, container.num_records(), rec.info.name);
  }
  report->evaluated = true;
  return absl::OkStatus();
}

ReportTotals ComputeTotals(const ContainerReport& report) {
  ReportTotals t;
  double d_sq = 0, d_err = 0, w_sq = 0, w_err = 0, dd_sq = 0, dd_err = 0, dw_sq = 0, dw_err = 0;
  double b_d_sq = 0, b_w_sq = 0, bd_d_sq = 0, bd_w_sq = 0;  // base-only error terms
  for (const auto& r : report.tensors) {
    const uint64_t n = r.info.num_elements();
    ++t.tensors;
    t.weights += n;
    if (IsLossyEncoding(r.encoding)) {
      ++t.lossy_tensors;
      t.lossy_weights += n;
      t.lossy_record_bytes += r.record_bytes;
      dd_sq += r.d_sq;
      dd_err += r.d_err_sq;
      dw_sq += r.w_sq;
      dw_err += r.w_err_sq;
    } else if (r.encoding == Encoding::kRaw) {
      ++t.raw_tensors;
    } else {
      ++t.unchanged_tensors;
    }
    if (r.has_delta && r.info.num_elements() > 0) {
      b_d_sq += r.d_sq;
      b_w_sq += r.w_sq;
      if (IsLossyEncoding(r.encoding)) {
        bd_d_sq += r.d_sq;
        bd_w_sq += r.w_sq;
      }
    }
    d_sq += r.d_sq;
    d_err += r.d_err_sq;
    w_sq += r.w_sq;
    w_err += r.w_err_sq;
  }
  const double overhead = report.header_bytes + report.trailer_bytes;
  const double lossy_share =
      t.weights == 0 ? 0 : overhead * static_cast<double>(t.lossy_weights) / t.weights;
  t.bpw_whole = Bpw(report.container_bytes, t.weights);
  t.bpw_lossy = Bpw(t.lossy_record_bytes + lossy_share, t.lossy_weights);
  t.ratio_whole = t.bpw_whole > 0 ? 16 / t.bpw_whole : 0;
  t.ratio_lossy = t.bpw_lossy > 0 ? 16 / t.bpw_lossy : 0;
  if (report.evaluated) {
    t.rel_delta_error = Ratio(d_err, d_sq);
    t.rel_weight_error = Ratio(w_err, w_sq);
    t.rel_weight_error_base_only = Ratio(b_d_sq, b_w_sq);
    if (t.lossy_tensors > 0) {
      t.rel_delta_error_lossy = Ratio(dd_err, dd_sq);
      t.rel_weight_error_lossy = Ratio(dw_err, dw_sq);
      t.rel_weight_error_base_only_lossy = Ratio(bd_d_sq, bd_w_sq);
    }
  }
  return t;
}

void PrintReport(const ContainerReport& report, bool per_tensor, std::FILE* out) {
  const bool ev = report.evaluated;
  if (per_tensor) {
    absl::FPrintF(out, "%-40s %-22s %-4s %-9s %-17s %10s %10s %7s", "tensor", "shape", "type",
                  "encoding", "transform", "weights", "bytes", "bpw");
    if (ev) absl::FPrintF(out, " %10s %10s", "rel_d_err", "rel_w_err");
    absl::FPrintF(out, "\n");
    for (const auto& r : report.tensors) {
      const uint64_t n = r.info.num_elements();
      absl::FPrintF(out, "%-40s %-22s %-4s %-9s %-17s %10d %10d %7.3f", r.info.name,
                    codec::ShapeString(r.info.shape), std::string(codec::DTypeName(r.info.dtype)),
                    std::string(codec::EncodingName(r.encoding)),
                    r.payload ? r.payload->ToString() : std::string("-"), n, r.record_bytes,
                    Bpw(r.record_bytes, n));
      if (ev) {
        absl::FPrintF(out, " %10s %10s",
                      r.has_delta ? Opt(Ratio(r.d_err_sq, r.d_sq), 5) : std::string("-"),
                      Opt(Ratio(r.w_err_sq, r.w_sq), 6));
      }
      absl::FPrintF(out, "\n");
    }
    absl::FPrintF(out, "\n");
  }
  const ReportTotals t = ComputeTotals(report);
  absl::FPrintF(out, "container:   %s, %d bytes (header %d, records %d, trailer %d)\n", report.path,
                report.container_bytes, report.header_bytes,
                report.container_bytes - report.header_bytes - report.trailer_bytes,
                report.trailer_bytes);
  absl::FPrintF(out, "base hash:   %s\n", codec::BaseHashHex(report.header.base_hash));
  std::string meta;
  for (const auto& [k, v] : codec::DisplayedMetadata(report.header.metadata)) {
    absl::StrAppend(&meta, " ", k, "=", v);
  }
  absl::FPrintF(out, "metadata:   %s\n", meta);
  for (const auto& r : report.tensors) {
    if (r.tied_to.empty()) continue;
    absl::FPrintF(out, "tied:        %s -> base %s (%s, %.3f bits/weight)\n", r.info.name,
                  r.tied_to, std::string(codec::EncodingName(r.encoding)),
                  Bpw(r.record_bytes, r.info.num_elements()));
  }
  // The lossy tensors' encoding: "dct" (v1), "ecq" (v2), or "lossy" for a mix or none.
  // (The JSON totals say "_lossy", and keep the "_dct" names scripts read.)
  std::string lossy;
  for (const auto& r : report.tensors) {
    if (!IsLossyEncoding(r.encoding)) continue;
    const std::string name(codec::EncodingName(r.encoding));
    lossy = lossy.empty() || lossy == name ? name : "lossy";
  }
  if (lossy.empty()) lossy = "lossy";
  absl::FPrintF(out, "tensors:     %d (%s %d, raw %d, unchanged %d)\n", t.tensors, lossy,
                t.lossy_tensors, t.raw_tensors, t.unchanged_tensors);
  if (t.lossy_tensors > 0) absl::FPrintF(out, "transforms:  %s\n", TransformCounts(report));
  absl::FPrintF(out, "weights:     %d (%s-coded %d)\n", t.weights, lossy, t.lossy_weights);
  absl::FPrintF(out,
                "bits/weight: %s-coded %.4f (ratio vs 16-bit delta %.2fx), "
                "whole model %.4f (%.2fx)\n",
                lossy, t.bpw_lossy, t.ratio_lossy, t.bpw_whole, t.ratio_whole);
  if (ev) {
    absl::FPrintF(out, "rel. delta error  ||d - d_hat|| / ||d||:       %s-coded %s, all %s\n",
                  lossy, Opt(t.rel_delta_error_lossy, 5), Opt(t.rel_delta_error, 5));
    absl::FPrintF(out, "rel. weight error ||W_ft - W_hat|| / ||W_ft||: %s-coded %s, all %s\n",
                  lossy, Opt(t.rel_weight_error_lossy, 6), Opt(t.rel_weight_error, 6));
    absl::FPrintF(
        out, "  (base alone, no delta: ||W_ft - W_base|| / ||W_ft||: %s-coded %s, all %s)\n",
        lossy, Opt(t.rel_weight_error_base_only_lossy, 6),
        Opt(t.rel_weight_error_base_only, 6));
  }
}

nlohmann::json ReportJson(const ContainerReport& report) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& r : report.tensors) {
    const uint64_t n = r.info.num_elements();
    nlohmann::json j = {{"name", r.info.name},
                        {"shape", r.info.shape},
                        {"dtype", std::string(codec::DTypeName(r.info.dtype))},
                        {"encoding", std::string(codec::EncodingName(r.encoding))},
                        {"weights", n},
                        {"bytes", r.record_bytes},
                        {"bits_per_weight", Bpw(r.record_bytes, n)}};
    if (!r.tied_to.empty()) j["tied_to"] = r.tied_to;
    if (r.payload) {
      j["transform"] = r.payload->transform;
      j["patch_size"] = r.payload->patch_size;
      j["rank"] = r.payload->rank;
    }
    if (report.evaluated) {
      j["rel_delta_error"] =
          r.has_delta ? JsonOpt(Ratio(r.d_err_sq, r.d_sq)) : nlohmann::json(nullptr);
      j["rel_weight_error"] = JsonOpt(Ratio(r.w_err_sq, r.w_sq));
    }
    tensors.push_back(std::move(j));
  }
  const ReportTotals t = ComputeTotals(report);
  nlohmann::json totals = {
      {"tensors", t.tensors},
      {"lossy_tensors", t.lossy_tensors},
      {"raw_tensors", t.raw_tensors},
      {"unchanged_tensors", t.unchanged_tensors},
      {"weights", t.weights},
      {"lossy_weights", t.lossy_weights},
      {"container_bytes", report.container_bytes},
      {"header_bytes", report.header_bytes},
      {"trailer_bytes", report.trailer_bytes},
      {"lossy_record_bytes", t.lossy_record_bytes},
      {"bits_per_weight_lossy", t.bpw_lossy},
      {"bits_per_weight_whole", t.bpw_whole},
      {"ratio_vs_16bit_lossy", t.ratio_lossy},
      {"ratio_vs_16bit_whole", t.ratio_whole},
  };
  if (report.evaluated) {
    totals["rel_delta_error_lossy"] = JsonOpt(t.rel_delta_error_lossy);
    totals["rel_delta_error"] = JsonOpt(t.rel_delta_error);
    totals["rel_weight_error_lossy"] = JsonOpt(t.rel_weight_error_lossy);
    totals["rel_weight_error"] = JsonOpt(t.rel_weight_error);
    totals["rel_weight_error_base_only_lossy"] = JsonOpt(t.rel_weight_error_base_only_lossy);
    totals["rel_weight_error_base_only"] = JsonOpt(t.rel_weight_error_base_only);
  }
  // The names before codec v2 (deltactl_report.h), same values.
  for (const char* key : {"lossy_tensors", "lossy_weights", "lossy_record_bytes",
                          "bits_per_weight_lossy", "ratio_vs_16bit_lossy", "rel_delta_error_lossy",
                          "rel_weight_error_lossy", "rel_weight_error_base_only_lossy"}) {
    std::string old = key;
    if (!totals.contains(old)) continue;
    old.replace(old.find("lossy"), 5, "dct");
    totals[old] = totals[key];
  }
  return {{"container", report.path},
          {"base_hash", codec::BaseHashHex(report.header.base_hash)},
          {"format_version", report.header.format_version},
          {"metadata", report.header.metadata},
          {"tensors", std::move(tensors)},
          {"totals", std::move(totals)}};
}

namespace {

struct InspectOptions {
  std::string delta;
  std::string base;  // optional: check every record against it
  bool json = false;
};

struct EvalOptions {
  std::string base, finetuned, delta;
  bool json = false;
  bool force = false;
};

absl::Status Emit(const ContainerReport& report, bool json) {
  if (json) {
    return PrintJson(ReportJson(report));
  }
  PrintReport(report, /*per_tensor=*/true, stdout);
  return absl::OkStatus();
}

// With --base: every record that does not fit its base tensor (codec/record_checks.h),
// one line each on stderr, then InvalidArgument counting them: a server refuses such a
// container at push, and one already stored at pull.
absl::Status CheckAgainstBase(const codec::ContainerReader& reader, const std::string& base_path) {
  DS_ASSIGN_OR_RETURN(auto base, codec::ModelReader::Open(base_path));
  size_t bad = 0;
  std::string first;
  for (size_t i = 0; i < reader.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord rec, reader.record(i));
    absl::Status s = codec::CheckRecordFitsBase(rec, base.get());
    if (s.ok()) continue;
    if (bad++ == 0) first = std::string(s.message());
    absl::FPrintF(stderr, "deltactl: warning: record %d does not fit the base: %s\n", i,
                  s.message());
  }
  if (bad == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      bad, " of ", reader.num_records(), " records do not fit base ", base_path, " (first: ",
      first, "); a server refuses this container"));
}

absl::Status RunInspect(const InspectOptions& o) {
  DS_ASSIGN_OR_RETURN(auto container, OpenContainerFile(o.delta));
  DS_ASSIGN_OR_RETURN(auto report, ReportContainer(*container));
  DS_RETURN_IF_ERROR(Emit(report, o.json));
  return o.base.empty() ? absl::OkStatus() : CheckAgainstBase(container->reader(), o.base);
}

absl::Status RunEval(const EvalOptions& o) {
  DS_ASSIGN_OR_RETURN(auto container, OpenContainerFile(o.delta));
  DS_ASSIGN_OR_RETURN(auto base, codec::ModelReader::Open(o.base));
  DS_ASSIGN_OR_RETURN(auto finetuned, codec::ModelReader::Open(o.finetuned));
  DS_RETURN_IF_ERROR(codec::CheckBaseHash(*base, container->reader().header(), o.force));
  DS_ASSIGN_OR_RETURN(auto report, ReportContainer(*container));
  DS_RETURN_IF_ERROR(
      EvaluateReport(*base, *finetuned, container->reader(), &report, StderrProgress("eval")));
  return Emit(report, o.json);
}

}  // namespace

void AddReportCommands(CLI::App& app, CommandAction* action) {
  auto* inspect =
      app.add_subcommand("inspect",
                         "Per-tensor table of a delta container: encoding, bytes, bits per weight "
                         "(every container byte counted), and totals");
  auto io = std::make_shared<InspectOptions>();
  inspect->add_option("delta", io->delta, "Delta container (.dds)")->required();
  common::AddBooleanFlag(inspect, "--json", io->json, "Print one JSON object instead of the table");
  inspect->add_option("--base", io->base,
                      "Base model: also check every record against the base tensor it merges "
                      "into (dtype, shape); exit 1 naming each record that does not fit");
  inspect->callback([io, action] { *action = [io] { return RunInspect(*io); }; });

  auto* eval = app.add_subcommand(
      "eval",
      "Like inspect, plus relative delta error ||d - d_hat|| / ||d|| and relative "
      "weight error ||W_ft - W_hat|| / ||W_ft|| per tensor and in total");
  auto eo = std::make_shared<EvalOptions>();
  eval->add_option("--base", eo->base, "Base model (.safetensors, index or directory)")->required();
  eval->add_option("--finetuned", eo->finetuned, "Finetuned model the delta was made from")
      ->required();
  eval->add_option("--delta", eo->delta, "Delta container (.dds)")->required();
  common::AddBooleanFlag(eval, "--json", eo->json, "Print one JSON object instead of the table");
  common::AddBooleanFlag(eval, "--force", eo->force, "Evaluate even if the base hash differs");
  eval->callback([eo, action] { *action = [eo] { return RunEval(*eo); }; });
}

}  // namespace deltaserve::client
