#include "codec/delta_ecq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "codec/internal/dct.h"
#include "codec/internal/dct_payload.h"
#include "codec/internal/ecq_encode.h"
#include "codec/internal/ecq_lowrank.h"
#include "codec/internal/ecq_payload.h"
#include "codec/internal/merge.h"
#include "codec/internal/rans.h"
#include "common/coding.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

using internal::EcqHeader;
using internal::ParsedEcq;

using internal::kEcqMaxCode;
using internal::kEcqMaxStep;
using internal::kEcqRoundings;
using internal::ChunkBytes;
using internal::GainAt;
using internal::QuantStats;
using internal::Quantize;

// Widest matrix coded (a 64-row unit must fit one rANS stream).
constexpr int64_t kMaxCols = int64_t{1} << 22;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows decoded together in an identity chunk with factors (see EcqDecoder::DecodeChunk).
constexpr int64_t kLowRankRowBlock = 16;

}  // namespace

EcqTensor::~EcqTensor() = default;

absl::Status EcqOptions::Validate() const {
  if (patch_size < 2 || patch_size > internal::kMaxDctPatch) {
    return absl::InvalidArgumentError(absl::StrCat("ecq patch_size ", patch_size, " outside [2, ",
                                                   internal::kMaxDctPatch, "]"));
  }
  if (!(gain_weight >= 1.0 && gain_weight <= 1e6)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq gain_weight ", gain_weight, " outside [1, 1e6]"));
  }
  if (exhaustive_max_weights < 0) {
    return absl::InvalidArgumentError(absl::StrCat("ecq exhaustive_max_weights ",
                                                   exhaustive_max_weights, " is negative"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EcqTensor>> EcqTensor::Begin(const float* delta, int64_t rows,
                                                            int64_t cols,
                                                              const EcqOptions& options) {
  DS_RETURN_IF_ERROR(options.Validate());
  if (rows <= 0 || cols <= 0 || rows > internal::kMaxPayloadDim || cols > kMaxCols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matrix ", rows, " x ", cols, ": rows must be in [1, 2^32 - 1], cols in [1, 2^22]"));
  }
  if (delta == nullptr) return absl::InvalidArgumentError("delta is null");
  std::unique_ptr<EcqTensor> t(new EcqTensor());
  t->rows_ = rows;
  t->cols_ = cols;
  t->gain_weight_ = options.gain_weight;
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  double energy = 0.0;
  for (uint64_t i = 0; i < n; ++i) {
    if (!std::isfinite(delta[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("delta holds a non-finite value at element ", i));
    }
    energy += static_cast<double>(delta[i]) * delta[i];
  }
  t->energy_ = energy;
  t->patch_size_ = options.patch_size;
  return t;
}


absl::StatusOr<std::unique_ptr<EcqTensor>> EcqTensor::Prepare(const float* delta, int64_t rows,
                                                              int64_t cols,
                                                              const EcqOptions& options) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<EcqTensor> t, Begin(delta, rows, cols, options));
  const double energy = t->energy_;
  double max_abs = 0.0;
  // The planes of one source matrix (the delta, or a residual after low-rank factors).
  auto add_planes = [&](const float* src, int rank,
                        std::shared_ptr<const internal::EcqFactors> factors) {
    t->planes_.push_back(internal::BuildEcqPlane(src, rows, cols, EcqTransform::kDct,
                                                 options.patch_size, rank, factors, &max_abs));
    if (options.try_identity) {
      t->planes_.push_back(internal::BuildEcqPlane(src, rows, cols, EcqTransform::kIdentity, 1,
                                                   rank, factors, &max_abs));
    }
  };
  add_planes(delta, 0, nullptr);
  const std::vector<int> ranks = internal::EcqCandidateRanks(rows, cols, options);
  if (!ranks.empty() && energy > 0.0) {
    DS_ASSIGN_OR_RETURN(internal::EcqFactors top,
                        internal::TopEcqFactors(delta, rows, cols, ranks.back()));
    std::vector<float> residual;
    for (int rank : ranks) {
      auto f = std::make_shared<const internal::EcqFactors>(
          internal::TruncateEcqFactors(top, rank, rows));
      internal::EcqResidual(delta, rows, cols, *f, &residual);
      add_planes(residual.data(), rank, f);
    }
  }
  t->max_abs_ = max_abs;
  return t;
}

EcqTrial EcqTensor::Evaluate(float step, int sample, const EcqTrial* fixed) const {
  return EvaluateRank(step, sample, fixed, -1);
}

EcqTrial EcqTensor::EvaluateRank(float step, int sample, const EcqTrial* fixed,
                                 int only_rank) const {
  // An odd stride: it does not keep hitting the same frequency of 2^k-sized patches.
  const uint64_t stride = sample <= 1 ? 1 : static_cast<uint64_t>(sample | 1);
  const double lambda = std::log(2.0) * step * step / 6.0;  // per bit
  const float inv = 1.0f / step;
  EcqTrial best;
  double best_j = -1.0;
  std::vector<uint64_t> hist(256);
  for (const auto& pl : planes_) {
    if (fixed && (pl->header.transform != fixed->transform || pl->header.rank != fixed->rank)) {
      continue;
    }
    if (only_rank >= 0 && pl->header.rank != only_rank) continue;
    const int64_t chunks = static_cast<int64_t>(pl->chunk_begin.size()) - 1;
    for (float r : kEcqRoundings) {
      if (fixed && r != fixed->rounding) continue;
      QuantStats st;
      double bytes = internal::kEcqFixedHeaderBytes + static_cast<double>(pl->factor_bytes);
      uint64_t seen_total = 0;
      bool chunks_done = false;
      if (pl->full_count > 0) {  // a summary: one pooled sample for all chunks
        std::fill(hist.begin(), hist.end(), 0);
        uint64_t esc = 0;
        internal::QuantizeSorted(pl->sorted, inv, r, &st, hist.data(), &esc);
        seen_total = pl->coef.size();
        bytes += internal::SampledPlaneBytes(hist.data(), seen_total, esc, pl->full_count,
                                             chunks);
        st.Scale(static_cast<double>(pl->full_count) / static_cast<double>(seen_total));
        chunks_done = true;
      }
      for (int64_t c = 0; c < chunks && !chunks_done; ++c) {
        std::fill(hist.begin(), hist.end(), 0);
        uint64_t esc = 0;
        const uint64_t b = pl->chunk_begin[c], e = pl->chunk_begin[c + 1];
        Quantize(pl->coef.data() + b, e - b, inv, r, &st, hist.data(), &esc, nullptr, nullptr,
                 stride);
        const uint64_t seen = (e - b + stride - 1) / stride;
        seen_total += seen;
        // The sample's entropy and escapes scale to the chunk; its table does not (scaled,
        // it would overrate sparse planes, the residuals after factors, at low rates).
        bytes += internal::SampledPlaneBytes(hist.data(), seen, esc, e - b, 1);
      }
      if (!chunks_done) {  // sampled sums scale to the whole tensor
        const double scale =
            static_cast<double>(pl->coef.size()) / static_cast<double>(seen_total);
        st.Scale(scale);
      }
      const double bias = st.BestBias();
      const double d = st.Distortion(step, bias, GainAt(st, step, bias, gain_weight_));
      const double j = d + lambda * 8.0 * bytes;
      if (best_j < 0 || j < best_j) {
        best_j = j;
        best.distortion = d;
        best.bytes = bytes;
        best.transform = pl->header.transform;
        best.rank = pl->header.rank;
        best.rounding = r;
      }
    }
  }
  return best;
}

namespace {

// The transform and rank a tensor is coded with at `step`. measure(s, rank) gives the
// size and error of the best (transform, rounding) of that rank at step s. A Lagrangian
// choice with the price of a byte that the transform and rounding are chosen with
// (Evaluate), the same in every tensor, so that rate control's common step still
// allocates at equal slopes: the rank with the lowest D + lambda R, factor bytes
// included, lambda = ln(2) s^2 / 6 per bit. Ranks are tried in increasing order, so a
// rank is added while its distortion drop per factor byte beats that slope; the search
// stops after two ranks that do not (D + lambda R is near convex in the rank) or at a
// rank whose factors alone cost more than the best so far. Measured at 0.25 bits per
// weight (relative delta error of the container, `deltactl compress --bits 0.25`):
// USE-lite 0.8529, faceres 0.8936, against 0.8601 and 0.8986 for the earlier rule
// (a rank kept when its error is below the plain transform's log-linear rate-distortion
// curve through steps s and 1.25 s, on the same rank grid). A cheaper byte favours
// factors: lambda at step s / 1.25 gave USE-lite 0.8446 but faceres 0.9034; slopes
// measured per tensor (secants of its own curve toward s / 1.25 or 1.25 s) differ
// between tensors, which then no longer meet at equal slopes: USE-lite 0.931, 0.919.
template <typename Measure>
EcqTrial PickRank(const std::vector<std::unique_ptr<internal::EcqPlane>>& planes, float step,
                  const Measure& measure) {
  EcqTrial best = measure(step, 0);
  const double lambda = std::log(2.0) * step * step / 6.0 * 8.0;  // per byte
  double best_j = best.distortion + lambda * best.bytes;
  int misses = 0;
  for (const auto& p : planes) {  // in increasing rank
    const int rank = p->header.rank;
    if (rank == 0 || p->header.transform != EcqTransform::kDct) continue;  // once per rank
    if (lambda * static_cast<double>(p->factor_bytes) >= best_j || misses == 2) break;
    const EcqTrial t = measure(step, rank);
    const double j = t.distortion + lambda * t.bytes;
    if (j < best_j) {
      best_j = j;
      best = t;
      misses = 0;
    } else {
      ++misses;
    }
  }
  return best;
}

}  // namespace

absl::Status EcqTensor::CheckStep(float step) const {
  if (!std::isfinite(step) || !(step > 0.0f) || step >= kEcqMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat("ecq step ", step, " not in (0, 2^96)"));
  }
  if (max_abs_ / step >= kEcqMaxCode) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq step ", step, " too small for coefficients up to ", max_abs_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> EcqTensor::Encode(float step, EcqTrial* trial,
                                                        const EcqTrial* fixed) const {
  if (summary_) {
    return absl::FailedPreconditionError("ecq: a summary codes with Choose and EncodeDelta");
  }
  DS_RETURN_IF_ERROR(CheckStep(step));
  // The choice from the same estimates as rate control's search (Choose), so that the
  // step it plans is the step at which the coded choice meets the target.
  return EncodeChoice(step, fixed != nullptr ? Evaluate(step, 1, fixed) : Choose(step), trial);
}

EcqTrial EcqTensor::Choose(float step, int sample) const {
  auto measure = [&](float s, int rank) { return EvaluateRank(s, sample, nullptr, rank); };
  return PickRank(planes_, step, measure);
}

absl::StatusOr<std::vector<uint8_t>> EcqTensor::EncodeChoice(float step, const EcqTrial& choice,
                                                              EcqTrial* trial) const {
  const internal::EcqPlane* pl = nullptr;
  for (const auto& p : planes_) {
    if (p->header.transform == choice.transform && p->header.rank == choice.rank) pl = p.get();
  }
  if (pl == nullptr) {
    return absl::InvalidArgumentError("ecq: the fixed transform was not prepared");
  }
  DS_ASSIGN_OR_RETURN(std::vector<uint8_t> out,
                      internal::EncodeEcqPlane(*pl, step, choice.rounding, gain_weight_, trial));
  if (trial) {
    trial->transform = choice.transform;
    trial->rank = choice.rank;
    trial->rounding = choice.rounding;
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> EncodeEcqMatrix(const float* delta, int64_t rows,
                                                     int64_t cols, float step,
                                                     const EcqOptions& options) {
  DS_ASSIGN_OR_RETURN(auto t, EcqTensor::Prepare(delta, rows, cols, options));
  return t->Encode(step);
}

// ---------------------------------------------------------------------------------------
// Decode

namespace {

// Decodes the chunks of one payload, in order, handing out blocks of finished rows.
class EcqDecoder {
 public:
  EcqDecoder(const ParsedEcq& pe, absl::Span<const uint8_t> payload)
      : pe_(pe), payload_(payload) {
    const EcqHeader& h = pe.header;
    for (int z = 0; z < 255; ++z) {
      const int32_t q = (z & 1) ? -((z + 1) / 2) : z / 2;
      lut_[z] = q == 0 ? 0.0f
                       : std::copysign((static_cast<float>(std::abs(q)) - h.bias) * h.step,
                                       static_cast<float>(q));
    }
    lut_[255] = 0.0f;
    if (h.transform == EcqTransform::kDct) basis_ = std::make_unique<internal::DctBasis>(h.patch_size);
  }

  // Reads the low-rank factors, if any (after ParseEcqPayload checked them).
  absl::Status Init() {
    if (pe_.header.rank == 0) return absl::OkStatus();
    DS_ASSIGN_OR_RETURN(factors_, internal::ParseEcqFactors(payload_.subspan(pe_.factor_offset),
                                                            pe_.header.rows, pe_.header.cols));
    vf_ = internal::EcqRightFactor(factors_, pe_.header.cols);
    return absl::OkStatus();
  }

  // Decodes chunk c and calls emit(r0, r1, rows) for each block of rows [r0, r1) it
  // finishes, in order; `rows` holds them with row stride cols.
  template <typename Emit>
  absl::Status DecodeChunk(int64_t c, const Emit& emit) {
    const EcqHeader& h = pe_.header;
    DS_RETURN_IF_ERROR(Load(c));
    const int64_t r_begin = c * h.chunk_rows;
    const int64_t r_end = std::min(h.rows, r_begin + h.chunk_rows);
    if (h.transform == EcqTransform::kIdentity) {
      // With factors, blocks of rows: the low-rank kernel reuses its tile of the right
      // factor across the block's rows.
      const int64_t block = h.rank > 0 ? kLowRankRowBlock : 1;
      rows_buf_.resize(static_cast<size_t>(block * h.cols));
      for (int64_t r = r_begin; r < r_end; r += block) {
        const int64_t r1 = std::min(r_end, r + block);
        Dequantize(static_cast<uint64_t>((r1 - r) * h.cols), rows_buf_.data());
        AddLowRank(r, r1, rows_buf_.data());
        emit(r, r1, rows_buf_.data());
      }
      return absl::OkStatus();
    }
    const int p = h.patch_size;
    const int64_t pcols = CeilDiv(h.cols, p);
    rows_buf_.resize(static_cast<size_t>(p) * h.cols);
    coef_.resize(static_cast<size_t>(p) * p);
    tmp_.resize(coef_.size());
    for (int64_t r0 = r_begin; r0 < r_end; r0 += p) {
      const int hgt = static_cast<int>(std::min<int64_t>(p, r_end - r0));
      for (int64_t pc = 0; pc < pcols; ++pc) {
        const int64_t c0 = pc * p;
        const int w = static_cast<int>(std::min<int64_t>(p, h.cols - c0));
        Dequantize(static_cast<uint64_t>(p) * p, coef_.data());
        float* d = rows_buf_.data() + c0;
        if (hgt == p && w == p) {
          internal::InverseDct2d(*basis_, coef_.data(), p, d, h.cols);
        } else {
          internal::InverseDct2d(*basis_, coef_.data(), p, tmp_.data(), p);
          for (int r = 0; r < hgt; ++r) std::memcpy(d + r * h.cols, &tmp_[r * p], sizeof(float) * w);
        }
      }
      AddLowRank(r0, r0 + hgt, rows_buf_.data());
      emit(r0, r0 + hgt, rows_buf_.data());
    }
    return absl::OkStatus();
  }

 private:
  // Adds rows [r0, r1) of the low-rank part to `rows` (row stride cols).
  void AddLowRank(int64_t r0, int64_t r1, float* rows) const {
    if (factors_.rank == 0) return;
    internal::AddEcqLowRankRows(factors_, vf_.data(), r0, r1, pe_.header.cols, rows);
  }

  // Entropy-decodes chunk c into symbols_ and checks its escapes.
  absl::Status Load(int64_t c) {
    const uint64_t begin = pe_.chunk_offset[c], end = pe_.chunk_offset[c + 1];
    const uint8_t* b = payload_.data() + begin;
    const uint64_t len = end - begin;  // >= 4, checked by ParseEcqPayload
    const uint64_t rans_len = common::DecodeFixed32(b);
    if (rans_len > len - 4 || (len - 4 - rans_len) % 4 != 0) {
      return absl::DataLossError(absl::StrCat("ecq chunk ", c, ": bad rANS length ", rans_len));
    }
    symbols_.resize(internal::EcqChunkSymbols(pe_.header, c));
    absl::Status s = internal::RansDecode(absl::MakeConstSpan(b + 4, rans_len),
                                          absl::MakeSpan(symbols_));
    if (!s.ok()) return absl::DataLossError(absl::StrCat("ecq chunk ", c, ": ", s.message()));
    const uint64_t n_esc = (len - 4 - rans_len) / 4;
    const uint64_t count = static_cast<uint64_t>(
        std::count(symbols_.begin(), symbols_.end(), internal::kEcqEscape));
    if (count != n_esc) {
      return absl::DataLossError(absl::StrCat("ecq chunk ", c, ": ", count,
                                              " escape symbols but ", n_esc, " escaped codes"));
    }
    escapes_.resize(n_esc);
    for (uint64_t i = 0; i < n_esc; ++i) {
      const int32_t q = static_cast<int32_t>(common::DecodeFixed32(b + 4 + rans_len + 4 * i));
      const int64_t m = std::abs(static_cast<int64_t>(q));
      if (m > static_cast<int64_t>(kEcqMaxCode) || 2 * m - (q < 0) < internal::kEcqEscape) {
        return absl::DataLossError(absl::StrCat("ecq chunk ", c, ": bad escaped code ", q));
      }
      escapes_[i] = std::copysign((static_cast<float>(m) - pe_.header.bias) * pe_.header.step,
                                  static_cast<float>(q));
    }
    sym_pos_ = 0;
    esc_pos_ = 0;
    return absl::OkStatus();
  }

  // The next n coefficient values. Load checked the symbol and escape counts.
  void Dequantize(uint64_t n, float* out) {
    const uint8_t* s = symbols_.data() + sym_pos_;
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t z = s[i];
      out[i] = z == internal::kEcqEscape ? escapes_[esc_pos_++] : lut_[z];
    }
    sym_pos_ += n;
  }

  const ParsedEcq& pe_;
  absl::Span<const uint8_t> payload_;
  float lut_[256];
  std::unique_ptr<internal::DctBasis> basis_;
  internal::EcqFactors factors_;
  std::vector<float> vf_;  // dequantized right factor, rank x cols
  std::vector<uint8_t> symbols_;
  std::vector<float> escapes_, rows_buf_, coef_, tmp_;
  uint64_t sym_pos_ = 0, esc_pos_ = 0;
};

}  // namespace

absl::Status DecodeEcqMatrix(absl::Span<const uint8_t> payload, int64_t rows, int64_t cols,
                             float* out) {
  DS_ASSIGN_OR_RETURN(ParsedEcq pe, internal::ParseEcqPayload(payload, rows, cols));
  if (out == nullptr) return absl::InvalidArgumentError("output buffer is null");
  EcqDecoder dec(pe, payload);
  DS_RETURN_IF_ERROR(dec.Init());
  const int64_t chunks = internal::EcqNumChunks(pe.header);
  for (int64_t c = 0; c < chunks; ++c) {
    DS_RETURN_IF_ERROR(dec.DecodeChunk(c, [&](int64_t r0, int64_t r1, const float* src) {
      std::memcpy(out + r0 * cols, src, sizeof(float) * (r1 - r0) * cols);
    }));
  }
  return absl::OkStatus();
}

absl::Status DecodeEcqMatrixMergeRows(absl::Span<const uint8_t> payload, int64_t rows,
                                      int64_t cols, int64_t row_begin, int64_t row_end,
                                      const uint8_t* base, DType base_dtype, DType out_dtype,
                                      uint8_t* out, const RowsDoneFn& on_rows,
                                      int64_t* saturated) {
  DS_ASSIGN_OR_RETURN(ParsedEcq pe, internal::ParseEcqPayload(payload, rows, cols));
  DS_RETURN_IF_ERROR(internal::CheckMergeRowsArgs(base, out, rows, row_begin, row_end));
  if (row_begin == row_end) return absl::OkStatus();
  EcqDecoder dec(pe, payload);
  DS_RETURN_IF_ERROR(dec.Init());
  const int64_t cr = pe.header.chunk_rows;
  const size_t bsz = DTypeSize(base_dtype), osz = DTypeSize(out_dtype);
  std::vector<float> scratch(static_cast<size_t>(cols));
  int64_t clamped = 0;
  for (int64_t c = row_begin / cr; c < CeilDiv(row_end, cr); ++c) {
    DS_RETURN_IF_ERROR(dec.DecodeChunk(c, [&](int64_t r0, int64_t r1, const float* src) {
      const int64_t a = std::max(r0, row_begin), b = std::min(r1, row_end);
      if (a >= b) return;
      for (int64_t r = a; r < b; ++r) {
        clamped += internal::MergeRow(base + r * cols * bsz, base_dtype, src + (r - r0) * cols,
                                      cols, out_dtype, out + r * cols * osz, scratch.data());
      }
      if (on_rows) on_rows(a, b);
    }));
  }
  if (saturated != nullptr) *saturated += clamped;
  return absl::OkStatus();
}

int64_t EcqChunkRows(absl::Span<const uint8_t> payload) {
  if (payload.size() < internal::kEcqFixedHeaderBytes ||
      std::memcmp(payload.data(), internal::kEcqMagic, 4) != 0) {
    return 0;
  }
  return common::DecodeFixed32(payload.data() + 24);
}

}  // namespace deltaserve::codec
