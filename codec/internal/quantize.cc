#include "codec/internal/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "codec/internal/fp16.h"

// The hand-vectorized x86-64-v3 kernels (GCC on x86-64; other builds keep the portable
// loops, whose x86-64-v3 clones give the same bits).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DS_QUANT_AVX2 1
#include <immintrin.h>
#else
#define DS_QUANT_AVX2 0
#endif

namespace deltaserve::codec::internal {
namespace {

float Bf16Trunc(float x) { return BitsFloat(FloatBits(x) & 0xffff0000u); }
float Bf16Nearest(float x) { return Bf16ToFloat(FloatToBf16(x)); }

// One bf16 ulp away from zero (x is a bf16 value).
float Bf16AwayFromZero(float x) {
  if (x == 0.0f) return std::copysign(BitsFloat(0x00010000u), x);
  return BitsFloat(FloatBits(x) + 0x00010000u);
}

// Scale that makes offset + (levels - 1) * scale reach `hi`, rounded up to bf16 and
// bumped until the float evaluation of the top level really covers `hi`.
float CoveringScale(float offset, float hi, int levels) {
  if (!(hi > offset) || levels <= 1) return 0.0f;
  float scale = Bf16Up((hi - offset) / static_cast<float>(levels - 1));
  for (int i = 0; i < 4 && offset + static_cast<float>(levels - 1) * scale < hi; ++i) {
    scale = Bf16AwayFromZero(scale);
  }
  return scale;
}

QuantParams RangeParams(float lo, float hi, int levels) {
  QuantParams qp;
  qp.offset = Bf16Down(lo);
  qp.scale = CoveringScale(qp.offset, hi, levels);
  return qp;
}

// Step of the MSE-optimal uniform quantizer of a unit Gaussian with 2^b levels, b = 1..8
// (Hui & Neuhoff, "Asymptotic analysis of optimal fixed-rate uniform scalar
// quantization", IEEE Trans. IT 2001, Table I; Max 1960 for b <= 5).
constexpr float kGaussianStep[9] = {0.0f,    1.596f,  0.9957f, 0.5860f, 0.3352f,
                                    0.1881f, 0.1041f, 0.0569f, 0.0308f};

// One pass over v with parameters qp: the squared error, and the sums of the
// least-squares fit of v against the assigned codes. Float lanes, fixed order: the
// same bits on every call on a given machine.
struct PassSums {
  double err = 0, sq = 0, sqq = 0, sv = 0, sqv = 0;
};

// Round half to even. GCC (and clang >= 15) have the builtin; clang 14, which builds the
// fuzz targets, gets nearbyintf (the same result under the default rounding mode).
#if defined(__clang__) && __clang_major__ < 15
inline float RoundEven(float x) { return std::nearbyintf(x); }
#else
inline float RoundEven(float x) { return __builtin_roundevenf(x); }
#endif

#if DS_QUANT_AVX2
// True on CPUs where the x86-64-v3 clones run (target_clones picks them the same way).
bool HasX86V3() {
  static const bool v3 = __builtin_cpu_supports("x86-64-v3");
  return v3;
}
#endif

// Lane accumulators of QuantPass: element i goes to lane i % kPassLanes.
constexpr int kPassLanes = 8;
struct PassLanes {
  float err[kPassLanes] = {}, sq[kPassLanes] = {}, sqq[kPassLanes] = {}, sv[kPassLanes] = {},
        sqv[kPassLanes] = {};
};

// Adds x to lane l. Inlined into each caller, so that the caller's target decides the
// fused multiply-adds (x86-64-v3: offset + q * scale, d * d, q * q and q * x are fused).
__attribute__((always_inline)) inline void AccumulateLane(PassLanes& a, int l, float x, float top,
                                                          float offset, float scale, float inv) {
  float q = RoundEven((x - offset) * inv);
  q = std::min(std::max(q, 0.0f), top);
  const float d = x - (offset + q * scale);
  a.err[l] += d * d;
  a.sq[l] += q;
  a.sqq[l] += q * q;
  a.sv[l] += x;
  a.sqv[l] += q * x;
}

// The elements [i, n) (fewer than kPassLanes) into lanes 0.., then the lanes summed in
// double in lane order.
__attribute__((always_inline)) inline PassSums FinishPass(PassLanes& a, const float* v, int i,
                                                          int n, float top, float offset,
                                                          float scale, float inv) {
  for (int l = 0; i < n; ++i, ++l) AccumulateLane(a, l, v[i], top, offset, scale, inv);
  PassSums s;
  for (int l = 0; l < kPassLanes; ++l) {
    s.err += a.err[l];
    s.sq += a.sq[l];
    s.sqq += a.sqq[l];
    s.sv += a.sv[l];
    s.sqv += a.sqv[l];
  }
  return s;
}

__attribute__((target_clones("arch=x86-64-v3", "default"))) PassSums QuantPassPortable(
    const float* v, int n, float top, float offset, float scale) {
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  PassLanes a;
  int i = 0;
  for (; i + kPassLanes <= n; i += kPassLanes) {
    for (int l = 0; l < kPassLanes; ++l) AccumulateLane(a, l, v[i + l], top, offset, scale, inv);
  }
  return FinishPass(a, v, i, n, top, offset, scale, inv);
}

#if DS_QUANT_AVX2
// QuantPassPortable's x86-64-v3 clone, the eight lanes in one AVX2 register: GCC 12
// leaves that clone scalar (it does not vectorize roundeven). Every lane does the same
// operations in the same order with the same fused multiply-adds, so the sums are the
// same bits: _mm256_max_ps(0, q) = (0 > q ? 0 : q) = std::max(q, 0.0f) and
// _mm256_min_ps(top, q) = (top < q ? top : q) = std::min(q, top), NaN and -0 included.
__attribute__((target("arch=x86-64-v3"))) PassSums QuantPassAvx2(const float* v, int n, float top,
                                                                 float offset, float scale) {
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  const __m256 vinv = _mm256_set1_ps(inv), voff = _mm256_set1_ps(offset),
               vscale = _mm256_set1_ps(scale), vtop = _mm256_set1_ps(top),
               zero = _mm256_setzero_ps();
  __m256 err = zero, sq = zero, sqq = zero, sv = zero, sqv = zero;
  int i = 0;
  for (; i + kPassLanes <= n; i += kPassLanes) {
    const __m256 x = _mm256_loadu_ps(v + i);
    __m256 q = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(x, voff), vinv),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(vtop, _mm256_max_ps(zero, q));
    const __m256 d = _mm256_sub_ps(x, _mm256_fmadd_ps(q, vscale, voff));
    err = _mm256_fmadd_ps(d, d, err);
    sq = _mm256_add_ps(sq, q);
    sqq = _mm256_fmadd_ps(q, q, sqq);
    sv = _mm256_add_ps(sv, x);
    sqv = _mm256_fmadd_ps(q, x, sqv);
  }
  PassLanes a;
  _mm256_storeu_ps(a.err, err);
  _mm256_storeu_ps(a.sq, sq);
  _mm256_storeu_ps(a.sqq, sqq);
  _mm256_storeu_ps(a.sv, sv);
  _mm256_storeu_ps(a.sqv, sqv);
  return FinishPass(a, v, i, n, top, offset, scale, inv);
}
#endif

// One pass over v with parameters qp (see PassSums).
PassSums QuantPass(const float* v, int n, float top, float offset, float scale) {
#if DS_QUANT_AVX2
  if (HasX86V3()) return QuantPassAvx2(v, n, top, offset, scale);
#endif
  return QuantPassPortable(v, n, top, offset, scale);
}

struct Moments {
  float lo = 0, hi = 0;
  double sum = 0, sum2 = 0;
};

// Min, max, sum and sum of squares: eight float lanes (element i in lane i % 8), then
// the lanes and the tail in fixed order. `m` holds the lanes' start (every lane v[0]).
struct MomentLanes {
  float lo[kPassLanes], hi[kPassLanes], s1[kPassLanes] = {}, s2[kPassLanes] = {};
};

__attribute__((always_inline)) inline Moments FinishMoments(const MomentLanes& a, const float* v,
                                                            int i, int n) {
  Moments m;
  m.lo = a.lo[0];
  m.hi = a.hi[0];
  for (int l = 0; l < kPassLanes; ++l) {
    m.lo = std::min(m.lo, a.lo[l]);
    m.hi = std::max(m.hi, a.hi[l]);
    m.sum += a.s1[l];
    m.sum2 += a.s2[l];
  }
  for (; i < n; ++i) {
    m.lo = std::min(m.lo, v[i]);
    m.hi = std::max(m.hi, v[i]);
    m.sum += v[i];
    m.sum2 += static_cast<double>(v[i]) * v[i];
  }
  return m;
}

__attribute__((target_clones("arch=x86-64-v3", "default"))) Moments ComputeMomentsPortable(
    const float* v, int n) {
  MomentLanes a;
  for (int l = 0; l < kPassLanes; ++l) a.lo[l] = a.hi[l] = v[0];
  int i = 0;
  for (; i + kPassLanes <= n; i += kPassLanes) {
    for (int l = 0; l < kPassLanes; ++l) {
      const float x = v[i + l];
      a.lo[l] = std::min(a.lo[l], x);
      a.hi[l] = std::max(a.hi[l], x);
      a.s1[l] += x;
      a.s2[l] += x * x;
    }
  }
  return FinishMoments(a, v, i, n);
}

#if DS_QUANT_AVX2
// ComputeMomentsPortable's lanes in one AVX2 register (same bits, see QuantPassAvx2):
// _mm256_min_ps(x, lo) = (x < lo ? x : lo) = std::min(lo, x), likewise for max, and
// x * x + s2 fused as in the x86-64-v3 clone.
__attribute__((target("arch=x86-64-v3"))) Moments ComputeMomentsAvx2(const float* v, int n) {
  __m256 lo = _mm256_set1_ps(v[0]), hi = lo, s1 = _mm256_setzero_ps(), s2 = s1;
  int i = 0;
  for (; i + kPassLanes <= n; i += kPassLanes) {
    const __m256 x = _mm256_loadu_ps(v + i);
    lo = _mm256_min_ps(x, lo);
    hi = _mm256_max_ps(x, hi);
    s1 = _mm256_add_ps(s1, x);
    s2 = _mm256_fmadd_ps(x, x, s2);
  }
  MomentLanes a;
  _mm256_storeu_ps(a.lo, lo);
  _mm256_storeu_ps(a.hi, hi);
  _mm256_storeu_ps(a.s1, s1);
  _mm256_storeu_ps(a.s2, s2);
  return FinishMoments(a, v, i, n);
}
#endif

Moments ComputeMoments(const float* v, int n) {
#if DS_QUANT_AVX2
  if (HasX86V3()) return ComputeMomentsAvx2(v, n);
#endif
  return ComputeMomentsPortable(v, n);
}

// Clipped mode: start from the better of min-max and the Gaussian-optimal grid for the
// patch's mean and standard deviation, then Lloyd steps restricted to uniform grids
// (with the codes fixed, the best offset and scale are the least-squares line through
// (code_i, v_i)) while the error drops, at most kSteps times.
QuantParams ClippedParams(const float* v, int n, int bits, float lo, float hi, double mean,
                          double sd) {
  const int levels = 1 << bits;
  const float top = static_cast<float>(levels - 1);
  QuantParams gauss;
  gauss.scale = Bf16Nearest(static_cast<float>(kGaussianStep[bits] * sd));
  gauss.offset = Bf16Nearest(static_cast<float>(mean - 0.5 * top * gauss.scale));
  QuantParams best;
  PassSums best_sums;
  best_sums.err = std::numeric_limits<double>::infinity();
  if (gauss.scale > 0.0f) {
    best = gauss;
    best_sums = QuantPass(v, n, top, gauss.offset, gauss.scale);
  }
  // At 1-2 bits the min-max grid is far too coarse to win (FORMAT.md); skip its pass.
  if (bits >= 3 || !(gauss.scale > 0.0f)) {
    const QuantParams mm = RangeParams(lo, hi, levels);
    const PassSums s = QuantPass(v, n, top, mm.offset, mm.scale);
    if (s.err < best_sums.err) {
      best = mm;
      best_sums = s;
    }
  }
  constexpr int kSteps = 3;
  for (int step = 0; step < kSteps; ++step) {
    const PassSums& s = best_sums;
    const double det = n * s.sqq - s.sq * s.sq;
    if (!(det > 0.0)) break;
    const double scale = (n * s.sqv - s.sq * s.sv) / det;
    if (!(scale > 0.0)) break;
    QuantParams qp;
    qp.scale = Bf16Nearest(static_cast<float>(scale));
    qp.offset = Bf16Nearest(static_cast<float>((s.sv - scale * s.sq) / n));
    if (!(qp.scale > 0.0f) || !std::isfinite(qp.offset)) break;
    const PassSums next = QuantPass(v, n, top, qp.offset, qp.scale);
    if (!(next.err < best_sums.err)) break;
    best = qp;
    best_sums = next;
  }
  return best;
}

}  // namespace

