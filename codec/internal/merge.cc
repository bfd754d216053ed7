#include "codec/internal/merge.h"

#include <immintrin.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/internal/fp16.h"

namespace deltaserve::codec::internal {
namespace {

// The saturation bounds of merge.h as floats.
constexpr float kF16Max = kF16MaxFinite;
const float kBf16Max = BitsFloat(kBf16MaxFiniteBits);
const float kBf16Overflow = BitsFloat(kBf16OverflowBits);

// F16 base -> F16 out in one pass: 8 lanes convert, add, saturate, round-to-nearest-even
// back. Adds the lanes it saturated to *saturated.
__attribute__((target("avx2,f16c,popcnt"))) int64_t MergeF16F16(const uint16_t* base,
                                                                const float* delta, int64_t n,
                                                                uint16_t* out, int64_t* saturated) {
  int64_t i = 0;
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 max = _mm256_set1_ps(kF16Max), over = _mm256_set1_ps(kF16Overflow);
  const __m256 inf = _mm256_set1_ps(INFINITY);
  int64_t count = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + i)));
    __m256 d = delta ? _mm256_loadu_ps(delta + i) : zero;
    __m256 s = _mm256_add_ps(b, d);
    const __m256 a = _mm256_andnot_ps(sign, s);
    // Ordered compares are false for NaN: NaN and Inf pass through.
    const __m256 big =
        _mm256_and_ps(_mm256_cmp_ps(a, over, _CMP_GE_OQ), _mm256_cmp_ps(a, inf, _CMP_NEQ_OQ));
    const int mask = _mm256_movemask_ps(big);
    if (mask != 0) {
      s = _mm256_blendv_ps(s, _mm256_or_ps(_mm256_and_ps(s, sign), max), big);
      count += _mm_popcnt_u32(static_cast<unsigned>(mask));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
  }
  *saturated += count;
  return i;  // elements done; the caller finishes the tail
}

}  // namespace

int64_t SaturateForCast(float* v, int64_t n, DType out_dtype) {
  float max, over;
  if (out_dtype == DType::kF16) {
    max = kF16Max;
    over = kF16Overflow;
  } else if (out_dtype == DType::kBF16) {
    max = kBf16Max;
    over = kBf16Overflow;
  } else {
    return 0;
  }
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    if (a >= over && a != INFINITY) {
      v[i] = std::copysign(max, v[i]);
      ++count;
    }
  }
  return count;
}

int64_t MergeRow(const uint8_t* base, DType base_dtype, const float* delta, int64_t n,
                 DType out_dtype, uint8_t* out, float* scratch) {
  int64_t done = 0, saturated = 0;
  if (base_dtype == DType::kF16 && out_dtype == DType::kF16 && CpuHasF16c()) {
    done = MergeF16F16(reinterpret_cast<const uint16_t*>(base), delta, n,
                       reinterpret_cast<uint16_t*>(out), &saturated);
    if (done == n) return saturated;
  }
  const int64_t rest = n - done;
  ToFloat32(base + done * DTypeSize(base_dtype), base_dtype, rest, scratch);
  if (delta != nullptr) {
    for (int64_t i = 0; i < rest; ++i) scratch[i] += delta[done + i];
  } else {
    for (int64_t i = 0; i < rest; ++i) scratch[i] += 0.0f;
  }
  saturated += SaturateForCast(scratch, rest, out_dtype);
  FromFloat32(scratch, rest, out_dtype, out + done * DTypeSize(out_dtype));
  return saturated;
}

absl::Status CheckMergeRowsArgs(const uint8_t* base, const uint8_t* out, int64_t rows,
                                int64_t row_begin, int64_t row_end) {
  if (base == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("base or output buffer is null");
  }
  if (row_begin < 0 || row_begin > row_end || row_end > rows) {
    return absl::InvalidArgumentError(absl::StrCat("row range [", row_begin, ", ", row_end,
                                                   ") outside [0, ", rows, "]"));
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec::internal
