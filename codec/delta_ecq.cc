#include "codec/delta_ecq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "codec/internal/dct.h"
#include "codec/internal/dct_payload.h"
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

// A chunk holds at least this many symbols (whole 64-row units): fewer chunks, less
// rANS table overhead; more chunks, finer parallel merges.
constexpr uint64_t kMinChunkSymbols = uint64_t{1} << 17;
// Widest matrix coded (a 64-row unit must fit one rANS stream).
constexpr int64_t kMaxCols = int64_t{1} << 22;
// Largest |code| (an escape holds an i32) and largest step (|code| x step stays finite).
constexpr double kMaxCode = double{1 << 30};
constexpr float kMaxStep = 7.9228162514264338e28f;  // 2^96
// Rounding offsets r tried per tensor: 1/2 is plain rounding, smaller widens the dead
// zone (better at low rates, where most coefficients are below the step).
constexpr float kRoundings[] = {0.5f, 0.42f, 0.34f, 0.26f, 0.18f};

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Zigzag map of a code to an unsigned symbol value: 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4.
inline uint32_t Zigzag(int32_t q) {
  return q >= 0 ? 2u * static_cast<uint32_t>(q) : 2u * static_cast<uint32_t>(-q) - 1u;
}

// Sums over one quantization pass. Distortion with reconstruction (m - bias) s for a
// code of magnitude m > 0 at a = |c| / s is s^2 sum (a - m + bias)^2.
struct QuantStats {
  double zero_sq = 0.0;  // sum of c^2 over coefficients coded 0
  double sum_e = 0.0;    // sum of (a - m) over non-zero codes
  double sum_e2 = 0.0;   // sum of (a - m)^2 over non-zero codes
  double sum_m = 0.0;    // sum of m over non-zero codes
  double sum_m2 = 0.0;   // sum of m^2
  double sum_em = 0.0;   // sum of (a - m) m
  uint64_t nonzero = 0;

  void Add(const QuantStats& o) {
    zero_sq += o.zero_sq;
    sum_e += o.sum_e;
    sum_e2 += o.sum_e2;
    sum_m += o.sum_m;
    sum_m2 += o.sum_m2;
    sum_em += o.sum_em;
    nonzero += o.nonzero;
  }
  void Scale(double k) {
    zero_sq *= k;
    sum_e *= k;
    sum_e2 *= k;
    sum_m *= k;
    sum_m2 *= k;
    sum_em *= k;
    nonzero = static_cast<uint64_t>(std::llround(static_cast<double>(nonzero) * k));
  }
  // The bias minimizing the distortion, in [0, 1).
  double BestBias() const {
    if (nonzero == 0) return 0.0;
    return std::clamp(-sum_e / static_cast<double>(nonzero), 0.0, 0.99);
  }
  double Distortion(double step, double bias) const {
    const double n = static_cast<double>(nonzero);
    return zero_sq + step * step * (sum_e2 + 2.0 * bias * sum_e + n * bias * bias);
  }
  // In units of step^2, at gain 1: x = <c, c_hat>, y = ||c_hat||^2, e = ||c||^2.
  struct Moments {
    double x, y, e;
  };
  Moments MomentsAt(double step, double bias) const {
    return {sum_m2 + sum_em - bias * (sum_m + sum_e),
            sum_m2 - 2.0 * bias * sum_m + static_cast<double>(nonzero) * bias * bias,
            zero_sq / (step * step) + sum_m2 + 2.0 * sum_em + sum_e2};
  }
  // The reconstruction gain g (codes reconstructed as g (m - bias) s) of
  // EcqOptions::gain_weight w: it minimizes w e (1 - g x / e)^2 + g^2 (y - x^2 / e), the
  // error along the coefficients weighed w times the error across them:
  // g = w x / (y + (w - 1) x^2 / e). 1 for w = 1 and the distortion-minimizing bias; in
  // [1, kMaxGain] otherwise.
  double Gain(double step, double bias, double w) const {
    if (w == 1.0 || nonzero == 0) return 1.0;
    const Moments m = MomentsAt(step, bias);
    const double den = m.y + (w - 1.0) * m.x * m.x / m.e;
    if (!(m.x > 0.0 && den > 0.0 && m.e > 0.0)) return 1.0;
    const double g = w * m.x / den;
    return std::isfinite(g) ? std::clamp(g, 1.0, kMaxGain) : 1.0;
  }
  // Squared error with gain g: ||c||^2 - 2 g <c, c_hat> + g^2 ||c_hat||^2.
  double Distortion(double step, double bias, double g) const {
    if (g == 1.0) return Distortion(step, bias);
    const Moments m = MomentsAt(step, bias);
    return std::max(0.0, step * step * (m.e - 2.0 * g * m.x + g * g * m.y));
  }
  static constexpr double kMaxGain = 4.0;
};