int NumStoredParams(Quantizer mode) { return mode == Quantizer::kSymmetric ? 1 : 2; }

float Bf16Down(float x) {
  const float t = Bf16Trunc(x);  // toward zero
  if (t == x || x > 0.0f) return t;
  return Bf16AwayFromZero(t);
}

float Bf16Up(float x) {
  const float t = Bf16Trunc(x);
  if (t == x || x < 0.0f) return t;
  return Bf16AwayFromZero(t);
}

QuantParams ChooseQuantParams(const float* v, int n, int bits, Quantizer mode) {
  if (n <= 0) return QuantParams{};
  const int levels = 1 << bits;
  const Moments m = ComputeMoments(v, n);
  const float lo = m.lo, hi = m.hi;
  switch (mode) {
    case Quantizer::kSymmetric: {
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      QuantParams qp;
      qp.scale = Bf16Up(2.0f * amax / static_cast<float>(levels - 1));
      qp.offset = -0.5f * static_cast<float>(levels - 1) * qp.scale;
      // The top level -offset must cover amax; bump the scale if float rounding missed.
      for (int i = 0; i < 4 && -qp.offset < amax; ++i) {
        qp.scale = Bf16AwayFromZero(qp.scale);
        qp.offset = -0.5f * static_cast<float>(levels - 1) * qp.scale;
      }
      return qp;
    }
    case Quantizer::kMinMax:
      return RangeParams(lo, hi, levels);
    case Quantizer::kClipped:
      return ClippedParams(v, n, bits, lo, hi, m.sum / n,
                           std::sqrt(std::max(0.0, m.sum2 / n - (m.sum / n) * (m.sum / n))));
  }
  return QuantParams{};
}

