#include "codec/internal/compress_checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codec/internal/fp16.h"

namespace deltaserve::codec::internal {
namespace {

constexpr int64_t kChunk = 1 << 16;
constexpr size_t kMaxListed = 20;

std::string ListNames(const std::vector<std::string>& names) {
  std::vector<std::string> quoted;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) {
    quoted.push_back(absl::StrCat("'", names[i], "'"));
  }
  std::string out = absl::StrJoin(quoted, ", ");
  if (names.size() > kMaxListed) absl::StrAppend(&out, " and ", names.size() - kMaxListed, " more");
  return out;
}

// "the finetune's names lack the prefix 'model.'" if every finetune-only name is a
// base-only name minus one common prefix (or the other way round); else "".
std::string PrefixHint(const std::vector<std::string>& base_only,
                       const std::vector<std::string>& ft_only) {
  if (base_only.empty() || ft_only.empty()) return "";
  auto common = [](const std::vector<std::string>& longer,
                   const std::vector<std::string>& shorter) -> std::string {
    std::string prefix;
    for (const std::string& s : shorter) {
      std::string found;
      for (const std::string& l : longer) {
        if (l.size() > s.size() && absl::EndsWith(l, s)) {
          found = l.substr(0, l.size() - s.size());
          break;
        }
      }
      if (found.empty() || (!prefix.empty() && found != prefix)) return "";
      prefix = found;
    }
    return prefix;
  };
  if (std::string p = common(base_only, ft_only); !p.empty()) {
    return absl::StrCat(" (hint: the finetune's names lack the base's prefix '", p, "')");
  }
  if (std::string p = common(ft_only, base_only); !p.empty()) {
    return absl::StrCat(" (hint: the finetune's names carry a prefix '", p, "' the base's lack)");
  }
  return "";
}

// Tie rule names (FORMAT.md, "Tied tensors"), matched as whole trailing name components.
constexpr const char* kHeadSuffixes[] = {"lm_head.weight", "embed_out.weight",
                                         "predictions.decoder.weight"};
// In order of preference.
constexpr const char* kEmbeddingSuffixes[] = {"embed_tokens.weight", "wte.weight",
                                              "word_embeddings.weight", "embed_in.weight",
                                              "shared.weight"};

// True if `name` is `suffix` or ends in "." or "/" followed by `suffix`.
bool HasComponentSuffix(const std::string& name, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (!absl::EndsWith(name, suffix)) return false;
  return name.size() == n || name[name.size() - n - 1] == '.' || name[name.size() - n - 1] == '/';
}

// Index into kEmbeddingSuffixes, or -1 if `name` is not an input embedding's.
int EmbeddingRank(const std::string& name) {
  for (size_t i = 0; i < std::size(kEmbeddingSuffixes); ++i) {
    if (HasComponentSuffix(name, kEmbeddingSuffixes[i])) return static_cast<int>(i);
  }
  return -1;
}

bool IsEmbeddingName(const std::string& name) { return EmbeddingRank(name) >= 0; }

bool IsHeadName(const std::string& name) {
  return std::any_of(std::begin(kHeadSuffixes), std::end(kHeadSuffixes),
                     [&](const char* s) { return HasComponentSuffix(name, s); });
}

// Equal shapes, or the same rank with more rows (dim 0) in the finetune.
bool Mergeable(const std::vector<int64_t>& fs, const std::vector<int64_t>& bs) {
  bool ok = fs.size() == bs.size();
  for (size_t i = 0; ok && i < fs.size(); ++i) ok = i == 0 ? bs[0] <= fs[0] : bs[i] == fs[i];
  return ok;
}

std::string Coordinates(int64_t index, const std::vector<int64_t>& shape) {
  std::vector<int64_t> c(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] > 0) {
      c[k] = index % shape[k];
      index /= shape[k];
    }
  }
  return ShapeString(c);
}

}  // namespace

