// Model-level Delta-DCT: encoding policy, compression into a container, merge/decode.
#include "codec/delta_codec.h"

#include <fnmatch.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codec/container_checks.h"
#include "codec/record_checks.h"
#include "codec/internal/compress_checks.h"
#include "codec/internal/ecq_compress.h"
#include "codec/internal/fp16.h"
#include "codec/internal/merge.h"
#include "codec/internal/ordered_parallel.h"
#include "common/coding.h"
#include "common/plural.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

std::string Quoted(const std::string& name) { return absl::StrCat("tensor '", name, "'"); }

// Elements converted per step when casting, so that casts need bounded scratch.
constexpr int64_t kCastChunk = 1 << 16;

// dst (n elements of `to`) = src (n elements of `from`), bit-exact copy when the dtypes
// agree, else through float32 (round-to-nearest-even) with internal::SaturateForCast's
// rule, as merges: a finite value never becomes infinite. Adds the values saturated to
// *saturated. Internal for any other pair of dtypes (ToFloat32/FromFloat32 would write
// nothing): every byte of dst is written, or the merge fails. CheckRecordFitsBase keeps
// records from getting here with such a pair.
absl::Status CastElements(const uint8_t* src, DType from, int64_t n, DType to, uint8_t* dst,
                          int64_t* saturated) {
  if (from == to) {
    std::memcpy(dst, src, static_cast<size_t>(n) * DTypeSize(to));
    return absl::OkStatus();
  }
  if (!IsCastable(from) || !IsCastable(to)) {
    return absl::InternalError(absl::StrCat("no cast from ", std::string(DTypeName(from)),
                                            " to ", std::string(DTypeName(to))));
  }
  std::vector<float> tmp(static_cast<size_t>(std::min(n, kCastChunk)));
  for (int64_t i = 0; i < n; i += kCastChunk) {
    const int64_t m = std::min(kCastChunk, n - i);
    ToFloat32(src + i * DTypeSize(from), from, m, tmp.data());
    *saturated += internal::SaturateForCast(tmp.data(), m, to);
    FromFloat32(tmp.data(), m, to, dst + i * DTypeSize(to));
  }
  return absl::OkStatus();
}

// True if `name` is the scale of an FP8 tensor: NAME_scale or NAME_scale_inv beside an
// F8_E4M3/F8_E5M2 tensor NAME (e.g. "w.weight_scale_inv" for "w.weight"). A lossy
// scale would move every weight it scales, so it is kept raw.
bool IsFp8Scale(const ModelReader& model, const std::string& name) {
  for (const char* suffix : {"_scale_inv", "_scale"}) {
    if (!absl::EndsWith(name, suffix)) continue;
    auto t = model.Get(name.substr(0, name.size() - std::strlen(suffix)));
    if (t.ok() && (t->info.dtype == DType::kF8E4M3 || t->info.dtype == DType::kF8E5M2)) {
      return true;
    }
  }
  return false;
}

bool SameTensor(const TensorView& a, const TensorView& b) {
  return a.info.dtype == b.info.dtype && a.info.shape == b.info.shape &&
         a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size()) == 0;
}

// OK if `ft` can merge into `base`: same shape, or more rows (dim 0) and otherwise equal.
absl::Status CheckMergeableShapes(const TensorView& ft, const TensorView& base) {
  const auto& fs = ft.info.shape;
  const auto& bs = base.info.shape;
  bool ok = fs.size() == bs.size();
  for (size_t i = 0; ok && i < fs.size(); ++i) ok = i == 0 ? bs[0] <= fs[0] : bs[i] == fs[i];
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quoted(ft.info.name), ": finetuned shape ", ShapeString(fs),
                     " cannot merge into base shape ", ShapeString(bs),
                     " (only dim 0 may grow, for added vocabulary)"));
  }
  return absl::OkStatus();
}

// delta[i] = ft[begin + i] - base[begin + i] in float32 for i < count. False if any
// value is not finite (such a tensor is stored raw instead).
bool DeltaRange(const TensorView& ft, const TensorView& base, int64_t begin, int64_t count,
                float* delta) {
  if (ft.info.dtype == DType::kF16 && base.info.dtype == DType::kF16) {  // one fused pass
    return internal::HalfDifferenceToFloat(
        reinterpret_cast<const uint16_t*>(ft.data.data()) + begin,
        reinterpret_cast<const uint16_t*>(base.data.data()) + begin, count, delta);
  }
  std::vector<float> b(static_cast<size_t>(std::min(count, kCastChunk)));
  bool finite = true;
  for (int64_t i = 0; i < count; i += kCastChunk) {
    const int64_t m = std::min(kCastChunk, count - i);
    float* d = delta + i;
    ToFloat32(ft.data.data() + (begin + i) * DTypeSize(ft.info.dtype), ft.info.dtype, m, d);
    ToFloat32(base.data.data() + (begin + i) * DTypeSize(base.info.dtype), base.info.dtype, m,
              b.data());
    for (int64_t j = 0; j < m; ++j) {
      d[j] -= b[j];
      finite = finite && std::isfinite(d[j]);
    }
  }
  return finite;
}

