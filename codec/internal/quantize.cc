#include "codec/internal/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "codec/internal/fp16.h"

namespace deltaserve::codec::internal {
namespace {

float Bf16Trunc(float x) { return BitsFloat(FloatBits(x) & 0xffff0000u); }

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
  const int levels = 1 << bits;
  float lo = std::numeric_limits<float>::infinity();
  float hi = -lo;
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
    amax = std::max(amax, std::fabs(v[i]));
  }
  if (n == 0) return QuantParams{};
  switch (mode) {
    case Quantizer::kSymmetric: {
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
    case Quantizer::kClipped: {
      // Coarse grid of shrink factors, then a finer pass around the best one.
      const float mid = 0.5f * (lo + hi);
      const float half = 0.5f * (hi - lo);
      QuantParams best = RangeParams(lo, hi, levels);
      double best_err = QuantizationSquaredError(v, n, bits, best);
      float best_t = 1.0f;
      auto consider = [&](float t) {
        if (t <= 0.0f || t >= 1.0f) return;
        QuantParams qp = RangeParams(mid - t * half, mid + t * half, levels);
        const double err = QuantizationSquaredError(v, n, bits, qp);
        if (err < best_err) {
          best_err = err;
          best = qp;
          best_t = t;
        }
      };
      for (float t : {0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f}) consider(t);
      const float centre = best_t;
      consider(centre - 0.05f);
      consider(centre + 0.05f);
      return best;
    }
  }
  return QuantParams{};
}

void QuantizeValues(const float* v, int n, int bits, const QuantParams& qp, uint8_t* codes) {
  const float top = static_cast<float>((1 << bits) - 1);
  if (!(qp.scale > 0.0f)) {
    std::fill(codes, codes + n, uint8_t{0});
    return;
  }
  const float inv = 1.0f / qp.scale;
  for (int i = 0; i < n; ++i) {
    float q = std::nearbyint((v[i] - qp.offset) * inv);
    q = std::clamp(q, 0.0f, top);
    codes[i] = static_cast<uint8_t>(q);
  }
}

double QuantizationSquaredError(const float* v, int n, int bits, const QuantParams& qp) {
  const float top = static_cast<float>((1 << bits) - 1);
  const float inv = qp.scale > 0.0f ? 1.0f / qp.scale : 0.0f;
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    float q = std::clamp(std::nearbyint((v[i] - qp.offset) * inv), 0.0f, top);
    const float d = v[i] - (qp.offset + q * qp.scale);
    err += static_cast<double>(d) * d;
  }
  return err;
}

}  // namespace deltaserve::codec::internal