// The reconstruction gain of a quantization pass's sums under gain weight w
// (QuantStats::Gain), 1 where the stored step would leave the decoder's range.
double GainAt(const QuantStats& st, float step, double bias, double w) {
  const double g = st.Gain(step, bias, w);
  return static_cast<double>(step) * g < static_cast<double>(kMaxStep) * 0.5 ? g : 1.0;
}

// Quantizes c[0, n) at step 1 / inv_step with rounding offset r, counting symbols into
// hist[256] and escapes into *escapes. With `symbols`, also writes them (and appends
// escaped codes to `escaped`).
void Quantize(const float* c, uint64_t n, float inv_step, float r, QuantStats* st,
              uint64_t* hist, uint64_t* escapes, uint8_t* symbols,
              std::vector<int32_t>* escaped, uint64_t stride = 1) {
  QuantStats s;
  uint64_t esc = 0;
  for (uint64_t i = 0; i < n; i += stride) {
    const float v = c[i];
    const float a = std::fabs(v) * inv_step;
    const float m = std::floor(a + r);
    uint8_t sym = 0;
    if (m == 0.0f) {
      s.zero_sq += static_cast<double>(v) * v;
    } else {
      const double e = static_cast<double>(a) - m;
      s.sum_e += e;
      s.sum_e2 += e * e;
      s.sum_m += m;
      s.sum_m2 += static_cast<double>(m) * m;
      s.sum_em += e * m;
      ++s.nonzero;
      const int32_t q = v < 0 ? -static_cast<int32_t>(m) : static_cast<int32_t>(m);
      const uint32_t z = Zigzag(q);
      if (z >= internal::kEcqEscape) {
        sym = internal::kEcqEscape;
        ++esc;
        if (escaped) escaped->push_back(q);
      } else {
        sym = static_cast<uint8_t>(z);
      }
    }
    ++hist[sym];
    if (symbols) symbols[i] = sym;
  }
  st->Add(s);
  *escapes += esc;
}

// Estimated bytes of one chunk: order-0 entropy of its symbols, a frequency table,
// the escapes, the rANS length field and the chunk-table entry.
double ChunkBytes(const uint64_t* hist, uint64_t n, uint64_t escapes) {
  double bits = 0.0;
  int used = 0;
  for (int i = 0; i < 256; ++i) {
    if (hist[i] == 0) continue;
    ++used;
    bits -= static_cast<double>(hist[i]) * std::log2(static_cast<double>(hist[i]) / n);
  }
  return bits / 8.0 + 8.0 + 2.0 * used + 4.0 * static_cast<double>(escapes) + 8.0;
}

// Rows decoded together in an identity chunk with factors (see EcqDecoder::DecodeChunk).
constexpr int64_t kLowRankRowBlock = 16;

// Largest smaller dim of a matrix that tries low-rank factors: the Gram eigenproblem
// costs ~(4/3) n^3 flops (n = 2048: ~11 GFlop, seconds on one core; 4096 would take a
// minute per tensor).
constexpr int64_t kMaxLowRankDim = 2048;