// The float32 delta ft[:base rows] - base into `delta` (base.num_elements() floats).
// False if any value is not finite (such a tensor is stored raw instead).
bool ComputeDelta(const TensorView& ft, const TensorView& base, std::vector<float>* delta) {
  const int64_t n = base.info.num_elements();
  delta->resize(static_cast<size_t>(n));
  return DeltaRange(ft, base, 0, n, delta->data());
}

// Rows of the 2-D view per merge unit of a lossy record (0 for other encodings):
// kMergeRowAlign for kDct, the payload's entropy chunk for kEcq (a malformed one is
// reported by its decoder).
int64_t MergeRowUnit(const TensorRecord& record) {
  if (record.encoding == Encoding::kDct) return kMergeRowAlign;
  if (record.encoding != Encoding::kEcq) return 0;
  const int64_t rows = EcqChunkRows(record.payload);
  return rows > 0 ? rows : kMergeRowAlign;
}

// How each kind of refused tensor can be accepted, in CompressModel's refusal. Each
// starts with "CompressOptions::<field>", which deltactl replaces by its flag.
constexpr char kAcceptNonfinite[] =
    "CompressOptions::allow_nonfinite stores tensors holding NaN/Inf raw";
constexpr char kAcceptDtypeChange[] =
    "CompressOptions::allow_dtype_change stores tensors whose dtype changes raw";
constexpr char kAcceptLargeDelta[] =
    "CompressOptions::max_relative_delta raises the delta norm limit (0: no check)";

std::map<std::string, std::string> HeaderMetadata(const CompressOptions& o) {
  std::vector<std::string> rules;
  for (const auto& r : o.rules) rules.push_back(r.ToString());
  std::map<std::string, std::string> m = {
      {"codec.patch_size", absl::StrCat(o.codec == LossyCodec::kEcq ? o.ecq.patch_size
                                                                    : o.dct.patch_size)},
      {"codec.schedule", o.dct.schedule.ToString()},
      {"codec.quantizer", QuantizerName(o.dct.quantizer)},
      {"codec.separate_dc", o.dct.separate_dc ? "1" : "0"},
      {"codec.min_dct_elements", absl::StrCat(o.min_dct_elements)},
      {"codec.rules", absl::StrJoin(rules, ",")},
      {"tool", kToolName},
  };
  if (o.codec == LossyCodec::kEcq) {
    m["codec.lossy"] = LossyCodecName(o.codec);
    m["codec.ecq_weighting"] = EcqWeightingName(o.ecq_weighting);
    // A std::string, not the literal: assigning a literal here draws GCC 12's false
    // -Wrestrict (bug 105329).
    m["codec.ecq_low_rank"] = std::string(o.ecq.try_low_rank ? "1" : "0");
    m["codec.ecq_gain_weight"] = absl::StrCat(o.ecq.gain_weight);
    m["codec.ecq_target"] = o.ecq_target.max_error > 0
                                ? absl::StrCat("max_error=", o.ecq_target.max_error)
                                : absl::StrCat("bits=", o.ecq_target.bits_per_weight);
  }
  return m;
}

}  // namespace

std::map<std::string, std::string> DisplayedMetadata(
    const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> shown = metadata;
  const auto lossy = metadata.find("codec.lossy");
  if (lossy != metadata.end() && lossy->second == LossyCodecName(LossyCodec::kEcq)) {
    for (const char* key : {"codec.schedule", "codec.quantizer", "codec.separate_dc"}) {
      shown.erase(key);
    }
  }
  return shown;
}

BaseHash ComputeBaseHash(const ModelReader& base) {
  std::vector<std::string> names;
  for (const auto& t : base.tensors()) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  XXH3_128bits_reset(state.get());
  const auto feed_le = [&](uint64_t v, int n) {
    uint8_t b[8];
    common::EncodeFixed(b, v, n);
    XXH3_128bits_update(state.get(), b, n);
  };
  for (const auto& name : names) {
    auto view = base.Get(name);
    if (!view.ok()) continue;  // listed by tensors(), so present; be defensive anyway
    feed_le(name.size(), 4);
    XXH3_128bits_update(state.get(), name.data(), name.size());
    feed_le(static_cast<uint8_t>(view->info.dtype), 1);
    feed_le(view->info.shape.size(), 1);
    for (int64_t d : view->info.shape) feed_le(static_cast<uint64_t>(d), 8);
    feed_le(view->data.size(), 8);
    XXH3_128bits_update(state.get(), view->data.data(), view->data.size());
  }
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(state.get()));
  BaseHash out;
  std::memcpy(out.data(), canon.digest, out.size());
  return out;
}

