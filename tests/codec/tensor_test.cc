#include "codec/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "codec/internal/fp16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::StatusIs;
using internal::BitsFloat;
using internal::FloatBits;

uint16_t ToF16(float f) {
  uint16_t h;
  FromFloat32(&f, 1, DType::kF16, reinterpret_cast<uint8_t*>(&h));
  return h;
}
uint16_t ToBf16(float f) {
  uint16_t h;
  FromFloat32(&f, 1, DType::kBF16, reinterpret_cast<uint8_t*>(&h));
  return h;
}
float FromF16(uint16_t h) {
  float f;
  ToFloat32(reinterpret_cast<const uint8_t*>(&h), DType::kF16, 1, &f);
  return f;
}

TEST(DTypeTest, SizesNamesParse) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(ParseDType(DTypeName(d)).value(), d);
  }
  // Every safetensors dtype; only the float ones are castable.
  for (int v = 0; v <= static_cast<int>(kLastDType); ++v) {
    const DType d = static_cast<DType>(v);
    EXPECT_EQ(ParseDType(DTypeName(d)).value(), d);
    EXPECT_EQ(IsCastable(d), v <= 2) << DTypeName(d);
  }
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeSize(DType::kU16), 2u);
  EXPECT_EQ(DTypeName(DType::kF8E5M2), "F8_E5M2");
  EXPECT_EQ(OutputDType(DType::kI64, DType::kF16), DType::kI64);
  EXPECT_EQ(OutputDType(DType::kF32, DType::kF16), DType::kF16);
  EXPECT_THAT(ParseDType("C64"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("C64")));
  EXPECT_THAT(ParseDType("f32"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ShapeTest, CountsAndStrings) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({3, 3, 32, 1}), 288);
  EXPECT_EQ(NumElements({4, 0}), 0);
  EXPECT_EQ(CheckedNumElements({1024, 1024}).value(), 1 << 20);
  EXPECT_THAT(CheckedNumElements({3, -1}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CheckedNumElements({1LL << 32, 1LL << 32}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("overflow")));
  EXPECT_EQ(ShapeString({3, 3, 32, 1}), "[3, 3, 32, 1]");
  EXPECT_EQ(ShapeString({}), "[]");
  TensorInfo info{"w", DType::kF16, {3, 5}};
  EXPECT_EQ(info.num_bytes(), 30u);
}

TEST(F16Test, KnownValues) {
  EXPECT_EQ(ToF16(1.0f), 0x3c00);
  EXPECT_EQ(ToF16(-2.0f), 0xc000);
  EXPECT_EQ(ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(ToF16(65519.0f), 0x7bff);  // below the halfway point to 65536
  EXPECT_EQ(ToF16(65520.0f), 0x7c00);  // halfway ties to even: overflow to inf
  EXPECT_EQ(ToF16(1e9f), 0x7c00);
  EXPECT_EQ(ToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even
  EXPECT_EQ(ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(ToF16(-0.0f), 0x8000);
  const uint16_t nan = ToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
  EXPECT_EQ(FromF16(0x3555), 0.333251953125f);
  EXPECT_EQ(FromF16(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(FromF16(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isnan(FromF16(0x7e01)));
  EXPECT_TRUE(std::isinf(FromF16(0xfc00)));
}

// The dispatched (F16C) path and the portable scalar one agree bit for bit.
TEST(F16Test, EveryHalfMatchesScalarAndRoundTrips) {
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> fast(65536), slow(65536);
  ToFloat32(reinterpret_cast<const uint8_t*>(all.data()), DType::kF16, 65536, fast.data());
  internal::HalfToFloatScalar(all.data(), 65536, slow.data());
  std::vector<uint16_t> back(65536);
  FromFloat32(fast.data(), 65536, DType::kF16, reinterpret_cast<uint8_t*>(back.data()));
  for (int i = 0; i < 65536; ++i) {
    ASSERT_EQ(FloatBits(fast[i]), FloatBits(slow[i])) << i;
    const bool is_nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff) != 0;
    if (is_nan) {
      ASSERT_EQ(back[i], i | 0x200) << i;  // quieted, payload kept
    } else {
      ASSERT_EQ(back[i], i) << i;
    }
  }
}

// n half bit patterns i * 40503 + offset (every value appears), Inf/NaN made finite.
std::vector<uint16_t> FiniteHalves(int64_t n, uint32_t offset) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    v[i] = static_cast<uint16_t>(i * 40503u + offset);
    if ((v[i] & 0x7c00u) == 0x7c00u) v[i] &= 0x3fffu;  // Inf/NaN -> finite
  }
  return v;
}

// The squares pass gives the 4-lane double sums of the scalar loop over converted
// floats bit for bit (every finite half against a shifted copy, odd length for the
// tail, lanes starting non-zero).
TEST(F16Test, HalfDeltaSquaresMatchesTheScalarLanes) {
  const int64_t n = 65536 + 7;
  const std::vector<uint16_t> a = FiniteHalves(n, 0), b = FiniteHalves(n, 977);
  std::vector<float> fa(n), fb(n);
  ToFloat32(reinterpret_cast<const uint8_t*>(a.data()), DType::kF16, n, fa.data());
  ToFloat32(reinterpret_cast<const uint8_t*>(b.data()), DType::kF16, n, fb.data());
  double want_d[4] = {1, 2, 3, 4}, want_b[4] = {5, 6, 7, 8};
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(fa[i]) - fb[i];
    want_d[i % 4] += d * d;
    want_b[i % 4] += static_cast<double>(fb[i]) * fb[i];
  }
  double got_d[4] = {1, 2, 3, 4}, got_b[4] = {5, 6, 7, 8};
  internal::HalfDeltaSquares(a.data(), b.data(), n, got_d, got_b);
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(got_d[l], want_d[l]) << l;
    EXPECT_EQ(got_b[l], want_b[l]) << l;
  }
  EXPECT_GT(want_d[0], 1e6);  // the sums are not trivially small
}

// The fused difference pass gives ToFloat32(a) - ToFloat32(b) bit for bit (every
// half value against a shifted copy, odd length for the tail) and reports infinities
// and NaN, in the SIMD body and in the tail.
TEST(F16Test, HalfDifferenceMatchesTwoConversions) {
  const int64_t n = 65536 + 5;
  const std::vector<uint16_t> fa = FiniteHalves(n, 0), fb = FiniteHalves(n, 977);
  std::vector<float> want(n), tmp(n), got(n);
  ToFloat32(reinterpret_cast<const uint8_t*>(fa.data()), DType::kF16, n, want.data());
  ToFloat32(reinterpret_cast<const uint8_t*>(fb.data()), DType::kF16, n, tmp.data());
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    want[i] -= tmp[i];
    finite = finite && std::isfinite(want[i]);
  }
  EXPECT_EQ(internal::HalfDifferenceToFloat(fa.data(), fb.data(), n, got.data()), finite);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), n * sizeof(float)), 0);
  for (int64_t bad : {int64_t{3}, n - 2}) {  // SIMD body, scalar tail
    std::vector<uint16_t> x = fa;
    x[bad] = 0x7c00u;  // +Inf
    EXPECT_FALSE(internal::HalfDifferenceToFloat(x.data(), fb.data(), n, got.data())) << bad;
    x[bad] = 0x7e01u;  // NaN
    EXPECT_FALSE(internal::HalfDifferenceToFloat(x.data(), fb.data(), n, got.data())) << bad;
  }
  // Two large finite halves whose difference is still finite in float.
  const uint16_t big[8] = {0x7bffu, 0x7bffu, 0, 0, 0, 0, 0, 0}, neg[8] = {0xfbffu, 0, 0, 0,
                                                                           0, 0, 0, 0};
  float d[8];
  EXPECT_TRUE(internal::HalfDifferenceToFloat(big, neg, 8, d));
  EXPECT_EQ(d[0], 131008.0f);
}

