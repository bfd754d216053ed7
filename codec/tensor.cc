#include "codec/tensor.h"

#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/internal/fp16.h"

namespace deltaserve::codec {
namespace {

using internal::Bf16ToFloat;
using internal::FloatToBf16;

// F16C paths: 8 lanes per instruction. Rounding mode 0 = round-to-nearest-even, the
// same as internal::FloatToHalf, so results are identical with or without F16C.
__attribute__((target("avx2,f16c"))) void HalfToFloatF16c(const uint16_t* src, int64_t n,
                                                           float* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 8));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
  }
  for (; i + 8 <= n; i += 8) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
  }
  if (i < n) internal::HalfToFloatScalar(src + i, n - i, dst + i);
}

// HalfDifferenceToFloat's F16C loop: 8 lanes of a - b, and the lanes' running "all
// finite" test (|d| < inf, false for NaN) kept in a mask.
__attribute__((target("avx2,f16c"))) bool HalfDifferenceF16c(const uint16_t* a, const uint16_t* b,
                                                             int64_t n, float* dst) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)),
               inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    const __m256 y = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    const __m256 d = _mm256_sub_ps(x, y);
    finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_and_ps(d, abs_mask), inf, _CMP_LT_OQ));
    _mm256_storeu_ps(dst + i, d);
  }
  bool ok = _mm256_movemask_ps(finite) == 0xff;
  for (; i < n; ++i) {
    dst[i] = internal::HalfToFloat(a[i]) - internal::HalfToFloat(b[i]);
    ok = ok && std::isfinite(dst[i]);
  }
  return ok;
}

// HalfDeltaSquares's F16C loop: 8 halves of each input, as two groups of 4 double
// lanes (elements i .. i+3, then i+4 .. i+7: lane l takes every element = l mod 4, in
// order). Multiplies and adds apart (no FMA), as the scalar loop.
__attribute__((target("avx2,f16c"))) void HalfDeltaSquaresF16c(const uint16_t* a,
                                                               const uint16_t* b, int64_t n,
                                                               double* dd, double* bb) {
  __m256d d_acc = _mm256_loadu_pd(dd), b_acc = _mm256_loadu_pd(bb);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    const __m256 y = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    const __m256d y0 = _mm256_cvtps_pd(_mm256_castps256_ps128(y));
    const __m256d y1 = _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1));
    const __m256d d0 = _mm256_sub_pd(x0, y0), d1 = _mm256_sub_pd(x1, y1);
    d_acc = _mm256_add_pd(d_acc, _mm256_mul_pd(d0, d0));
    d_acc = _mm256_add_pd(d_acc, _mm256_mul_pd(d1, d1));
    b_acc = _mm256_add_pd(b_acc, _mm256_mul_pd(y0, y0));
    b_acc = _mm256_add_pd(b_acc, _mm256_mul_pd(y1, y1));
  }
  _mm256_storeu_pd(dd, d_acc);
  _mm256_storeu_pd(bb, b_acc);
  for (; i < n; ++i) {
    const double x = internal::HalfToFloat(a[i]), y = internal::HalfToFloat(b[i]);
    dd[i % 4] += (x - y) * (x - y);
    bb[i % 4] += y * y;
  }
}

__attribute__((target("avx2,f16c"))) void FloatToHalfF16c(const float* src, int64_t n,
                                                           uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i + 8), b);
  }
  for (; i + 8 <= n; i += 8) {
    __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), a);
  }
  if (i < n) internal::FloatToHalfScalar(src + i, n - i, dst + i);
}

// BF16 loops are plain integer arithmetic; the compiler vectorizes them per clone.
__attribute__((target_clones("avx2", "default"))) void Bf16ToFloatLoop(const uint16_t* src,
                                                                       int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + i, 2);  // tensor bytes need not be 2-byte aligned
    dst[i] = Bf16ToFloat(h);
  }
}

__attribute__((target_clones("avx2", "default"))) void FloatToBf16Loop(const float* src,
                                                                       int64_t n,
                                                                       uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToBf16(src[i]);
    std::memcpy(dst + i, &h, 2);
  }
}

}  // namespace

