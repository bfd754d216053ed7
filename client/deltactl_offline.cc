// `deltactl convert`, `deltactl compress` and `deltactl decompress`: the offline
// subcommands that need no server.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "client/internal/container_file.h"
#include "client/internal/deltactl_command.h"
#include "client/internal/deltactl_report.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "codec/tfjs.h"
#include "common/cli_validators.h"
#include "common/file.h"
#include "common/plural.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"

namespace deltaserve::client {
namespace {

struct ConvertOptions {
  std::string in, out;
  bool verbose = false;  // list every skipped weight
};

// How many skipped names `convert` prints without --verbose.
constexpr size_t kSkippedShown = 3;

// Largest --bits: a lossy code above 16 bits per weight is larger than the f16 delta.
constexpr double kMaxBitsPerWeight = 16;

struct CompressCliOptions {
  std::string base, finetuned, out;
  int patch = codec::DctParams{}.patch_size;
  std::string schedule = codec::DctParams{}.schedule.ToString();
  std::string quantizer = codec::QuantizerName(codec::DctParams{}.quantizer);
  bool separate_dc = codec::DctParams{}.separate_dc;
  int64_t min_dct_elements = codec::CompressOptions{}.min_dct_elements;
  std::vector<std::string> rules;
  bool allow_missing = false, allow_extra = false, allow_nonfinite = false, no_tie = false;
  bool allow_dtype_change = false;
  double max_relative_delta = codec::CompressOptions{}.max_relative_delta;
  int threads = codec::CompressOptions{}.threads;
  // "dct" or "ecq"; empty: dct if a Delta-DCT option (--schedule, --quantizer,
  // --separate-dc) is given, else ecq (codec v2 at 1 bit per weight: README, "Codec v2").
  std::string codec;
  bool dct_option_given = false;  // --schedule, --quantizer or --separate-dc
  // ecq targets, when given (0 is an error, not "unset").
  std::optional<double> bits;       // bits per weight of the lossy tensors
  std::optional<double> max_error;  // relative delta error
  std::string ecq_weighting = codec::EcqWeightingName(codec::CompressOptions{}.ecq_weighting);
  bool no_low_rank = false;  // ecq: never low-rank factors + residual
  double gain_weight = codec::EcqOptions{}.gain_weight;
};

struct DecompressCliOptions {
  std::string base, delta, out, dtype;
  std::string out_dir;  // Hugging Face checkpoint directory instead of --out
  uint64_t shard_bytes = kDefaultShardBytes;
  SideFileFlags side_files;  // written beside the shards of --out-dir
  bool force = false;
};

// A TF.js graph model is a model.json that is not a safetensors index.
bool IsTfjsModelJson(const std::string& path) {
  return absl::EndsWith(path, ".json") && !absl::EndsWith(path, ".safetensors.index.json");
}

absl::Status RunConvert(const ConvertOptions& o) {
  std::vector<codec::TensorView> views;
  std::map<std::string, std::string> metadata;
  codec::TfjsModel tfjs;
  std::unique_ptr<codec::ModelReader> reader;
  std::vector<std::string> skipped;  // weights of a TF.js model that are not float
  if (IsTfjsModelJson(o.in)) {
    DS_ASSIGN_OR_RETURN(tfjs, codec::ImportTfjsGraphModel(o.in));
    for (const auto& t : tfjs.tensors) views.push_back(t.view());
    metadata = tfjs.metadata;
    if (auto it = metadata.find("skipped"); it != metadata.end()) {
      skipped = absl::StrSplit(it->second, ',');
    }
  } else {
    DS_ASSIGN_OR_RETURN(reader, codec::ModelReader::Open(o.in));
    for (const auto& info : reader->tensors()) {
      DS_ASSIGN_OR_RETURN(auto view, reader->Get(info.name));
      views.push_back(view);
    }
    metadata = reader->metadata();
  }
  DS_RETURN_IF_ERROR(codec::WriteSafetensors(o.out, views, metadata));
  int64_t params = 0;
  uint64_t bytes = 0;
  for (const auto& v : views) {
    params += v.info.num_elements();
    bytes += v.data.size();
  }
  absl::PrintF("converted %s -> %s: %s, %s, %s of weights\n", o.in, o.out,
               common::Counted(views.size(), "tensor"), common::Counted(params, "parameter"),
               common::Counted(bytes, "byte"));
  // A model has tens of such weights (int32 shape constants) with long names: all of
  // them on one line made ~3000 characters. The count, then a few names a line each.
  if (!skipped.empty()) {
    const bool all = o.verbose || skipped.size() <= kSkippedShown;
    const size_t shown = all ? skipped.size() : kSkippedShown;
    absl::PrintF("skipped %d weight%s that %s not float:\n", skipped.size(),
                 skipped.size() == 1 ? "" : "s", skipped.size() == 1 ? "is" : "are");
    for (size_t i = 0; i < shown; ++i) absl::PrintF("  %s\n", skipped[i]);
    if (!all) {
      absl::PrintF("  ... and %d more (--verbose lists them all)\n", skipped.size() - shown);
    }
  }
  return absl::OkStatus();
}

// CompressOptions::Validate names the options' fields ("patch_size 1 outside [2, 64]");
// the user typed flags: a message that starts with a field's name starts with its flag
// instead ("--patch 1 outside [2, 64]").
absl::Status InFlagTerms(absl::Status s) {
  static constexpr std::pair<const char*, const char*> kFlags[] = {
      {"ecq patch_size", "--patch"},
      {"patch_size", "--patch"},
      {"ecq gain_weight", "--ecq-gain-weight"},
      {"max_relative_delta", "--max-relative-delta"},
      {"min_dct_elements", "--min-dct-elements"},
      {"threads", "--threads"}};
  for (const auto& [field, flag] : kFlags) {
    if (absl::StartsWith(s.message(), absl::StrCat(field, " "))) {
      return absl::Status(s.code(), absl::StrCat(flag, s.message().substr(strlen(field))));
    }
  }
  return s;
}

absl::StatusOr<codec::CompressOptions> ToCompressOptions(const CompressCliOptions& o) {
  codec::CompressOptions c;
  const bool bits_given = o.bits.has_value(), error_given = o.max_error.has_value();
  if (bits_given && !(*o.bits > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--bits must be > 0, got ", *o.bits));
  }
  if (error_given && !(*o.max_error > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-error must be > 0, got ", *o.max_error));
  }
  const bool ecq_target = bits_given || error_given;
  if (!o.codec.empty()) {
    DS_ASSIGN_OR_RETURN(c.codec, common::Annotate(codec::ParseLossyCodec(o.codec), "--codec"));
  } else {
    c.codec = o.dct_option_given && !ecq_target ? codec::LossyCodec::kDct
                                                : codec::LossyCodec::kEcq;
  }
  if (ecq_target && o.dct_option_given && o.codec.empty()) {
    return absl::InvalidArgumentError(
        "--schedule, --quantizer and --separate-dc are Delta-DCT options (--codec dct); "
        "--bits and --max-error are codec v2's");
  }
  if (ecq_target && c.codec != codec::LossyCodec::kEcq) {
    return absl::InvalidArgumentError("--bits and --max-error need --codec ecq");
  }
  if (bits_given && error_given) {
    return absl::InvalidArgumentError("give at most one of --bits and --max-error");
  }
  if (bits_given) c.ecq_target = {*o.bits, 0.0};
  if (error_given) c.ecq_target = {0.0, *o.max_error};
  c.ecq.patch_size = o.patch;
  c.ecq.try_low_rank = !o.no_low_rank;
  c.ecq.gain_weight = o.gain_weight;
  DS_ASSIGN_OR_RETURN(c.ecq_weighting,
                      common::Annotate(codec::ParseEcqWeighting(o.ecq_weighting), "--ecq-weighting"));
  c.dct.patch_size = o.patch;
  DS_ASSIGN_OR_RETURN(c.dct.schedule, common::Annotate(codec::BitSchedule::Parse(o.schedule), "--schedule"));
  DS_ASSIGN_OR_RETURN(c.dct.quantizer, common::Annotate(codec::ParseQuantizer(o.quantizer), "--quantizer"));
  c.dct.separate_dc = o.separate_dc;
  c.min_dct_elements = o.min_dct_elements;
  for (const auto& text : o.rules) {
    DS_ASSIGN_OR_RETURN(auto rule, common::Annotate(codec::EncodingRule::Parse(text), "--rule"));
    c.rules.push_back(std::move(rule));
  }
  c.allow_missing = o.allow_missing;
  c.allow_extra = o.allow_extra;
  c.allow_nonfinite = o.allow_nonfinite;
  c.allow_dtype_change = o.allow_dtype_change;
  c.max_relative_delta = o.max_relative_delta;
  c.tie_embeddings = !o.no_tie;
  c.threads = o.threads;
  DS_RETURN_IF_ERROR(InFlagTerms(c.Validate()));
  return c;
}

// A target the rate control could not reach (below the container's fixed bytes, above
// what the finest step spends): what was written instead, so that it is not taken for
// the target. PlanEcq meets a reachable bits target within 1%.
void WarnUnmetBitsTarget(const codec::CompressOptions& options, const ContainerReport& report) {
  const double target = options.ecq_target.bits_per_weight;
  const ReportTotals totals = ComputeTotals(report);
  if (options.codec != codec::LossyCodec::kEcq || options.ecq_target.max_error > 0 ||
      !(target > 0) || totals.lossy_weights == 0) {
    return;
  }
  const double got = totals.bpw_lossy;
  if (std::fabs(got - target) <= 0.01 * target) return;
  absl::FPrintF(stderr,
                "warning: --bits %g not met: the ecq-coded tensors take %.4f bits/weight, "
                "the nearest this model allows (%s)\n",
                target, got,
                got > target ? "its names, shapes and headers alone take about that; the "
                               "deltas are coded at the coarsest step"
                             : "every coefficient is coded at the finest step");
}

// A container larger than the 16-bit delta it codes: written, as asked, but said, since
// compressing was the point, with what makes it large. Either the lossy code (a
// --max-error or --bits so fine that the code, its headers and factors cost more than
// the delta; a finer --schedule for dct), which those flags shrink, or tensors stored
// raw (non-finite values, dtype changes, one-sided or small tensors, --rule raw), which
// no codec flag shrinks.
void WarnLargerThanTheDelta(const codec::CompressOptions& options, const ContainerReport& report) {
  const ReportTotals totals = ComputeTotals(report);
  if (totals.weights == 0 || !(totals.ratio_whole < 1.0)) return;
  uint64_t raw_bytes = 0;
  for (const TensorReport& t : report.tensors) {
    if (t.encoding == codec::Encoding::kRaw) raw_bytes += t.record_bytes;
  }
  std::string why;
  if (totals.lossy_record_bytes >= raw_bytes) {
    why = options.codec == codec::LossyCodec::kEcq
              ? "a larger --max-error or a smaller --bits gives a smaller container"
              : "a --schedule of fewer bits per weight gives a smaller container";
  } else {
    why = absl::StrFormat(
        "%d tensor%s stored raw (lossless) take %d of its %d bytes, which --bits, "
        "--max-error and --schedule do not shrink (`deltactl inspect` lists each tensor's "
        "encoding and bytes)",
        totals.raw_tensors, totals.raw_tensors == 1 ? "" : "s", raw_bytes,
        report.container_bytes);
  }
  absl::FPrintF(stderr,
                "warning: the container takes %.4f bits/weight, more than the 16-bit delta "
                "itself (ratio %.2fx): %s\n",
                totals.bpw_whole, totals.ratio_whole, why);
}

// CompressModel ends a refusal with the options that accept each kind of refused tensor,
// by field ("CompressOptions::allow_nonfinite stores ..."); the user typed flags.
absl::StatusOr<codec::CompressStats> RefusalInFlagTerms(
    absl::StatusOr<codec::CompressStats> stats) {
  if (stats.ok()) return stats;
  static constexpr std::pair<const char*, const char*> kFlags[] = {
      {"CompressOptions::allow_nonfinite", "--allow-nonfinite"},
      {"CompressOptions::allow_dtype_change", "--allow-dtype-change"},
      {"CompressOptions::max_relative_delta", "--max-relative-delta"}};
  std::string message(stats.status().message());
  for (const auto& [field, flag] : kFlags) {
    message = absl::StrReplaceAll(message, {{field, flag}});
  }
  return absl::Status(stats.status().code(), message);
}

absl::Status RunCompress(const CompressCliOptions& o, const codec::CompressOptions& options) {
  // Before the encode (minutes on a large model), not at the final rename.
  DS_RETURN_IF_ERROR(common::CheckOutputFilePath(o.out, "--out is the container file to write"));
  DS_ASSIGN_OR_RETURN(auto base, codec::ModelReader::Open(o.base));
  DS_ASSIGN_OR_RETURN(auto finetuned, codec::ModelReader::Open(o.finetuned));
  DS_ASSIGN_OR_RETURN(const codec::CompressStats stats,
                      RefusalInFlagTerms(codec::CompressModel(*base, *finetuned, options, o.out,
                                                              StderrProgress("compress"))));
  for (const std::string& w : stats.warnings) absl::FPrintF(stderr, "warning: %s\n", w);
  DS_ASSIGN_OR_RETURN(auto container, codec::MappedContainer::Open(o.out));
  DS_ASSIGN_OR_RETURN(auto report, ReportContainer(*container));
  PrintReport(report, /*per_tensor=*/false, stdout);
  WarnUnmetBitsTarget(options, report);
  WarnLargerThanTheDelta(options, report);
  return absl::OkStatus();
}

// Writes the merged model file `merged` as a sharded checkpoint directory, tensors in
// container order (as `pull --out-dir` writes them), with the file's metadata.
absl::Status WriteCheckpointDir(const std::string& merged, const codec::ContainerReader& container,
                                const std::string& dir, uint64_t shard_bytes) {
  DS_ASSIGN_OR_RETURN(auto model, codec::ModelReader::Open(merged));
  std::vector<codec::TensorView> views;
  for (size_t i = 0; i < container.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord record, container.record(i));
    DS_ASSIGN_OR_RETURN(codec::TensorView view, model->Get(record.info.name));
    views.push_back(view);
  }
  return codec::WriteShardedSafetensors(dir, views, model->metadata(), shard_bytes);
}

absl::Status RunDecompress(const DecompressCliOptions& o) {
  codec::DecompressOptions options;
  options.force = o.force;
  DS_ASSIGN_OR_RETURN(options.out_dtype, ParseDTypeOption(o.dtype));
  if (!o.out.empty()) {
    DS_RETURN_IF_ERROR(
        common::CheckOutputFilePath(o.out, "a checkpoint directory is written by --out-dir DIR"));
  }
  DS_ASSIGN_OR_RETURN(std::vector<SideFileUpload> side_files, ReadSideFileFlags(o.side_files));
  DS_ASSIGN_OR_RETURN(auto container, OpenContainerFile(o.delta));
  DS_ASSIGN_OR_RETURN(auto base, codec::ModelReader::Open(o.base));
  // A directory is written from one merged file made beside the shards (then removed),
  // so that memory stays at one tensor, as for --out.
  const std::string out =
      o.out.empty() ? (std::filesystem::path(o.out_dir) / ".decompress.safetensors").string()
                    : o.out;
  // A failed or interrupted decompress leaves no directory of its own making behind.
  std::unique_ptr<common::ScopedOutputDir> out_dir;
  if (!o.out_dir.empty()) {
    DS_ASSIGN_OR_RETURN(out_dir, common::ScopedOutputDir::Create(o.out_dir));
  }
  codec::DecompressStats stats;
  DS_RETURN_IF_ERROR(codec::DecompressModel(*base, container->reader(), options, out,
                                            StderrProgress("decompress"), &stats));
  for (const auto& [name, count] : stats.saturated_tensors) {
    absl::FPrintF(stderr,
                  "warning: tensor '%s': %d values beyond the output dtype's range, saturated "
                  "to its largest finite value\n",
                  name, count);
  }
  if (!o.out_dir.empty()) {
    absl::Status sharded = WriteCheckpointDir(out, container->reader(), o.out_dir, o.shard_bytes);
    std::filesystem::remove(out);
    DS_RETURN_IF_ERROR(sharded);
    DS_RETURN_IF_ERROR(WriteSideFilesToDir(side_files, o.out_dir));
    out_dir->Keep();
  }
  absl::PrintF("decompressed %s + %s -> %s (%s)\n", o.base, o.delta,
               o.out.empty() ? o.out_dir : o.out,
               common::Counted(container->reader().num_records(), "tensor"));
  return absl::OkStatus();
}

}  // namespace

void AddOfflineCommands(CLI::App& app, CommandAction* action) {
  auto* convert =
      app.add_subcommand("convert",
                         "Convert a TF.js graph model (model.json + weight files) or a safetensors "
                         "model (file, index or directory) to one .safetensors file");
  auto co = std::make_shared<ConvertOptions>();
  convert->add_option("--in", co->in, "model.json, .safetensors, index .json or directory")
      ->required();
  convert->add_option("--out", co->out, "Output .safetensors file")->required();
  common::AddBooleanFlag(convert, "--verbose", co->verbose,
                         "List every skipped (not float) weight");
  convert->callback([co, action] { *action = [co] { return RunConvert(*co); }; });

  auto* compress =
      app.add_subcommand("compress",
                         "Compress finetuned - base into a delta container (.dds; codec v2 at 1 "
                         "bit/weight unless --codec dct); prints the size report");
  auto cc = std::make_shared<CompressCliOptions>();
  compress->add_option("--base", cc->base, "Base model (.safetensors, index or directory)")
      ->required();
  compress->add_option("--finetuned", cc->finetuned, "Finetuned model")->required();
  compress->add_option("--out", cc->out, "Output delta container (.dds)")->required();
  compress->add_option("--codec", cc->codec,
                       "Lossy codec: ecq (v2: entropy-coded, rate-controlled; default, at 1 "
                       "bit/weight) or dct (Delta-DCT, fixed-rate schedule; implied by "
                       "--schedule, --quantizer or --separate-dc)");
  compress
      ->add_option_function<double>(
          "--bits", [cc](const double& v) { cc->bits = v; },
          "ecq: average bits per weight of the lossy tensors, every container byte counted, "
          "in (0, 16] (implies --codec ecq)")
      ->check(common::NumberInValidator("bits per weight", 0, true, kMaxBitsPerWeight, false,
                                        "above 16 a lossy code costs more than the 16-bit "
                                        "delta; --rule GLOB=raw stores tensors exactly"));
  compress
      ->add_option_function<double>(
          "--max-error", [cc](const double& v) { cc->max_error = v; },
          "ecq: smallest container whose relative delta error is <= this, in (0, 1) (implies "
          "--codec ecq)")
      ->check(common::NumberInValidator("a relative delta error", 0, true, 1, true,
                                        "an empty delta already has error 1"));
  compress
      ->add_option("--ecq-weighting", cc->ecq_weighting,
                   "ecq: per-tensor step scale: mse (one step), weight (x RMS of the base "
                   "tensor), delta (x RMS of the delta)")
      ->capture_default_str();
  common::AddBooleanFlag(compress, "--no-low-rank", cc->no_low_rank,
                         "ecq: code every tensor as DCT or identity only, never as low-rank "
                         "factors + residual");
  compress
      ->add_option("--ecq-gain-weight", cc->gain_weight,
                   "ecq: weight >= 1 of the error along the delta against the error across "
                   "it; sets the reconstruction gain (1: least squares, which shrinks the "
                   "delta)")
      ->check(common::PlainNumberValidator())
      ->capture_default_str();
  compress->add_option("--patch", cc->patch, "DCT patch edge p, in weights [2, 64]")
      ->check(common::WholeNumberValidator("a patch edge", 0, INT_MAX))
      ->capture_default_str();
  compress
      ->add_option("--schedule", cc->schedule,
                   "Bit-widths by patch importance 'b1:f1,b2:f2,...', e.g. 2:0.5,0:0.5")
      ->capture_default_str();
  compress->add_option("--quantizer", cc->quantizer, "minmax, symmetric or clipped")
      ->capture_default_str();
  common::AddBooleanFlag(compress, "--separate-dc", cc->separate_dc,
                         "Keep each patch's DC coefficient apart (bf16)");
  compress
      ->add_option("--min-dct-elements", cc->min_dct_elements,
                   "Tensors with fewer elements are stored raw (lossless)")
      ->check(common::WholeNumberValidator("a number of elements", 0, INT64_MAX))
      ->capture_default_str();
  compress->add_option("--rule", cc->rules,
                       "Encoding override 'GLOB=raw|dct|unchanged' (fnmatch; repeatable; "
                       "first match wins)");
  common::AddBooleanFlag(compress, "--allow-missing", cc->allow_missing,
                         "Leave base tensors the finetune lacks out of the merged model (each is "
                         "named); default: refuse");
  common::AddBooleanFlag(
      compress, "--allow-extra", cc->allow_extra,
      "Store finetuned tensors the base lacks raw (each is named); default: refuse");
  common::AddBooleanFlag(
      compress, "--allow-nonfinite", cc->allow_nonfinite,
      "Store finetuned tensors with NaN/Inf raw (each is named); default: refuse");
  common::AddBooleanFlag(compress, "--allow-dtype-change", cc->allow_dtype_change,
                         "Store finetuned tensors whose dtype changes to or from a non-float "
                         "dtype (F32 -> I32) raw; the merged model gets the finetuned dtype "
                         "(each is named); default: refuse");
  compress
      ->add_option("--max-relative-delta", cc->max_relative_delta,
                   "Refuse a tensor whose delta norm exceeds this many times its base's "
                   "(transposed or unrelated weights); 0: no check")
      ->check(common::PlainNumberValidator())
      ->capture_default_str();
  common::AddBooleanFlag(compress, "--no-tie", cc->no_tie,
                         "Do not code an output head the base lacks (lm_head.weight) against the "
                         "base's input embedding (tied embeddings); treat it as finetune-only");
  compress
      ->add_option("--threads", cc->threads,
                   "Threads encoding tensors at once (same output bytes for any count); 0: "
                   "one per hardware thread")
      ->check(common::WholeNumberValidator("a number of threads", 0, INT_MAX))
      ->capture_default_str();
  compress->callback([cc, action, compress] {
    for (const char* name : {"--schedule", "--quantizer", "--separate-dc"}) {
      cc->dct_option_given |= compress->get_option(name)->count() > 0;
    }
    // Every option error is a usage error (exit 2), found before any file is read.
    absl::StatusOr<codec::CompressOptions> options = ToCompressOptions(*cc);
    if (!options.ok()) throw CLI::ValidationError(std::string(options.status().message()));
    *action = [cc, options = *std::move(options)] { return RunCompress(*cc, options); };
  });

  auto* decompress =
      app.add_subcommand("decompress",
                         "Merge a delta container into its base and write the finetuned model "
                         "as one .safetensors file");
  auto dc = std::make_shared<DecompressCliOptions>();
  decompress->add_option("--base", dc->base, "Base model the delta was made against")->required();
  decompress->add_option("--delta", dc->delta, "Delta container (.dds)")->required();
  // Exactly one output, checked while parsing (a usage error, exit 2), after --help.
  CLI::Option_group* dc_output =
      decompress->add_option_group("output", "exactly one of --out FILE and --out-dir DIR");
  dc_output->require_option(1);
  auto* dc_out = dc_output->add_option("--out", dc->out, "Output .safetensors file");
  dc_output
      ->add_option("--out-dir", dc->out_dir,
                   "Output Hugging Face checkpoint directory (sharded safetensors + "
                   "model.safetensors.index.json) instead of --out")
      ->excludes(dc_out);
  decompress->add_option("--shard-bytes", dc->shard_bytes, "Largest shard of --out-dir, bytes")
      ->check(common::ByteCountValidator(/*min=*/1))
      ->capture_default_str();
  common::AddBooleanFlag(decompress, "--force", dc->force, "Decode even if the base hash differs");
  AddSideFileOptions(decompress, &dc->side_files);
  AddDTypeOption(decompress, &dc->dtype);
  decompress->callback([dc, action] {
    // Usage errors (exit 2), before any file is read.
    if (dc->out_dir.empty() && (!dc->side_files.paths.empty() || !dc->side_files.from_dir.empty())) {
      throw CLI::ValidationError("side files need --out-dir");
    }
    *action = [dc] { return RunDecompress(*dc); };
  });
}

}  // namespace deltaserve::client