absl::Status CheckBaseHashMatch(const BaseHash& made_against, const BaseHash& have,
                                absl::string_view what, absl::string_view have_what) {
  if (made_against == have) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(what, " was compressed against base ",
                                                    BaseHashHex(made_against), ", not ",
                                                    have_what, " ", BaseHashHex(have)));
}

absl::Status CheckBaseHash(const ModelReader& base, const ContainerHeader& header, bool force) {
  if (force) return absl::OkStatus();
  absl::Status s =
      CheckBaseHashMatch(header.base_hash, ComputeBaseHash(base), "the delta", "this base");
  if (s.ok()) return s;
  return absl::FailedPreconditionError(absl::StrCat(s.message(), " (--force decodes anyway)"));
}

absl::StatusOr<Encoding> ChooseEncoding(const TensorView& ft, const TensorView* base,
                                        const CompressOptions& options) {
  if (base == nullptr) return Encoding::kRaw;
  DS_RETURN_IF_ERROR(CheckMergeableShapes(ft, *base));
  const bool identical = SameTensor(ft, *base);
  const size_t rank = ft.info.shape.size();
  for (const auto& rule : options.rules) {
    if (fnmatch(rule.pattern.c_str(), ft.info.name.c_str(), 0) != 0) continue;
    if (rule.encoding == Encoding::kUnchanged && !identical) {
      return absl::InvalidArgumentError(
          absl::StrCat(Quoted(ft.info.name), ": rule '", rule.ToString(),
                       "' asks for 'unchanged' but the tensor differs from the base"));
    }
    if (rule.encoding == Encoding::kDct &&
        (!IsCastable(ft.info.dtype) || !IsCastable(base->info.dtype))) {
      return absl::InvalidArgumentError(
          absl::StrCat(Quoted(ft.info.name), ": rule '", rule.ToString(),
                       "' asks for 'dct' but dtype ", std::string(DTypeName(ft.info.dtype)),
                       " (base ", std::string(DTypeName(base->info.dtype)),
                       ") is stored raw only (DCT needs F32, F16 or BF16)"));
    }
    if (rule.encoding == Encoding::kDct && rank < 2) {
      return absl::InvalidArgumentError(absl::StrCat(Quoted(ft.info.name), ": rule '",
                                                     rule.ToString(), "' asks for 'dct' but ",
                                                     "the tensor has rank ", rank, " < 2"));
    }
    return rule.encoding;
  }
  if (identical) return Encoding::kUnchanged;
  if (!IsCastable(ft.info.dtype) || !IsCastable(base->info.dtype)) return Encoding::kRaw;
  if (rank < 2 || ft.info.num_elements() < options.min_dct_elements) return Encoding::kRaw;
  return Encoding::kDct;
}

