// Encoder side of codec v2 (codec/delta_ecq.h), shared by the exhaustive encoder
// (EcqTensor::Prepare: every candidate's coefficients kept) and the summary encoder
// (EcqTensor::Summarize: sampled coefficients, each tensor coded once at the planned
// step from its delta, codec/ecq_summary.cc): the quantizer and its sums, the size
// estimate, and one transform's coefficients ("plane") with its coding.
#ifndef DELTASERVE_CODEC_INTERNAL_ECQ_ENCODE_H_
#define DELTASERVE_CODEC_INTERNAL_ECQ_ENCODE_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/delta_ecq.h"
#include "codec/internal/ecq_lowrank.h"
#include "codec/internal/ecq_payload.h"

namespace deltaserve::codec::internal {

// Largest |code| (an escape holds an i32) and largest step (|code| x step stays finite).
inline constexpr double kEcqMaxCode = double{1 << 30};
inline constexpr float kEcqMaxStep = 7.9228162514264338e28f;  // 2^96
// Rounding offsets r tried per tensor: 1/2 is plain rounding, smaller widens the dead
// zone (better at low rates, where most coefficients are below the step).
inline constexpr float kEcqRoundings[] = {0.5f, 0.42f, 0.34f, 0.26f, 0.18f};

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
double GainAt(const QuantStats& st, float step, double bias, double w);

// Quantizes c[i] for i = 0, stride, 2 stride ... < n at step 1 / inv_step with rounding
// offset r, adding to *st, counting symbols into hist[256] and escapes into *escapes.
// With `symbols`, also writes symbols[i] (and appends escaped codes to `escaped`).
void Quantize(const float* c, uint64_t n, float inv_step, float r, QuantStats* st,
              uint64_t* hist, uint64_t* escapes, uint8_t* symbols,
              std::vector<int32_t>* escaped, uint64_t stride = 1);

// A summary plane's sample sorted for QuantizeSorted: its values ordered by |value|
// (stable), and square_prefix[k] = the sum in double of value[j]^2 for j < k, in that
// order (square_prefix.size() = value.size() + 1).
struct EcqSortedSample {
  std::vector<float> value;
  std::vector<double> square_prefix;
};
EcqSortedSample SortEcqSample(const std::vector<float>& values);

// Quantize's sums, histogram and escape count for every value of `sample` (stride 1,
// no symbols), in O(log n + nonzero codes): the zero codes are a prefix of the sorted
// sample, their squares a prefix sum. The histogram, escape and nonzero counts are
// Quantize's exactly; the double sums are the same terms added in another order (a
// relative difference of about 1e-16). REQUIRES: values finite, inv_step >= 0.
void QuantizeSorted(const EcqSortedSample& sample, float inv_step, float r, QuantStats* st,
                    uint64_t* hist, uint64_t* escapes);

// The symbols (and escaped codes, appended to `escaped`) of Quantize at stride 1,
// without its sums or histogram: several times faster.
void QuantizeSymbols(const float* c, uint64_t n, float inv_step, float r, uint8_t* symbols,
                     std::vector<int32_t>* escaped);

// The largest |x[i]| for i < n, and m if that is larger (0 for n = 0 and m = 0).
// REQUIRES: no NaN. Exact (a maximum does not depend on the order): 8 lanes at a time.
float EcqMaxAbs(const float* x, uint64_t n, float m = 0.0f);

// Estimated bytes of one chunk of n symbols with histogram hist[256]: order-0 entropy,
// a frequency table, the escapes, the rANS length field and the chunk-table entry.
double ChunkBytes(const uint64_t* hist, uint64_t n, uint64_t escapes);

// Estimated bytes of a plane's symbols from a sample of n of its full_count symbols
// with histogram hist[256] and `escapes` escapes: the sample's order-0 entropy for
// every symbol, and ChunkBytes's per-chunk overhead for each of `chunks` chunks.
double SampledPlaneBytes(const uint64_t* hist, uint64_t n, uint64_t escapes,
                         uint64_t full_count, int64_t chunks);

// Ranks of low-rank factors worth trying on a rows x cols matrix: those whose int8
// factors cost about kEcqRankBits bits per weight (internal/ecq_lowrank.h: 1/16, then
// steps of 1/8 up to 1), at most a quarter of the smaller dim, each rank once. None without options.try_low_rank, for a matrix with a dim under 16 (nothing to
// gain) or a smaller dim over 2048 (the Gram eigenproblem would take minutes).
std::vector<int> EcqCandidateRanks(int64_t rows, int64_t cols, const EcqOptions& options);

// Coefficients of one transform in payload scan order: chunk after chunk; in a DCT
// chunk, patch after patch (row-major over the patch grid), each patch's p x p
// coefficients row-major in (u, v); in an identity chunk, its rows. A summary plane
// (EcqTensor::Summarize) holds a sample of them instead (`full_count` > 0).
struct EcqPlane {
  EcqHeader header;  // header.rank: 0, or the rank of `factors`
  std::shared_ptr<const EcqFactors> factors;
  uint64_t factor_bytes = 0;  // of the factor section
  std::vector<float> coef;
  std::vector<uint64_t> chunk_begin;  // index into coef of each chunk, then coef.size()
  uint64_t full_count = 0;            // summary: coefficients of the whole plane
  EcqSortedSample sorted;             // summary: coef sorted (SortEcqSample)
};

// The header (chunking) of a plane of `transform` with patch edge p (1: identity).
EcqHeader MakeEcqPlaneHeader(EcqTransform transform, int p, int64_t rows, int64_t cols);

// A plane's header, factors and chunk table, without coefficients.
std::unique_ptr<EcqPlane> NewEcqPlane(int64_t rows, int64_t cols, EcqTransform transform,
                                      int patch_size, int rank,
                                      std::shared_ptr<const EcqFactors> factors);

// residual[rows x cols] = delta - L, L the low-rank part of `f` as the decoder adds it
// (AddEcqLowRankRows).
void EcqResidual(const float* delta, int64_t rows, int64_t cols, const EcqFactors& f,
                 std::vector<float>* residual);

// The whole plane of src[rows x cols] (the delta, or its residual after `factors` of
// rank `rank`, 0: none) under `transform`; *max_abs is raised to its largest |value|.
// With `storage`, the plane's coefficients take over that vector's buffer (a caller's
// reused allocation; *storage is left empty).
std::unique_ptr<EcqPlane> BuildEcqPlane(const float* src, int64_t rows, int64_t cols,
                                        EcqTransform transform, int patch_size, int rank,
                                        std::shared_ptr<const EcqFactors> factors,
                                        double* max_abs, std::vector<float>* storage = nullptr);

// Codes a whole plane at `step` with rounding offset `rounding` and gain weight w
// (EcqOptions::gain_weight). `trial`, if given, receives the payload size and the
// squared error (coefficient domain); its other fields are left as they are. The bias,
// gain and error come from every stats_stride-th coefficient (1: all; the error is then
// an estimate); stats_stride 0 skips them (bias 0, gain 1, error 0: for size probes, as
// neither the symbols nor the sizes depend on them).
absl::StatusOr<std::vector<uint8_t>> EncodeEcqPlane(const EcqPlane& plane, float step,
                                                    float rounding, double gain_weight,
                                                    EcqTrial* trial, uint64_t stats_stride = 1);

// EncodeEcqPlane of a plane whose coefficients are coef[0, plane.chunk_begin.back())
// instead of plane.coef (an identity plane's are its source matrix: no copy).
absl::StatusOr<std::vector<uint8_t>> EncodeEcqCoefficients(const EcqPlane& plane,
                                                           const float* coef, float step,
                                                           float rounding, double gain_weight,
                                                           EcqTrial* trial,
                                                           uint64_t stats_stride = 1);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_ECQ_ENCODE_H_
