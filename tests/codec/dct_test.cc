#include "codec/internal/dct.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "codec/internal/merge.h"
#include "codec/tensor.h"
#include "gtest/gtest.h"

namespace deltaserve::codec::internal {
namespace {

// Y[u][v] = a_u a_v sum_x sum_y X[x][y] cos(pi (2x+1) u / 2p) cos(pi (2y+1) v / 2p):
// the textbook O(p^4) orthonormal 2-D DCT-II, in double.
std::vector<double> NaiveDct2d(const std::vector<float>& x, int p) {
  const double pi = std::acos(-1.0);
  std::vector<double> y(p * p);
  for (int u = 0; u < p; ++u) {
    for (int v = 0; v < p; ++v) {
      double s = 0;
      for (int i = 0; i < p; ++i) {
        for (int j = 0; j < p; ++j) {
          s += x[i * p + j] * std::cos(pi * (2 * i + 1) * u / (2.0 * p)) *
               std::cos(pi * (2 * j + 1) * v / (2.0 * p));
        }
      }
      const double au = std::sqrt((u == 0 ? 1.0 : 2.0) / p);
      const double av = std::sqrt((v == 0 ? 1.0 : 2.0) / p);
      y[u * p + v] = au * av * s;
    }
  }
  return y;
}

std::vector<float> RandomPatch(int p, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(p * p);
  for (auto& v : x) v = n(rng);
  return x;
}

class DctSizes : public ::testing::TestWithParam<int> {};

TEST_P(DctSizes, BasisIsOrthonormal) {
  const int p = GetParam();
  DctBasis b(p);
  for (int i = 0; i < p; ++i) {
    for (int j = 0; j < p; ++j) {
      double s = 0;
      for (int k = 0; k < p; ++k) s += double(b.c[i * p + k]) * b.c[j * p + k];
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-6) << i << "," << j;
      EXPECT_EQ(b.ct[i * p + j], b.c[j * p + i]);
    }
  }
}

TEST_P(DctSizes, ForwardMatchesNaiveReference) {
  const int p = GetParam();
  DctBasis b(p);
  const auto x = RandomPatch(p, 11 + p);
  std::vector<float> y(p * p);
  ForwardDct2d(b, x.data(), p, y.data(), p);
  const auto ref = NaiveDct2d(x, p);
  for (int i = 0; i < p * p; ++i) EXPECT_NEAR(y[i], ref[i], 2e-5 * p) << i;
}

TEST_P(DctSizes, InverseRestoresAndPreservesEnergy) {
  const int p = GetParam();
  DctBasis b(p);
  const auto x = RandomPatch(p, 5 + p);
  std::vector<float> y(p * p), z(p * p);
  ForwardDct2d(b, x.data(), p, y.data(), p);
  InverseDct2d(b, y.data(), p, z.data(), p);
  double ex = 0, ey = 0;
  for (int i = 0; i < p * p; ++i) {
    EXPECT_NEAR(z[i], x[i], 1e-5 * p) << i;
    ex += double(x[i]) * x[i];
    ey += double(y[i]) * y[i];
  }
  EXPECT_NEAR(ey / ex, 1.0, 1e-5);  // Parseval
}

TEST_P(DctSizes, StridedInputAndOutput) {
  const int p = GetParam();
  DctBasis b(p);
  const int stride = p + 3;
  std::vector<float> big(p * stride, 99.0f), out(p * stride, -7.0f);
  const auto x = RandomPatch(p, 3);
  for (int r = 0; r < p; ++r)
    for (int c = 0; c < p; ++c) big[r * stride + c] = x[r * p + c];
  std::vector<float> y(p * p);
  ForwardDct2d(b, x.data(), p, y.data(), p);
  std::vector<float> y2(p * p);
  ForwardDct2d(b, big.data(), stride, y2.data(), p);
  EXPECT_EQ(y, y2);
  InverseDct2d(b, y.data(), p, out.data(), stride);
  for (int r = 0; r < p; ++r) {
    for (int c = 0; c < stride; ++c) {
      if (c < p) {
        EXPECT_NEAR(out[r * stride + c], x[r * p + c], 1e-5 * p);
      } else {
        EXPECT_EQ(out[r * stride + c], -7.0f);  // untouched beyond the patch
      }
    }
  }
}

TEST_P(DctSizes, InverseIsBitIdenticalToPortableKernel) {
  // The AVX-512 kernel (p = 32 on such CPUs) must give the compiled kernel's exact bits:
  // payloads decode to the same bytes whichever path runs. Strided in/out, many patches
  // of different magnitudes, including quantized-like repeated values and zeros.
  const int p = GetParam();
  DctBasis b(p);
  const int in_stride = p + 1, out_stride = p + 5;
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> in(p * in_stride), fast(p * out_stride, 1.0f), ref(p * out_stride, 1.0f);
    const float scale = std::ldexp(1.0f, trial % 20 - 15);
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = trial % 3 == 0 ? scale * std::round(4 * n(rng)) : scale * n(rng);
      if (trial % 7 == 0 && i % 5 == 0) in[i] = 0.0f;
    }
    InverseDct2d(b, in.data(), in_stride, fast.data(), out_stride);
    InverseDct2dPortable(b, in.data(), in_stride, ref.data(), out_stride);
    for (size_t i = 0; i < fast.size(); ++i) {
      ASSERT_EQ(std::memcmp(&fast[i], &ref[i], sizeof(float)), 0)
          << "p=" << p << " trial " << trial << " row " << i / out_stride << " col "
          << i % out_stride << ": " << fast[i] << " vs " << ref[i];
    }
  }
}