namespace {

__attribute__((always_inline)) inline uint8_t QuantizeOne(float x, float top, float offset,
                                                          float inv) {
  float q = RoundEven((x - offset) * inv);
  q = std::min(std::max(q, 0.0f), top);
  return static_cast<uint8_t>(static_cast<int>(q));
}

__attribute__((target_clones("arch=x86-64-v3", "default"))) void QuantizeValuesPortable(
    const float* v, int n, float top, float offset, float inv, uint8_t* codes) {
  for (int i = 0; i < n; ++i) codes[i] = QuantizeOne(v[i], top, offset, inv);
}

#if DS_QUANT_AVX2
// QuantizeValuesPortable eight values at a time (see QuantPassAvx2 for why the same
// bits); the integer conversion truncates like the scalar cast, and the low byte of
// each 32-bit code is kept.
__attribute__((target("arch=x86-64-v3"))) void QuantizeValuesAvx2(const float* v, int n, float top,
                                                                  float offset, float inv,
                                                                  uint8_t* codes) {
  const __m256 vinv = _mm256_set1_ps(inv), voff = _mm256_set1_ps(offset),
               vtop = _mm256_set1_ps(top), zero = _mm256_setzero_ps();
  const __m256i low_bytes =
      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 q = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + i), voff), vinv),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(vtop, _mm256_max_ps(zero, q));
    const __m256i b = _mm256_shuffle_epi8(_mm256_cvttps_epi32(q), low_bytes);
    const __m128i packed =
        _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), packed);
  }
  for (; i < n; ++i) codes[i] = QuantizeOne(v[i], top, offset, inv);
}
#endif

}  // namespace