namespace internal {
bool CpuHasF16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    // F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not
    // know "f16c"; "avx2" also checks that the OS saves the YMM registers.
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && f16c;
  }();
  return has;
}
bool HalfDifferenceToFloat(const uint16_t* a, const uint16_t* b, int64_t n, float* dst) {
  if (CpuHasF16c()) return HalfDifferenceF16c(a, b, n, dst);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = HalfToFloat(a[i]) - HalfToFloat(b[i]);
    ok = ok && std::isfinite(dst[i]);
  }
  return ok;
}

void HalfDeltaSquares(const uint16_t* a, const uint16_t* b, int64_t n, double* dd,
                      double* bb) {
  if (CpuHasF16c()) return HalfDeltaSquaresF16c(a, b, n, dd, bb);
  for (int64_t i = 0; i < n; ++i) {
    const double x = HalfToFloat(a[i]), y = HalfToFloat(b[i]);
    dd[i % 4] += (x - y) * (x - y);
    bb[i % 4] += y * y;
  }
}

void HalfToFloatScalar(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + i, 2);  // tensor bytes need not be 2-byte aligned
    dst[i] = HalfToFloat(h);
  }
}
void FloatToHalfScalar(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToHalf(src[i]);
    std::memcpy(dst + i, &h, 2);
  }
}
}  // namespace internal

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};
// Indexed by the DType value.
constexpr DTypeEntry kDTypes[] = {
    {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2},        {DType::kBF16, "BF16", 2},
    {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},        {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},          {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kU16, "U16", 2},   {DType::kU32, "U32", 4},        {DType::kU64, "U64", 8},
};
static_assert(std::size(kDTypes) == static_cast<size_t>(kLastDType) + 1);

const DTypeEntry* Entry(DType dtype) {
  const auto i = static_cast<size_t>(dtype);
  return i < std::size(kDTypes) ? &kDTypes[i] : nullptr;
}

}  // namespace

size_t DTypeSize(DType dtype) {
  const DTypeEntry* e = Entry(dtype);
  return e != nullptr ? e->size : 0;
}

std::string_view DTypeName(DType dtype) {
  const DTypeEntry* e = Entry(dtype);
  return e != nullptr ? e->name : "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported dtype \"", absl::string_view(name.data(), name.size()),
      "\" (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, "
      "F8_E5M2)"));
}

bool IsCastable(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

DType OutputDType(DType stored, DType requested) {
  return IsCastable(stored) && IsCastable(requested) ? requested : stored;
}

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in shape ", ShapeString(shape)));
    }
    if (__builtin_mul_overflow(n, d, &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("element count of shape ", ShapeString(shape), " overflows int64"));
    }
  }
  return n;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

void ToFloat32(const uint8_t* src, DType dtype, int64_t n, float* dst) {
  if (n <= 0) return;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      // Unaligned byte buffers: the SIMD loads are unaligned, the scalar path memcpys.
      const auto* h = reinterpret_cast<const uint16_t*>(src);
      if (internal::CpuHasF16c()) {
        HalfToFloatF16c(h, n, dst);
      } else {
        internal::HalfToFloatScalar(h, n, dst);
      }
      return;
    }
    case DType::kBF16:
      Bf16ToFloatLoop(reinterpret_cast<const uint16_t*>(src), n, dst);
      return;
    default:  // REQUIRES: IsCastable
      return;
  }
}

void FromFloat32(const float* src, int64_t n, DType dtype, uint8_t* dst) {
  if (n <= 0) return;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      auto* h = reinterpret_cast<uint16_t*>(dst);
      if (internal::CpuHasF16c()) {
        FloatToHalfF16c(src, n, h);
      } else {
        internal::FloatToHalfScalar(src, n, h);
      }
      return;
    }
    case DType::kBF16:
      FloatToBf16Loop(src, n, reinterpret_cast<uint16_t*>(dst));
      return;
    default:  // REQUIRES: IsCastable
      return;
  }
}

}  // namespace deltaserve::codec