std::map<std::string, std::string> FindTies(const ModelReader& base, const ModelReader& finetuned,
                                            const CompressOptions& options, CompressStats* stats) {
  std::map<std::string, std::string> ties;
  if (!options.tie_embeddings) return ties;
  std::vector<const TensorInfo*> embeddings;
  for (const TensorInfo& b : base.tensors()) {
    if (IsEmbeddingName(b.name) && IsCastable(b.dtype) && b.shape.size() == 2) {
      embeddings.push_back(&b);
    }
  }
  std::sort(embeddings.begin(), embeddings.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::make_tuple(EmbeddingRank(a->name), a->name.size(), a->name) <
           std::make_tuple(EmbeddingRank(b->name), b->name.size(), b->name);
  });
  for (const TensorInfo& t : finetuned.tensors()) {
    if (!IsHeadName(t.name) || !IsCastable(t.dtype) || base.Get(t.name).ok()) continue;
    absl::StatusOr<TensorView> ft = finetuned.Get(t.name);
    if (!ft.ok()) continue;
    for (const TensorInfo* e : embeddings) {
      if (!Mergeable(t.shape, e->shape)) continue;
      absl::StatusOr<TensorView> bv = base.Get(e->name);
      if (!bv.ok()) continue;
      const double r = RelativeDeltaNorm(*ft, *bv);
      if (options.max_relative_delta > 0 && r > options.max_relative_delta) {
        stats->warnings.push_back(absl::StrFormat(
            "tensor '%s' is not tied to the base's '%s': its delta norm is %.3g x that "
            "tensor's norm (limit %g)",
            t.name, e->name, r, options.max_relative_delta));
        continue;
      }
      ties.emplace(t.name, e->name);
      stats->warnings.push_back(absl::StrCat("tensor '", t.name,
                                             "' is not in the base: coded against the base's '",
                                             e->name, "' (tied embeddings)"));
      break;
    }
  }
  return ties;
}

absl::Status CheckNameSets(const ModelReader& base, const ModelReader& finetuned,
                           const std::map<std::string, std::string>& ties,
                           const CompressOptions& options, CompressStats* stats) {
  for (const TensorInfo& t : base.tensors()) {
    if (!finetuned.Get(t.name).ok()) stats->base_only.push_back(t.name);
  }
  for (const TensorInfo& t : finetuned.tensors()) {
    if (!base.Get(t.name).ok() && ties.count(t.name) == 0) stats->finetune_only.push_back(t.name);
  }
  for (const std::string& name : stats->base_only) {
    stats->warnings.push_back(
        absl::StrCat("tensor '", name, "' is only in the base: left out of the merged model"));
  }
  for (const std::string& name : stats->finetune_only) {
    absl::StatusOr<TensorView> ft = finetuned.Get(name);
    std::string tie;
    for (const TensorInfo& b : base.tensors()) {
      if (ft.ok() && IsEmbeddingName(b.name) && b.shape == ft->info.shape) {
        tie = absl::StrCat(" (it has the shape of the base's '", b.name,
                           "': tied embeddings untied by the finetune?)");
        break;
      }
    }
    stats->warnings.push_back(absl::StrCat("tensor '", name,
                                           "' is only in the finetune: stored raw (lossless, "
                                           "16-32 bits per weight)",
                                           tie));
  }
  const bool refuse_missing = !stats->base_only.empty() && !options.allow_missing;
  const bool refuse_extra = !stats->finetune_only.empty() && !options.allow_extra;
  if (!refuse_missing && !refuse_extra) return absl::OkStatus();
  std::string msg = "the finetuned model's tensor names differ from the base's:";
  if (!stats->base_only.empty()) {
    absl::StrAppend(&msg, " ", stats->base_only.size(), " only in the base (",
                    ListNames(stats->base_only), ")");
  }
  if (!stats->finetune_only.empty()) {
    absl::StrAppend(&msg, stats->base_only.empty() ? " " : "; ", stats->finetune_only.size(),
                    " only in the finetune (", ListNames(stats->finetune_only), ")");
  }
  absl::StrAppend(&msg, PrefixHint(stats->base_only, stats->finetune_only), ". ");
  if (refuse_missing) {
    absl::StrAppend(&msg, "--allow-missing leaves base-only tensors out of the merged model. ");
  }
  if (refuse_extra) absl::StrAppend(&msg, "--allow-extra stores finetune-only tensors raw.");
  return absl::InvalidArgumentError(msg);
}

