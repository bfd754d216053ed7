// Scalar IEEE binary16 / bfloat16 <-> float32 conversions (bit-exact with F16C).
//
// These are the portable reference that codec/tensor.cc's vectorized paths must match
// bit for bit: round-to-nearest-even, overflow to +-inf, subnormals kept, NaN stays NaN
// (quiet bit set, payload truncated, as VCVTPS2PH / VCVTPH2PS do). Header-only, pure.
#ifndef DELTASERVE_CODEC_INTERNAL_FP16_H_
#define DELTASERVE_CODEC_INTERNAL_FP16_H_

#include <cstdint>
#include <cstring>

namespace deltaserve::codec::internal {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {  // inf / NaN (NaN is quieted, like VCVTPH2PS)
    return BitsFloat(sign | 0x7f800000u | (mant ? (0x400000u | (mant << 13)) : 0u));
  }
  if (exp != 0) return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);
  // Subnormal: value = mant * 2^-24, exactly representable in float32.
  int e = 113;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsFloat(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3ffu) << 13));
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf / NaN
    if (ax == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow to inf
  if (ax >= 0x38800000u) {                        // normal half (>= 2^-14)
    const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  if (ax < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself ties to 0)
  // Subnormal half: shift the full mantissa into place with round-to-nearest-even.
  const uint32_t e = ax >> 23;
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // e in [102, 112] -> shift in [14, 24]
  const uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  const uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  return static_cast<uint16_t>(sign | r);
}

inline float Bf16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t FloatToBf16(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// True if this CPU has AVX2 and F16C (checked once per process).
bool CpuHasF16c();

// Scalar loops over n elements (the portable fallback of ToFloat32 / FromFloat32).
void HalfToFloatScalar(const uint16_t* src, int64_t n, float* dst);
void FloatToHalfScalar(const float* src, int64_t n, uint16_t* dst);

// dst[i] = HalfToFloat(a[i]) - HalfToFloat(b[i]) for i < n, in one pass (F16C where
// the CPU has it; the same bits either way). Returns false if any result is not finite.
// `a` and `b` need no alignment.
bool HalfDifferenceToFloat(const uint16_t* a, const uint16_t* b, int64_t n, float* dst);

// For i < n, with x = HalfToFloat(a[i]) and y = HalfToFloat(b[i]) in double:
// dd[i % 4] += (x - y)^2 and bb[i % 4] += y^2, each lane in index order, multiply and
// add rounded apart (F16C where the CPU has it; the same bits either way). `a` and `b`
// need no alignment; dd and bb hold 4 lanes each.
void HalfDeltaSquares(const uint16_t* a, const uint16_t* b, int64_t n, double* dd, double* bb);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_FP16_H_