void QuantizeValues(const float* v, int n, int bits, const QuantParams& qp, uint8_t* codes) {
  const float top = static_cast<float>((1 << bits) - 1);
  const float inv = qp.scale > 0.0f ? 1.0f / qp.scale : 0.0f;
#if DS_QUANT_AVX2
  if (HasX86V3()) return QuantizeValuesAvx2(v, n, top, qp.offset, inv, codes);
#endif
  QuantizeValuesPortable(v, n, top, qp.offset, inv, codes);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
DequantizeCodes(const uint8_t* codes, int n, float offset, float scale, float* out) {
  for (int i = 0; i < n; ++i) out[i] = offset + static_cast<float>(codes[i]) * scale;
}

#if DS_QUANT_AVX2
namespace {

// out[i] = lut[bit i of packed] for i < n16 (a multiple of 16): one mask blend per 16.
__attribute__((target("avx512f"))) void SelectBits1Avx512(const uint8_t* packed, int n16,
                                                          const float lut[2], float* out) {
  const __m512 zero = _mm512_set1_ps(lut[0]), one = _mm512_set1_ps(lut[1]);
  for (int i = 0; i < n16; i += 16) {
    const __mmask16 bits = static_cast<__mmask16>(packed[i / 8] | (packed[i / 8 + 1] << 8));
    _mm512_storeu_ps(out + i, _mm512_mask_blend_ps(bits, zero, one));
  }
}

}  // namespace
#endif  // DS_QUANT_AVX2

void DequantizeBits1(const uint8_t* packed, int n, float offset, float scale, float* out) {
  const uint8_t codes[2] = {0, 1};
  float lut[2];
  DequantizeCodes(codes, 2, offset, scale, lut);
  int i = 0;
#if DS_QUANT_AVX2
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) {
    i = n & ~15;
    SelectBits1Avx512(packed, i, lut, out);
  }
#endif
  for (; i < n; ++i) out[i] = lut[(packed[i >> 3] >> (i & 7)) & 1];
}

double QuantizationSquaredError(const float* v, int n, int bits, const QuantParams& qp) {
  return QuantPass(v, n, static_cast<float>((1 << bits) - 1), qp.offset, qp.scale).err;
}

}  // namespace deltaserve::codec::internal
