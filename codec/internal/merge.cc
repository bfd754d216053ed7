#include "codec/internal/merge.h"

#include <immintrin.h>

#include "codec/internal/fp16.h"

namespace deltaserve::codec::internal {
namespace {

// Largest finite values: F16 0x7BFF, BF16 0x7F7F (as float32 0x7F7F0000).
constexpr float kF16Max = 65504.0f;
constexpr float kBf16Max = 3.38953139e38f;

// Clamps finite-range overshoot (a decoded delta pushing a weight past the dtype's
// range) to the largest finite value of `out_dtype`; NaN stays NaN.
void Saturate(float* v, int64_t n, DType out_dtype) {
  const float max = out_dtype == DType::kF16 ? kF16Max : out_dtype == DType::kBF16 ? kBf16Max : 0;
  if (max == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] > max) v[i] = max;
    if (v[i] < -max) v[i] = -max;
  }
}

// F16 base -> F16 out in one pass: 8 lanes convert, add, round-to-nearest-even back.
__attribute__((target("avx2,f16c"))) int64_t MergeF16F16(const uint16_t* base,
                                                          const float* delta, int64_t n,
                                                          uint16_t* out) {
  int64_t i = 0;
  const __m256 zero = _mm256_setzero_ps();
  const __m256 lo = _mm256_set1_ps(-kF16Max), hi = _mm256_set1_ps(kF16Max);
  for (; i + 8 <= n; i += 8) {
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + i)));
    __m256 d = delta ? _mm256_loadu_ps(delta + i) : zero;
    // max/min return their second operand when either is NaN: NaN stays NaN.
    __m256 s = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(b, d)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
  }
  return i;  // elements done; the caller finishes the tail
}

}  // namespace

void MergeRow(const uint8_t* base, DType base_dtype, const float* delta, int64_t n,
              DType out_dtype, uint8_t* out, float* scratch) {
  int64_t done = 0;
  if (base_dtype == DType::kF16 && out_dtype == DType::kF16 && CpuHasF16c()) {
    done = MergeF16F16(reinterpret_cast<const uint16_t*>(base), delta, n,
                       reinterpret_cast<uint16_t*>(out));
    if (done == n) return;
  }
  const int64_t rest = n - done;
  ToFloat32(base + done * DTypeSize(base_dtype), base_dtype, rest, scratch);
  if (delta != nullptr) {
    for (int64_t i = 0; i < rest; ++i) scratch[i] += delta[done + i];
  } else {
    for (int64_t i = 0; i < rest; ++i) scratch[i] += 0.0f;
  }
  Saturate(scratch, rest, out_dtype);
  FromFloat32(scratch, rest, out_dtype, out + done * DTypeSize(out_dtype));
}

}  // namespace deltaserve::codec::internal