absl::StatusOr<CompressStats> CompressModel(const ModelReader& base, const ModelReader& finetuned,
                                            const CompressOptions& options,
                                            const std::string& out_path,
                                            const ProgressFn& progress) {
  DS_RETURN_IF_ERROR(options.Validate());
  // A finetune shares its tensor names with its base; none in common means the wrong
  // base was given (the container would hold the whole model raw, at >= 16 bits/weight).
  const bool any_shared = std::any_of(finetuned.tensors().begin(), finetuned.tensors().end(),
                                      [&](const TensorInfo& t) { return base.Get(t.name).ok(); });
  if (!finetuned.tensors().empty() && !any_shared) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no tensor of the finetuned model (", common::Counted(finetuned.tensors().size(), "tensor"),
        ", e.g. ", Quoted(finetuned.tensors().front().name),
        ") exists in the base: wrong base model?"));
  }
  CompressStats stats;
  const std::map<std::string, std::string> ties =
      internal::FindTies(base, finetuned, options, &stats);
  DS_RETURN_IF_ERROR(internal::CheckNameSets(base, finetuned, ties, options, &stats));
  DS_RETURN_IF_ERROR(internal::CheckShapes(base, finetuned));
  ContainerHeader header;
  // The base hash (one serial pass over the whole base, which also faults in its
  // mapping) is computed on a thread of its own while the workers make the first
  // tensors; the container is opened, and its header written, when the first record is
  // due (open_writer).
  BaseHash base_hash{};
  std::thread hasher([&] { base_hash = ComputeBaseHash(base); });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } join_hasher{hasher};
  header.tensor_count = static_cast<uint32_t>(finetuned.tensors().size());
  header.metadata = HeaderMetadata(options);
  // Every tie found, also those whose record ends up raw (a reader ignores them): the
  // header is written before the records.
  if (!ties.empty()) {
    DS_ASSIGN_OR_RETURN(header.metadata[kBaseAliasKey], SerializeBaseAlias(ties));
  }
  std::unique_ptr<ContainerWriter> writer;
  uint64_t header_bytes = 0;
  auto open_writer = [&]() -> absl::Status {
    if (writer != nullptr) return absl::OkStatus();
    hasher.join();
    header.base_hash = base_hash;
    DS_ASSIGN_OR_RETURN(writer, ContainerWriter::Open(out_path, header));
    header_bytes = writer->bytes_written();
    return absl::OkStatus();
  };

  std::vector<std::string> refused;  // every tensor that makes the pair unusable
  std::vector<const char*> accept;    // the options that accept them, in first-seen order
  auto add_record = [&](const TensorRecord& rec) -> absl::Status {
    DS_RETURN_IF_ERROR(open_writer());
    if (!rec.base_name.empty()) stats.ties.emplace(rec.info.name, rec.base_name);
    const uint64_t before = writer->bytes_written();
    DS_RETURN_IF_ERROR(writer->Add(rec));
    const uint64_t rec_bytes = writer->bytes_written() - before;
    stats.total_weights += rec.info.num_elements();
    switch (rec.encoding) {
      case Encoding::kDct:
      case Encoding::kEcq:
        ++stats.dct_tensors;
        stats.dct_weights += rec.info.num_elements();
        stats.dct_bytes += rec_bytes;
        break;
      case Encoding::kRaw:
        ++stats.raw_tensors;
        break;
      case Encoding::kUnchanged:
        ++stats.unchanged_tensors;
        break;
    }
    return absl::OkStatus();
  };
  // kEcq: every record waits for the rate control over all the lossy tensors, then all
  // are written in order (records view model bytes; ecq payloads live in ecq_payloads).
  const bool ecq = options.codec == LossyCodec::kEcq;
  std::vector<TensorRecord> deferred;
  std::vector<std::unique_ptr<EcqTensor>> ecq_tensors;
  std::vector<size_t> ecq_records;  // index in `deferred` of each ecq tensor
  std::vector<std::vector<uint8_t>> ecq_payloads;
  std::vector<std::pair<TensorView, TensorView>> ecq_sources;  // of each ecq tensor

  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  int64_t model_weights = 0;
  for (const TensorInfo& t : finetuned.tensors()) model_weights += t.num_elements();
  // kEcq: a large model is planned from summaries and coded from deltas computed again
  // (EcqOptions::exhaustive_max_weights).
  const bool ecq_summaries = ecq && model_weights > options.ecq.exhaustive_max_weights;
  // One tensor's checks and encoding (for kEcq: its prepared coefficients), made on a
  // worker thread (OrderedParallel) and consumed in container order below, so the
  // container and the warnings are the same whatever the thread count.
  struct Made {
    absl::Status status;  // ends the compress when this tensor's turn comes
    std::string refused;  // non-empty: the tensor is refused, for this reason
    const char* accept = nullptr;  // with `refused`: the option that accepts it
    std::vector<std::string> warnings;
    TensorRecord rec;  // views into the mapped models and `payload`
    std::vector<uint8_t> payload;
    std::unique_ptr<EcqTensor> ecq;  // kEcq: payload made after the rate control
    std::pair<TensorView, TensorView> ecq_source;  // kEcq: (finetuned, base) of the delta
    absl::Status encode_status;      // matters only while nothing is refused
  };
  // Lowest index of a refused tensor: tensors after it skip encoding (never written).
  std::atomic<size_t> first_refused{SIZE_MAX};
  auto refuse = [&](size_t i) {
    size_t seen = first_refused.load();
    while (i < seen && !first_refused.compare_exchange_weak(seen, i)) {
    }
  };
  std::mutex buffers_mu;
  std::vector<std::vector<float>> buffers;  // guarded by buffers_mu; at most one a thread
  auto make = [&](size_t i) -> Made {
    Made m;
    const std::string& name = finetuned.tensors()[i].name;
    absl::StatusOr<TensorView> ft_or = finetuned.Get(name);
    if (!ft_or.ok()) {
      m.status = ft_or.status();
      return m;
    }
    const TensorView& ft = *ft_or;
    const auto tie = ties.find(name);
    auto base_or = base.Get(tie == ties.end() ? name : tie->second);
    if (!base_or.ok() && !absl::IsNotFound(base_or.status())) {
      m.status = base_or.status();
      return m;
    }
    const TensorView* bv = base_or.ok() ? &*base_or : nullptr;
    absl::StatusOr<Encoding> enc_or = ChooseEncoding(ft, bv, options);
    if (!enc_or.ok()) {
      m.status = enc_or.status();
      return m;
    }
    Encoding enc = *enc_or;
    // The delta's buffer, reused from an earlier tensor (fresh pages for every tensor
    // cost page faults and zero-filling).
    std::vector<float> delta;
    {
      std::lock_guard<std::mutex> lock(buffers_mu);
      if (!buffers.empty()) {
        delta.swap(buffers.back());
        buffers.pop_back();
      }
    }
    absl::Cleanup give_back = [&] {
      std::lock_guard<std::mutex> lock(buffers_mu);
      buffers.push_back(std::move(delta));
    };
    // Two F16 tensors of one shape: the delta first. A finite delta proves the finetuned
    // tensor finite (its Inf or NaN would make the delta's), so FindNonFinite is not
    // needed. (Rows the finetune added are not in the delta.)
    const bool early_delta = enc == Encoding::kDct && ft.info.dtype == DType::kF16 &&
                             bv->info.dtype == DType::kF16 &&
                             ft.info.num_elements() == bv->info.num_elements();
    const bool early_finite = early_delta && ComputeDelta(ft, *bv, &delta);
    // A dtype change that is no float-to-float cast (an F32 weight saved as I32): the
    // tensor can only be stored raw, and the merged model changes its dtype.
    if (bv != nullptr && ft.info.dtype != bv->info.dtype &&
        !(IsCastable(ft.info.dtype) && IsCastable(bv->info.dtype))) {
      const std::string what =
          absl::StrCat(Quoted(name), ": base dtype ", std::string(DTypeName(bv->info.dtype)),
                       " -> finetuned dtype ", std::string(DTypeName(ft.info.dtype)));
      if (!options.allow_dtype_change) {
        m.refused = absl::StrCat(what, " (it would be stored raw, and the merged model would "
                                       "get the finetuned dtype)");
        m.accept = kAcceptDtypeChange;
        refuse(i);
        return m;
      }
      m.warnings.push_back(
          absl::StrCat(what, ": stored raw; the merged model gets the finetuned dtype"));
    }
    if (enc != Encoding::kUnchanged) {
      const internal::NonFinite nf =
          early_finite ? internal::NonFinite{} : internal::FindNonFinite(ft);
      if (nf.count > 0) {
        const std::string what = absl::StrCat(
            Quoted(name), ": ", nf.count, " non-finite values (NaN/Inf), the first at ", nf.first);
        if (!options.allow_nonfinite) {
          m.refused = what;
          m.accept = kAcceptNonfinite;
          refuse(i);
          return m;
        }
        m.warnings.push_back(absl::StrCat(what, ": stored raw as they are"));
        enc = Encoding::kRaw;
      } else if (bv != nullptr && options.max_relative_delta > 0 && IsCastable(ft.info.dtype) &&
                 IsCastable(bv->info.dtype)) {
        const double r = internal::RelativeDeltaNorm(ft, *bv);
        if (r > options.max_relative_delta) {
          const auto& sh = ft.info.shape;
          m.refused = absl::StrFormat(
              "%s: delta norm is %.3g x the base tensor's norm (limit %g)%s", Quoted(name), r,
              options.max_relative_delta,
              sh.size() == 2 && sh[0] == sh[1] ? "; a transposed square matrix?" : "");
          m.accept = kAcceptLargeDelta;
          refuse(i);
          return m;
        }
      }
      if (enc == Encoding::kDct && IsFp8Scale(finetuned, name)) {
        m.warnings.push_back(
            absl::StrCat(Quoted(name), ": scale of an FP8 tensor, stored raw (lossless)"));
        enc = Encoding::kRaw;
      }
    }
    if (first_refused.load() < i) return m;  // the container will not be finished

    TensorRecord& rec = m.rec;
    rec.info = ft.info;
    if (bv != nullptr && !bv->info.shape.empty()) rec.base_shape = bv->info.shape;
    if (enc == Encoding::kDct && !(early_delta ? early_finite : ComputeDelta(ft, *bv, &delta))) {
      enc = Encoding::kRaw;  // NaN/inf delta: DCT cannot represent it; keep it lossless
    }
    rec.encoding = enc;
    if (tie != ties.end() && enc != Encoding::kRaw) rec.base_name = tie->second;
    if (enc == Encoding::kRaw) {
      rec.payload = ft.data;
    } else if (enc == Encoding::kDct) {
      absl::StatusOr<std::pair<int64_t, int64_t>> view = MatrixView(
          bv->info.shape, ecq ? options.ecq.patch_size : options.dct.patch_size);
      if (!view.ok()) {
        m.encode_status = view.status();
        return m;
      }
      rec.rows = view->first;
      rec.cols = view->second;
      if (ecq) {
        rec.encoding = Encoding::kEcq;
        auto prepared =
            ecq_summaries
                ? EcqTensor::Summarize(delta.data(), rec.rows, rec.cols, options.ecq)
                : EcqTensor::Prepare(delta.data(), rec.rows, rec.cols, options.ecq);
        if (!prepared.ok()) {
          m.encode_status = common::Annotate(prepared.status(), Quoted(name));
          return m;
        }
        (*prepared)->set_step_scale(internal::EcqStepScale(
            options.ecq_weighting, *bv, delta.size(), (*prepared)->energy()));
        m.ecq = *std::move(prepared);
        m.ecq_source = {ft, *bv};
      } else {
        // A tensor of at least 1/threads of the model (an embedding) would finish last
        // on one thread: it gets pieces of its own on every thread.
        const int pieces = ft.info.num_elements() * threads >= model_weights ? threads : 1;
        auto encoded = EncodeDctMatrix(delta.data(), rec.rows, rec.cols, options.dct, pieces);
        if (!encoded.ok()) {
          m.encode_status = common::Annotate(encoded.status(), Quoted(name));
          return m;
        }
        m.payload = *std::move(encoded);
        rec.payload = m.payload;
      }
      const size_t base_bytes =
          static_cast<size_t>(bv->info.num_elements()) * DTypeSize(ft.info.dtype);
      rec.extra_rows = ft.data.subspan(base_bytes);
    }
    return m;
  };

  const size_t total = finetuned.tensors().size();
  auto consume = [&](size_t i, Made&& m) -> absl::Status {
    DS_RETURN_IF_ERROR(m.status);
    if (!m.refused.empty()) {
      refused.push_back(std::move(m.refused));
      if (std::find(accept.begin(), accept.end(), m.accept) == accept.end()) {
        accept.push_back(m.accept);
      }
      return absl::OkStatus();
    }
    for (std::string& w : m.warnings) stats.warnings.push_back(std::move(w));
    if (!refused.empty()) return absl::OkStatus();  // the container will not be finished
    DS_RETURN_IF_ERROR(m.encode_status);
    if (ecq) {
      if (m.ecq != nullptr) {
        ecq_tensors.push_back(std::move(m.ecq));
        ecq_sources.push_back(std::move(m.ecq_source));
        ecq_records.push_back(deferred.size());
      }
      deferred.push_back(std::move(m.rec));
      return absl::OkStatus();
    }
    DS_RETURN_IF_ERROR(add_record(m.rec));
    if (progress) progress(i + 1, total, m.rec.info.name);
    return absl::OkStatus();
  };
  // Tensors made ahead of the one the container writes next. A big tensor (the
  // embedding, first in most models) takes its one thread seconds of checks and delta
  // conversion before its pieces are encoded on all threads: with a window of 2 x
  // threads the other threads stopped after a few tensors and waited (perf of
  // `deltactl compress --threads 2`, stream_bench model: 10 s CPU in 19.5 s wall). A
  // made tensor waiting holds its compressed payload only (kRaw: a view of the model;
  // kEcq: its summary). 64 was still short of the embedding's time: stream_bench's other
  // tensors up to the 64th hold 104 M weights against its 136 M, so the other thread
  // waited; 256 covers that model's 218 tensors.
  const size_t window = std::max<size_t>(2 * threads, 256);
  DS_RETURN_IF_ERROR(internal::OrderedParallel<Made>(total, threads, window, make, consume));
  std::vector<std::vector<float>>().swap(buffers);  // not needed by the rate control
  if (ecq && refused.empty()) {
    DS_RETURN_IF_ERROR(open_writer());  // header_bytes counts in the rate control
    auto delta_of = [&](size_t k, int64_t begin, int64_t count, float* delta) -> absl::Status {
      DeltaRange(ecq_sources[k].first, ecq_sources[k].second, begin, count, delta);  // finite
      return absl::OkStatus();
    };
    DS_RETURN_IF_ERROR(internal::PlanAndSetEcqPayloads(ecq_tensors, ecq_records, header_bytes,
                                                       options.ecq_target, threads, delta_of,
                                                       &deferred, &ecq_payloads));
    for (size_t i = 0; i < deferred.size(); ++i) {
      DS_RETURN_IF_ERROR(add_record(deferred[i]));
      if (progress) progress(i + 1, total, deferred[i].info.name);
    }
  }
  if (!refused.empty()) {
    const size_t n = refused.size();
    if (n > 20) {
      refused.resize(20);
      refused.push_back(absl::StrCat("and ", n - 20, " more"));
    }
    return absl::InvalidArgumentError(absl::StrCat(n, " tensor(s) refused (",
                                                   absl::StrJoin(accept, "; "), "): ",
                                                   absl::StrJoin(refused, "; ")));
  }
  if (total > 0 && stats.unchanged_tensors == total) {
    stats.noop = true;
    stats.warnings.push_back(absl::StrCat("all ", total,
                                          " tensors are bit-identical to the base: this delta "
                                          "is a no-op"));
  }
  DS_RETURN_IF_ERROR(open_writer());  // a model without tensors
  DS_RETURN_IF_ERROR(writer->Finish());
  stats.container_bytes = writer->bytes_written();
  return stats;
}