TEST(F16Test, RandomFloatsMatchScalar) {
  std::mt19937 rng(7);
  std::vector<float> src(1 << 20);
  for (auto& f : src) f = BitsFloat(static_cast<uint32_t>(rng()));  // every exponent
  for (int i = 0; i < 1000; ++i) src[i] = std::ldexp(static_cast<float>(i) + 0.5f, -24);
  std::vector<uint16_t> fast(src.size()), slow(src.size());
  FromFloat32(src.data(), src.size(), DType::kF16, reinterpret_cast<uint8_t*>(fast.data()));
  internal::FloatToHalfScalar(src.data(), src.size(), slow.data());
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(fast[i], slow[i]) << src[i];
}

TEST(Bf16Test, RoundsToNearestEvenAndKeepsNan) {
  EXPECT_EQ(ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(ToBf16(BitsFloat(0x3f808000u)), 0x3f80);  // tie -> even (down)
  EXPECT_EQ(ToBf16(BitsFloat(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(ToBf16(BitsFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(ToBf16(BitsFloat(0x7f7fffffu)), 0x7f80);  // max float rounds to inf
  EXPECT_EQ(ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(ToBf16(BitsFloat(0x7f800001u)), 0x7fc0);  // sNaN with low payload stays NaN
  EXPECT_EQ(ToBf16(BitsFloat(0xffc12345u)), 0xffc1);
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f(65536);
  std::vector<uint16_t> back(65536);
  ToFloat32(reinterpret_cast<const uint8_t*>(all.data()), DType::kBF16, 65536, f.data());
  FromFloat32(f.data(), 65536, DType::kBF16, reinterpret_cast<uint8_t*>(back.data()));
  for (int i = 0; i < 65536; ++i) {
    ASSERT_EQ(FloatBits(f[i]), static_cast<uint32_t>(i) << 16);
    const bool is_nan = (i & 0x7f80) == 0x7f80 && (i & 0x7f) != 0;
    ASSERT_EQ(back[i], is_nan ? (i | 0x40) : i) << i;
  }
}

// Tensor bytes inside a file need not be 2-byte aligned.
TEST(ConversionTest, MisalignedBuffers) {
  const int n = 37;  // SIMD body plus a scalar tail
  std::vector<float> src(n);
  for (int i = 0; i < n; ++i) src[i] = 0.1f * i - 1.0f;
  for (DType d : {DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> aligned(2 * n), odd(2 * n + 1);
    FromFloat32(src.data(), n, d, aligned.data());
    FromFloat32(src.data(), n, d, odd.data() + 1);
    EXPECT_EQ(std::memcmp(aligned.data(), odd.data() + 1, 2 * n), 0);
    std::vector<float> a(n), b(n);
    ToFloat32(aligned.data(), d, n, a.data());
    ToFloat32(odd.data() + 1, d, n, b.data());
    EXPECT_EQ(a, b);
    EXPECT_NEAR(b[n - 1], src[n - 1], 0.01);
  }
}

TEST(F32Test, CopiesBytes) {
  const float src[3] = {1.5f, -0.0f, 3e-40f};
  float dst[3];
  uint8_t bytes[12];
  FromFloat32(src, 3, DType::kF32, bytes);
  ToFloat32(bytes, DType::kF32, 3, dst);
  EXPECT_EQ(std::memcmp(src, dst, sizeof(src)), 0);
}

}  // namespace
}  // namespace deltaserve::codec