TEST(DctTest, ConstantPatchHasOnlyDc) {
  const int p = 16;
  DctBasis b(p);
  std::vector<float> x(p * p, 2.0f), y(p * p);
  ForwardDct2d(b, x.data(), p, y.data(), p);
  EXPECT_NEAR(y[0], 2.0f * p, 1e-4);
  for (int i = 1; i < p * p; ++i) EXPECT_NEAR(y[i], 0.0f, 1e-5);
}

// The fused inverse + merge pins to the unfused path: InverseDct2d into floats, then
// MergeRow (F16 -> F16, BF16 -> BF16) on each row. Same bytes and saturation count on
// random patches of many magnitudes, strided base/out, with saturating sums, Inf/NaN
// and -0 in the base.
TEST(DctTest, FusedInverseMergeIsBitIdenticalToInverseThenMergeRow) {
  constexpr int p = 32;
  if (!CanInverseDct2dMerge(p, DType::kF16)) GTEST_SKIP() << "no AVX-512F + F16C on this CPU";
  EXPECT_FALSE(CanInverseDct2dMerge(16, DType::kF16));
  EXPECT_FALSE(CanInverseDct2dMerge(p, DType::kF32));
  DctBasis b(p);
  const int base_stride = p + 3, out_stride = p + 7;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    ASSERT_TRUE(CanInverseDct2dMerge(p, dtype));
    // Near the dtype's largest finite value, so that some sums saturate.
    const float big = dtype == DType::kF16 ? 65504.0f : 3.38e38f;
    const int top_exp = dtype == DType::kF16 ? 11 : 122;
    std::mt19937 rng(11);
    std::normal_distribution<float> n(0.0f, 1.0f);
    int64_t total_saturated = 0;
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<float> in(p * p), patch(p * p), base_f(p * base_stride);
      // Up to 2^top_exp: sums past the dtype's range.
      const float scale = std::ldexp(1.0f, trial % 24 == 23 ? top_exp : trial % 24 - 12);
      for (float& v : in) v = trial % 3 == 0 ? scale * std::round(4 * n(rng)) : scale * n(rng);
      const bool near_max = trial % 4 == 0 || trial % 24 == 23;
      for (float& v : base_f) v = near_max ? big * std::tanh(4 * n(rng)) : 0.05f * n(rng);
      if (trial % 5 == 0) {
        base_f[1] = INFINITY;
        base_f[2] = -INFINITY;
        base_f[3] = NAN;
        base_f[4] = -0.0f;
      }
      std::vector<uint8_t> base(base_f.size() * 2);
      FromFloat32(base_f.data(), base_f.size(), dtype, base.data());
      const auto* base16 = reinterpret_cast<const uint16_t*>(base.data());
      std::vector<uint16_t> fused(p * out_stride, 0xABCD), ref(p * out_stride, 0xABCD);
      const int64_t got =
          InverseDct2dMerge(b, in.data(), dtype, base16, base_stride, fused.data(), out_stride);
      InverseDct2d(b, in.data(), p, patch.data(), p);
      int64_t want = 0;
      std::vector<float> scratch(p);
      for (int r = 0; r < p; ++r) {
        want += MergeRow(reinterpret_cast<const uint8_t*>(base16 + r * base_stride), dtype,
                         &patch[r * p], p, dtype,
                         reinterpret_cast<uint8_t*>(&ref[r * out_stride]), scratch.data());
      }
      ASSERT_EQ(got, want) << DTypeName(dtype) << " trial " << trial;
      total_saturated += got;
      for (size_t i = 0; i < fused.size(); ++i) {
        ASSERT_EQ(fused[i], ref[i]) << DTypeName(dtype) << " trial " << trial << " row "
                                    << i / out_stride << " col " << i % out_stride;
      }
    }
    EXPECT_GT(total_saturated, 0) << DTypeName(dtype);  // the saturating path ran
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, DctSizes, ::testing::Values(2, 3, 5, 8, 16, 32, 64));

}  // namespace
}  // namespace deltaserve::codec::internal
