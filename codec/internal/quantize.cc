#include "codec/internal/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "codec/internal/fp16.h"

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

__attribute__((target_clones("arch=x86-64-v3", "default"))) PassSums
QuantPass(const float* v, int n, float top, float offset, float scale) {
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  constexpr int kLanes = 8;
  float err[kLanes] = {}, sq[kLanes] = {}, sqq[kLanes] = {}, sv[kLanes] = {},
        sqv[kLanes] = {};
  auto accumulate = [&](int l, float x) __attribute__((always_inline)) {
    float q = RoundEven((x - offset) * inv);
    q = std::min(std::max(q, 0.0f), top);
    const float d = x - (offset + q * scale);
    err[l] += d * d;
    sq[l] += q;
    sqq[l] += q * q;
    sv[l] += x;
    sqv[l] += q * x;
  };
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) accumulate(l, v[i + l]);
  }
  for (int l = 0; i < n; ++i, ++l) accumulate(l, v[i]);
  PassSums s;
  for (int l = 0; l < kLanes; ++l) {
    s.err += err[l];
    s.sq += sq[l];
    s.sqq += sqq[l];
    s.sv += sv[l];
    s.sqv += sqv[l];
  }
  return s;
}

struct Moments {
  float lo = 0, hi = 0;
  double sum = 0, sum2 = 0;
};

// Min, max, sum and sum of squares in one vectorizable pass (float lanes, fixed order).
__attribute__((target_clones("arch=x86-64-v3", "default"))) Moments
ComputeMoments(const float* v, int n) {
  constexpr int kLanes = 8;
  float lo[kLanes], hi[kLanes], s1[kLanes] = {}, s2[kLanes] = {};
  for (int l = 0; l < kLanes; ++l) lo[l] = hi[l] = v[0];
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float x = v[i + l];
      lo[l] = std::min(lo[l], x);
      hi[l] = std::max(hi[l], x);
      s1[l] += x;
      s2[l] += x * x;
    }
  }
  Moments m;
  m.lo = lo[0];
  m.hi = hi[0];
  for (int l = 0; l < kLanes; ++l) {
    m.lo = std::min(m.lo, lo[l]);
    m.hi = std::max(m.hi, hi[l]);
    m.sum += s1[l];
    m.sum2 += s2[l];
  }
  for (; i < n; ++i) {
    m.lo = std::min(m.lo, v[i]);
    m.hi = std::max(m.hi, v[i]);
    m.sum += v[i];
    m.sum2 += static_cast<double>(v[i]) * v[i];
  }
  return m;
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

__attribute__((target_clones("arch=x86-64-v3", "default"))) void QuantizeValues(
    const float* v, int n, int bits, const QuantParams& qp, uint8_t* codes) {
  const float top = static_cast<float>((1 << bits) - 1);
  const float inv = qp.scale > 0.0f ? 1.0f / qp.scale : 0.0f;
  const float offset = qp.offset;
  for (int i = 0; i < n; ++i) {
    float q = RoundEven((v[i] - offset) * inv);
    q = std::min(std::max(q, 0.0f), top);
    codes[i] = static_cast<uint8_t>(static_cast<int>(q));
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
DequantizeCodes(const uint8_t* codes, int n, float offset, float scale, float* out) {
  for (int i = 0; i < n; ++i) out[i] = offset + static_cast<float>(codes[i]) * scale;
}

double QuantizationSquaredError(const float* v, int n, int bits, const QuantParams& qp) {
  return QuantPass(v, n, static_cast<float>((1 << bits) - 1), qp.offset, qp.scale).err;
}

}  // namespace deltaserve::codec::internal
