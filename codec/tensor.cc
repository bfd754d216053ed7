#include "codec/tensor.h"

#include <immintrin.h>

#include <cstring>
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
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return has;
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

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", absl::string_view(name.data(), name.size()), "\" (supported: F32, F16, BF16)"));
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
  }
}

}  // namespace deltaserve::codec