absl::Status CheckShapes(const ModelReader& base, const ModelReader& finetuned) {
  std::vector<std::string> bad;
  for (const TensorInfo& ft : finetuned.tensors()) {
    absl::StatusOr<TensorView> b = base.Get(ft.name);
    if (!b.ok()) continue;
    const auto& fs = ft.shape;
    const auto& bs = b->info.shape;
    if (Mergeable(fs, bs)) continue;
    const bool transposed = fs.size() == 2 && bs.size() == 2 && fs[0] == bs[1] && fs[1] == bs[0];
    bad.push_back(absl::StrCat("tensor '", ft.name, "' ", ShapeString(fs), " vs base ",
                               ShapeString(bs), transposed ? " (transposed?)" : ""));
  }
  if (bad.empty()) return absl::OkStatus();
  const size_t n = bad.size();
  if (n > kMaxListed) {
    bad.resize(kMaxListed);
    bad.push_back(absl::StrCat("and ", n - kMaxListed, " more"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      n,
      " finetuned tensor(s) cannot merge into their base tensor (only dim 0 may grow, for "
      "added vocabulary): ",
      absl::StrJoin(bad, "; ")));
}

NonFinite FindNonFinite(const TensorView& t) {
  NonFinite out;
  if (!IsCastable(t.info.dtype)) return out;
  const int64_t n = t.info.num_elements();
  std::vector<float> buf(static_cast<size_t>(std::min(n, kChunk)));
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    ToFloat32(t.data.data() + i * DTypeSize(t.info.dtype), t.info.dtype, m, buf.data());
    for (int64_t j = 0; j < m; ++j) {
      if (!std::isfinite(buf[j])) {
        if (out.count++ == 0) out.first = Coordinates(i + j, t.info.shape);
      }
    }
  }
  return out;
}

double RelativeDeltaNorm(const TensorView& ft, const TensorView& base) {
  const int64_t n = base.info.num_elements();
  // Four double lanes (element j in lane j % 4): one serial chain of adds was
  // latency-bound at a quarter of the speed. (The sums differ from one chain's in the
  // last bits; the limit is a heuristic at ~100x the usual ratio.)
  constexpr int kLanes = 4;
  double dd_lane[kLanes] = {}, bb_lane[kLanes] = {};
  // Two F16 tensors: the same sums, from the halves in one pass.
  const bool halves = ft.info.dtype == DType::kF16 && base.info.dtype == DType::kF16;
  if (halves) {
    HalfDeltaSquares(reinterpret_cast<const uint16_t*>(ft.data.data()),
                     reinterpret_cast<const uint16_t*>(base.data.data()), n, dd_lane, bb_lane);
  }
  std::vector<float> f(halves ? 0 : static_cast<size_t>(std::min(n, kChunk)));
  std::vector<float> b(f.size());
  for (int64_t i = 0; !halves && i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    ToFloat32(ft.data.data() + i * DTypeSize(ft.info.dtype), ft.info.dtype, m, f.data());
    ToFloat32(base.data.data() + i * DTypeSize(base.info.dtype), base.info.dtype, m, b.data());
    int64_t j = 0;
    for (; j + kLanes <= m; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const double d = static_cast<double>(f[j + l]) - b[j + l];
        dd_lane[l] += d * d;
        bb_lane[l] += static_cast<double>(b[j + l]) * b[j + l];
      }
    }
    for (int l = 0; j < m; ++j, ++l) {
      const double d = static_cast<double>(f[j]) - b[j];
      dd_lane[l] += d * d;
      bb_lane[l] += static_cast<double>(b[j]) * b[j];
    }
  }
  double dd = 0, bb = 0;
  for (int l = 0; l < kLanes; ++l) {
    dd += dd_lane[l];
    bb += bb_lane[l];
  }
  if (bb == 0) return dd == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(dd / bb);
}

}  // namespace deltaserve::codec::internal