uint64_t MergedBytes(const TensorRecord& record, DType out_dtype) {
  return static_cast<uint64_t>(record.info.num_elements()) *
         DTypeSize(OutputDType(record.info.dtype, out_dtype));
}

absl::Status MergeTensor(const ModelReader* base, const TensorRecord& record, DType out_dtype,
                         absl::Span<uint8_t> out, int64_t* saturated) {
  return MergeTensorPart(base, record, out_dtype, 0, 1, out, nullptr, saturated);
}

int MergeTensorParts(const TensorRecord& record, int64_t min_part_weights, int max_parts) {
  if (max_parts <= 1 || min_part_weights <= 0) return 1;
  const int64_t n = record.info.num_elements();
  // kDct parts are row ranges in units of kRowAlign rows of the 2-D view.
  const int64_t row_unit = MergeRowUnit(record);
  const int64_t units = row_unit > 0 ? (record.rows + row_unit - 1) / row_unit : n;
  const int64_t by_size = std::max<int64_t>(1, n / min_part_weights);
  return static_cast<int>(std::min<int64_t>({by_size, units, max_parts}));
}

absl::Status MergeTensorPart(const ModelReader* base, const TensorRecord& record,
                             DType requested_dtype, int part, int num_parts,
                             absl::Span<uint8_t> out, const MergedBytesFn& on_bytes,
                             int64_t* saturated) {
  int64_t unused = 0;
  if (saturated == nullptr) saturated = &unused;
  const std::string& name = record.info.name;
  // Non-float tensors keep their dtype (they are raw or unchanged, never cast).
  const DType out_dtype = OutputDType(record.info.dtype, requested_dtype);
  if (out.size() != MergedBytes(record, out_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(Quoted(name), ": output buffer is ", out.size(),
                                                   " bytes, merge needs ",
                                                   MergedBytes(record, out_dtype)));
  }
  if (num_parts < 1 || part < 0 || part >= num_parts) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quoted(name), ": part ", part, " of ", num_parts, " parts"));
  }
  const int64_t n = record.info.num_elements();
  const size_t osz = DTypeSize(out_dtype);
  // Element range [lo, hi) of part `part` when `count` units of `unit` elements are
  // split evenly.
  auto split = [&](int64_t count, int64_t unit, int64_t limit) {
    const int64_t lo = std::min(limit, count * part / num_parts * unit);
    const int64_t hi = std::min(limit, count * (part + 1) / num_parts * unit);
    return std::make_pair(lo, hi);
  };
  // A cast error names the tensor (CastElements' pairs are refused before, below).
  auto cast = [&](const uint8_t* src, DType from, int64_t count, uint8_t* dst) {
    absl::Status s = CastElements(src, from, count, out_dtype, dst, saturated);
    return s.ok() ? s : absl::Status(s.code(), absl::StrCat(Quoted(name), ": ", s.message()));
  };
  if (record.encoding == Encoding::kRaw) {
    auto [lo, hi] = split(n, 1, n);
    DS_RETURN_IF_ERROR(cast(record.payload.data() + lo * DTypeSize(record.info.dtype),
                            record.info.dtype, hi - lo, out.data() + lo * osz));
    if (on_bytes) on_bytes(out.subspan(lo * osz, (hi - lo) * osz));
    return absl::OkStatus();
  }
  // Before any byte is written: the record fits its base tensor (dtype, shape), so that
  // every byte of `out` is written below (record_checks.h). A stored task made before
  // PutDelta checked this is refused here, at pull.
  DS_RETURN_IF_ERROR(CheckRecordFitsBase(record, base));
  auto bv = base->Get(record.base_tensor());
  if (!bv.ok()) return bv.status();  // CheckRecordFitsBase found it: an I/O error
  const int64_t base_n = bv->info.num_elements();
  const size_t bsz = DTypeSize(bv->info.dtype);
  if (record.encoding == Encoding::kUnchanged) {
    auto [lo, hi] = split(n, 1, n);
    DS_RETURN_IF_ERROR(
        cast(bv->data.data() + lo * bsz, bv->info.dtype, hi - lo, out.data() + lo * osz));
    if (on_bytes) on_bytes(out.subspan(lo * osz, (hi - lo) * osz));
    return absl::OkStatus();
  }
  const int64_t row_unit = MergeRowUnit(record);
  const int64_t units = (record.rows + row_unit - 1) / row_unit;
  auto [row_lo, row_hi] = split(units, row_unit, record.rows);
  const size_t row_bytes = static_cast<size_t>(record.cols) * osz;
  RowsDoneFn on_rows;
  if (on_bytes) {
    on_rows = [&](int64_t r0, int64_t r1) {
      on_bytes(out.subspan(r0 * row_bytes, (r1 - r0) * row_bytes));
    };
  }
  absl::Status s =
      record.encoding == Encoding::kEcq
          ? DecodeEcqMatrixMergeRows(record.payload, record.rows, record.cols, row_lo, row_hi,
                                     bv->data.data(), bv->info.dtype, out_dtype, out.data(),
                                     on_rows, saturated)
          : DecodeDctMatrixMergeRows(record.payload, record.rows, record.cols, row_lo, row_hi,
                                     bv->data.data(), bv->info.dtype, out_dtype, out.data(),
                                     on_rows, saturated);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(Quoted(name), ": ", s.message()));
  }
  if (n > base_n && part == num_parts - 1) {
    DS_RETURN_IF_ERROR(
        cast(record.extra_rows.data(), record.info.dtype, n - base_n, out.data() + base_n * osz));
    if (on_bytes) on_bytes(out.subspan(base_n * osz));
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> MergedModelMetadata(const BaseHash& base_hash) {
  // "format": "pt", as torch's safetensors.save_file writes it: Hugging Face
  // transformers refuses (OSError) a checkpoint file whose metadata lack it.
  return {{"deltaserve.base_hash", BaseHashHex(base_hash)},
          {"deltaserve.tool", kToolName},
          {"format", "pt"}};
}

absl::Status DecompressModel(const ModelReader& base, const ContainerReader& container,
                             const DecompressOptions& options, const std::string& out_path,
                             const ProgressFn& progress, DecompressStats* stats) {
  DS_RETURN_IF_ERROR(CheckBaseHash(base, container.header(), options.force));
  const size_t total = container.num_records();
  // Two passes so that only one merged tensor is in memory at a time: the safetensors
  // header needs every shape first, then tensors are merged and appended in order.
  std::vector<TensorInfo> infos;
  infos.reserve(total);
  for (size_t i = 0; i < total; ++i) {
    DS_ASSIGN_OR_RETURN(TensorRecord rec, container.record(i));
    infos.push_back(TensorInfo{
        rec.info.name, OutputDType(rec.info.dtype, options.out_dtype.value_or(rec.info.dtype)),
        rec.info.shape});
  }
  // Tensors are merged straight into the O_DIRECT staging buffer of the output (no
  // write(2) copy into the page cache); a file system that refuses O_DIRECT gets the
  // buffered writer instead.
  const std::map<std::string, std::string> metadata =
      MergedModelMetadata(container.header().base_hash);
  absl::StatusOr<std::unique_ptr<DirectSafetensorsWriter>> direct =
      DirectSafetensorsWriter::Open(out_path, infos, metadata);
  std::unique_ptr<SafetensorsWriter> writer;
  if (!direct.ok()) {
    if (!absl::IsUnimplemented(direct.status())) return direct.status();
    DS_ASSIGN_OR_RETURN(writer, SafetensorsWriter::Open(out_path, infos, metadata));
  }
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < total; ++i) {
    DS_ASSIGN_OR_RETURN(TensorRecord rec, container.record(i));
    absl::Span<uint8_t> out;
    if (writer == nullptr) {
      DS_ASSIGN_OR_RETURN(out, (*direct)->Next());
    } else {
      buf.resize(MergedBytes(rec, infos[i].dtype));
      out = absl::MakeSpan(buf);
    }
    int64_t saturated = 0;
    DS_RETURN_IF_ERROR(MergeTensor(&base, rec, infos[i].dtype, out, &saturated));
    if (saturated > 0 && stats != nullptr) {
      stats->saturated_values += saturated;
      stats->saturated_tensors.emplace_back(rec.info.name, saturated);
    }
    if (writer != nullptr) DS_RETURN_IF_ERROR(writer->Append(buf));
    if (progress) progress(i + 1, total, rec.info.name);
  }
  return writer != nullptr ? writer->Commit() : (*direct)->Commit();
}

}  // namespace deltaserve::codec