// Ranks of low-rank factors worth trying on a rows x cols matrix: those whose int8
// factors cost about 1/16, 1/4 and 1 bit per weight, at most a quarter of the smaller
// dim. None for a matrix with a dim under 16 (nothing to gain) or a smaller dim over
// kMaxLowRankDim.
std::vector<int> EcqCandidateRanks(int64_t rows, int64_t cols, const EcqOptions& options) {
  std::vector<int> ranks;
  const int64_t small = std::min(rows, cols);
  if (!options.try_low_rank || small < 16 || small > kMaxLowRankDim) return ranks;
  const double per_rank_bits = 8.0 * static_cast<double>(rows + cols);
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  for (double bits : {1.0 / 16, 1.0 / 4, 1.0}) {
    const int64_t r = std::min<int64_t>(
        {static_cast<int64_t>(bits * weights / per_rank_bits), small / 4, internal::kMaxEcqRank});
    if (r >= 1 && (ranks.empty() || r > ranks.back())) ranks.push_back(static_cast<int>(r));
  }
  return ranks;
}

}  // namespace

// Coefficients of one transform in payload scan order: chunk after chunk; in a DCT
// chunk, patch after patch (row-major over the patch grid), each patch's p x p
// coefficients row-major in (u, v); in an identity chunk, its rows.
struct EcqTensor::Plane {
  EcqHeader header;  // header.rank: 0, or the rank of `factors`
  std::shared_ptr<const internal::EcqFactors> factors;
  uint64_t factor_bytes = 0;  // of the factor section
  std::vector<float> coef;
  std::vector<uint64_t> chunk_begin;  // index into coef of each chunk, then coef.size()
};

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
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EcqTensor>> EcqTensor::Prepare(const float* delta, int64_t rows,
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

  auto make_header = [&](EcqTransform tr, int p) {
    EcqHeader h;
    h.transform = tr;
    h.patch_size = p;
    h.rows = rows;
    h.cols = cols;
    int64_t unit = std::lcm<int64_t>(p, 64);
    const int64_t padded_cols = CeilDiv(cols, p) * p;
    if (static_cast<uint64_t>(unit * padded_cols) > internal::kMaxRansSymbols) unit = p;
    const int64_t per_unit = unit * padded_cols;
    const int64_t units = std::max<int64_t>(1, CeilDiv(kMinChunkSymbols, per_unit));
    h.chunk_rows = std::min<int64_t>(unit * units, CeilDiv(rows, unit) * unit);
    return h;
  };
  auto finish = [](Plane* pl) {
    const int64_t chunks = internal::EcqNumChunks(pl->header);
    pl->chunk_begin.assign(1, 0);
    for (int64_t c = 0; c < chunks; ++c) {
      pl->chunk_begin.push_back(pl->chunk_begin.back() +
                                internal::EcqChunkSymbols(pl->header, c));
    }
  };
  double max_abs = 0.0;
  // The planes of one source matrix (the delta, or a residual after low-rank factors).
  auto add_planes = [&](const float* src, int rank,
                        std::shared_ptr<const internal::EcqFactors> factors) {
    const uint64_t factor_bytes =
        rank ? internal::EcqFactorBytes(rank, rows, cols) : uint64_t{0};
    {  // DCT plane
      auto pl = std::make_unique<Plane>();
      const int p = options.patch_size;
      pl->header = make_header(EcqTransform::kDct, p);
      pl->header.rank = rank;
      pl->factors = factors;
      pl->factor_bytes = factor_bytes;
      finish(pl.get());
      pl->coef.resize(pl->chunk_begin.back());
      const internal::DctBasis basis(p);
      std::vector<float> patch(static_cast<size_t>(p) * p);
      const int64_t prows = CeilDiv(rows, p), pcols = CeilDiv(cols, p);
      float* dst = pl->coef.data();
      for (int64_t pr = 0; pr < prows; ++pr) {
        for (int64_t pc = 0; pc < pcols; ++pc) {
          const int64_t r0 = pr * p, c0 = pc * p;
          const int h = static_cast<int>(std::min<int64_t>(p, rows - r0));
          const int w = static_cast<int>(std::min<int64_t>(p, cols - c0));
          std::fill(patch.begin(), patch.end(), 0.0f);
          for (int r = 0; r < h; ++r) {
            std::memcpy(&patch[r * p], src + (r0 + r) * cols + c0, sizeof(float) * w);
          }
          internal::ForwardDct2d(basis, patch.data(), p, dst, p);
          for (int k = 0; k < p * p; ++k) max_abs = std::max<double>(max_abs, std::fabs(dst[k]));
          dst += p * p;
        }
      }
      t->planes_.push_back(std::move(pl));
    }
    if (options.try_identity) {
      auto pl = std::make_unique<Plane>();
      pl->header = make_header(EcqTransform::kIdentity, 1);
      pl->header.rank = rank;
      pl->factors = factors;
      pl->factor_bytes = factor_bytes;
      finish(pl.get());
      pl->coef.assign(src, src + n);
      for (uint64_t i = 0; i < n; ++i) max_abs = std::max<double>(max_abs, std::fabs(src[i]));
      t->planes_.push_back(std::move(pl));
    }
  };
  add_planes(delta, 0, nullptr);
  const std::vector<int> ranks = EcqCandidateRanks(rows, cols, options);
  if (!ranks.empty() && energy > 0.0) {
    DS_ASSIGN_OR_RETURN(internal::EcqFactors top,
                        internal::TopEcqFactors(delta, rows, cols, ranks.back()));
    std::vector<float> residual(n), low(static_cast<size_t>(cols));
    for (int rank : ranks) {
      auto f = std::make_shared<const internal::EcqFactors>(
          internal::TruncateEcqFactors(top, rank, rows));
      const std::vector<float> vf = internal::EcqRightFactor(*f, cols);
      for (int64_t r = 0; r < rows; ++r) {
        std::fill(low.begin(), low.end(), 0.0f);
        internal::AddEcqLowRankRows(*f, vf.data(), r, r + 1, cols, low.data());
        for (int64_t c = 0; c < cols; ++c) residual[r * cols + c] = delta[r * cols + c] - low[c];
      }
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
    for (float r : kRoundings) {
      if (fixed && r != fixed->rounding) continue;
      QuantStats st;
      double bytes = internal::kEcqFixedHeaderBytes + static_cast<double>(pl->factor_bytes);
      uint64_t seen_total = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        std::fill(hist.begin(), hist.end(), 0);
        uint64_t esc = 0;
        const uint64_t b = pl->chunk_begin[c], e = pl->chunk_begin[c + 1];
        Quantize(pl->coef.data() + b, e - b, inv, r, &st, hist.data(), &esc, nullptr, nullptr,
                 stride);
        const uint64_t seen = (e - b + stride - 1) / stride;
        seen_total += seen;
        bytes += ChunkBytes(hist.data(), seen, esc) * static_cast<double>(e - b) / seen;
      }
      // Sampled sums scale to the whole tensor.
      const double scale =
          static_cast<double>(pl->coef.size()) / static_cast<double>(seen_total);
      st.Scale(scale);
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

absl::StatusOr<std::vector<uint8_t>> EcqTensor::Encode(float step, EcqTrial* trial,
                                                        const EcqTrial* fixed) const {
  if (!std::isfinite(step) || !(step > 0.0f) || step >= kMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat("ecq step ", step, " not in (0, 2^96)"));
  }
  if (max_abs_ / step >= kMaxCode) {
    return absl::InvalidArgumentError(
        absl::StrCat("ecq step ", step, " too small for coefficients up to ", max_abs_));
  }
  if (fixed != nullptr) return EncodeChoice(step, Evaluate(step, 1, fixed), trial);
  // Without factors (rank 0), coded at `step` and at 1.25 x `step`: two points of the
  // tensor's own rate-distortion curve, log D linear in bytes between them. A rank r > 0
  // is kept if its measured distortion is below that curve at its measured size (factor
  // bytes included): it beats the plain transform at the tensor's rate. (The high-rate
  // slope ln(2) s^2 / 6 underrates bytes at low rates, where most codes are 0, and
  // would pick factors that lose.)
  EcqTrial plain, plain2;
  DS_ASSIGN_OR_RETURN(std::vector<uint8_t> best,
                      EncodeChoice(step, EvaluateRank(step, 1, nullptr, 0), &plain));
  EcqTrial best_trial = plain;
  bool has_factors = false;
  for (const auto& p : planes_) has_factors |= p->header.rank > 0;
  if (has_factors && plain.distortion > 0.0) {
    const float step2 = std::min(step * 1.25f, kMaxStep * 0.5f);
    DS_RETURN_IF_ERROR(
        EncodeChoice(step2, EvaluateRank(step2, 1, nullptr, 0), &plain2).status());
    // d(log D) / d(bytes) of the plain curve; with no measurable slope (all codes 0 at
    // both steps) the high-rate slope stands in.
    double k = -std::log(2.0) * step * step / 6.0 * 8.0 / plain.distortion;
    if (plain2.bytes < plain.bytes && plain2.distortion > plain.distortion) {
      k = std::log(plain2.distortion / plain.distortion) / (plain2.bytes - plain.bytes);
    }
    double best_ratio = 1.0;
    for (const auto& p : planes_) {
      const int rank = p->header.rank;
      if (rank == 0 || p->header.transform != EcqTransform::kDct) continue;  // once per rank
      // Factors alone as large as the whole plain payload: not at this tensor's rate.
      if (static_cast<double>(p->factor_bytes) >= plain.bytes) continue;
      EcqTrial t;
      DS_ASSIGN_OR_RETURN(std::vector<uint8_t> out,
                          EncodeChoice(step, EvaluateRank(step, 1, nullptr, rank), &t));
      const double curve = plain.distortion * std::exp(k * (t.bytes - plain.bytes));
      if (t.distortion < best_ratio * curve) {
        best_ratio = t.distortion / curve;
        best = std::move(out);
        best_trial = t;
      }
    }
  }
  if (trial) *trial = best_trial;
  return best;
}

absl::StatusOr<std::vector<uint8_t>> EcqTensor::EncodeChoice(float step, const EcqTrial& choice,
                                                              EcqTrial* trial) const {
  const Plane* pl = nullptr;
  for (const auto& p : planes_) {
    if (p->header.transform == choice.transform && p->header.rank == choice.rank) pl = p.get();
  }
  if (pl == nullptr) {
    return absl::InvalidArgumentError("ecq: the fixed transform was not prepared");
  }
  const float inv = 1.0f / step;
  const int64_t chunks = static_cast<int64_t>(pl->chunk_begin.size()) - 1;
  // Pass 1: the bias of this choice.
  QuantStats st;
  std::vector<uint64_t> hist(256);
  uint64_t esc = 0;
  Quantize(pl->coef.data(), pl->coef.size(), inv, choice.rounding, &st, hist.data(), &esc,
           nullptr, nullptr);
  EcqHeader h = pl->header;
  h.bias = static_cast<float>(st.BestBias());
  // The quantizer's step times the reconstruction gain: what the decoder scales codes by.
  const double gain = GainAt(st, step, h.bias, gain_weight_);
  h.step = static_cast<float>(step * gain);
  // Pass 2: symbols, rANS streams and escapes per chunk.
  std::vector<uint8_t> body, symbols;
  std::vector<uint32_t> lengths;
  std::vector<int32_t> escaped;
  for (int64_t c = 0; c < chunks; ++c) {
    const uint64_t b = pl->chunk_begin[c], e = pl->chunk_begin[c + 1];
    symbols.resize(e - b);
    escaped.clear();
    QuantStats unused;
    Quantize(pl->coef.data() + b, e - b, inv, choice.rounding, &unused, hist.data(), &esc,
             symbols.data(), &escaped);
    std::vector<uint8_t> chunk(4);
    DS_RETURN_IF_ERROR(internal::RansEncode(symbols, &chunk));
    common::EncodeFixed(chunk.data(), chunk.size() - 4, 4);
    common::ByteWriter<std::vector<uint8_t>> w(&chunk);
    for (int32_t q : escaped) w.U32(static_cast<uint32_t>(q));
    if (chunk.size() > 0xffffffffu) return absl::InvalidArgumentError("ecq chunk over 4 GiB");
    lengths.push_back(static_cast<uint32_t>(chunk.size()));
    body.insert(body.end(), chunk.begin(), chunk.end());
  }
  std::vector<uint8_t> out;
  internal::AppendEcqHeader(h, lengths, &out);
  if (pl->factors) internal::AppendEcqFactors(*pl->factors, &out);
  out.insert(out.end(), body.begin(), body.end());
  if (trial) {
    *trial = choice;
    trial->bytes = static_cast<double>(out.size());
    trial->distortion = st.Distortion(step, h.bias, gain);
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
      if (m > static_cast<int64_t>(kMaxCode) || 2 * m - (q < 0) < internal::kEcqEscape) {
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
