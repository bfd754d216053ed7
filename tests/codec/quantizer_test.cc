#include "codec/internal/quantize.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "codec/internal/bitpack.h"
#include "codec/internal/fp16.h"
#include "gtest/gtest.h"

namespace deltaserve::codec::internal {
namespace {

std::vector<float> Gaussian(int n, float sigma, float mean, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool IsBf16(float x) { return (FloatBits(x) & 0xffffu) == 0; }

double MaxAbsError(const std::vector<float>& v, int bits, const QuantParams& qp,
                   std::vector<uint8_t>* codes_out = nullptr) {
  std::vector<uint8_t> codes(v.size());
  QuantizeValues(v.data(), v.size(), bits, qp, codes.data());
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_LT(codes[i], 1 << bits);
    worst = std::max(worst, std::fabs(double(v[i]) - (qp.offset + codes[i] * qp.scale)));
  }
  if (codes_out) *codes_out = codes;
  return worst;
}

class QuantBits : public ::testing::TestWithParam<int> {};

// Range-covering modes: every value lands within half a step of its level.
TEST_P(QuantBits, MinMaxAndSymmetricErrorAtMostHalfStep) {
  const int bits = GetParam();
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto v = Gaussian(1024, 1e-3f, seed % 2 ? 4e-4f : 0.0f, seed);
    for (Quantizer mode : {Quantizer::kMinMax, Quantizer::kSymmetric}) {
      const QuantParams qp = ChooseQuantParams(v.data(), v.size(), bits, mode);
      EXPECT_TRUE(IsBf16(qp.scale));
      if (mode == Quantizer::kMinMax) {
        EXPECT_TRUE(IsBf16(qp.offset));
      }
      ASSERT_GT(qp.scale, 0.0f);
      float lo = v[0], hi = v[0], amax = 0;
      for (float x : v) lo = std::min(lo, x), hi = std::max(hi, x), amax = std::max(amax, std::fabs(x));
      // Half a step, plus float32 rounding of offset + code * scale (a few ulps of amax).
      EXPECT_LE(MaxAbsError(v, bits, qp), 0.5 * qp.scale + 4 * 6e-8 * amax)
          << "bits " << bits << " mode " << static_cast<int>(mode);
      // The step is no coarser than the range needs (bf16 rounding up: < 1% more).
      const double span = mode == Quantizer::kMinMax ? hi - lo : 2 * amax;
      EXPECT_LE(qp.scale, span / ((1 << bits) - 1) * 1.01 + 1e-12);
    }
  }
}

// The clipped mode never loses to min-max on squared error, and wins clearly at 1-2 bits
// on Gaussian data (the clipped tails cost less than a coarse step).
TEST_P(QuantBits, ClippedBeatsMinMaxOnGaussian) {
  const int bits = GetParam();
  const auto v = Gaussian(1024, 1.0f, 0.1f, 99);
  const double e_minmax = QuantizationSquaredError(
      v.data(), v.size(), bits, ChooseQuantParams(v.data(), v.size(), bits, Quantizer::kMinMax));
  const QuantParams qc = ChooseQuantParams(v.data(), v.size(), bits, Quantizer::kClipped);
  EXPECT_TRUE(IsBf16(qc.offset));
  EXPECT_TRUE(IsBf16(qc.scale));
  const double e_clipped = QuantizationSquaredError(v.data(), v.size(), bits, qc);
  EXPECT_LE(e_clipped, e_minmax);
  if (bits <= 2) {
    EXPECT_LT(e_clipped, 0.6 * e_minmax);
  }
  // Near the Gaussian optimum (MSE per value: 1 bit 0.3634, 2 bits 0.1188, 3 bits
  // 0.03744, 4 bits 0.01154; Max 1960), within sampling slack.
  const double optimum[9] = {0, 0.3634, 0.1188, 0.03744, 0.01154, 0.00349, 0.00104, 0.0003, 0.00009};
  EXPECT_LT(e_clipped / v.size(), optimum[bits] * 1.25 + 1e-5) << bits;
}

TEST_P(QuantBits, ErrorShrinksWithBits) {
  const int bits = GetParam();
  if (bits == 8) return;
  const auto v = Gaussian(1024, 1.0f, 0.0f, 5);
  for (Quantizer mode : {Quantizer::kMinMax, Quantizer::kSymmetric, Quantizer::kClipped}) {
    const double e1 = QuantizationSquaredError(v.data(), v.size(), bits,
                                               ChooseQuantParams(v.data(), v.size(), bits, mode));
    const double e2 = QuantizationSquaredError(
        v.data(), v.size(), bits + 1, ChooseQuantParams(v.data(), v.size(), bits + 1, mode));
    EXPECT_LT(e2, e1) << static_cast<int>(mode);
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, QuantBits, ::testing::Range(1, 9));

TEST(QuantizerTest, ConstantValuesGiveZeroScale) {
  const std::vector<float> v(256, 0.25f);
  for (Quantizer mode : {Quantizer::kMinMax, Quantizer::kClipped}) {
    const QuantParams qp = ChooseQuantParams(v.data(), v.size(), 2, mode);
    EXPECT_EQ(qp.scale, 0.0f);
    EXPECT_EQ(qp.offset, 0.25f);  // exactly representable in bf16
    std::vector<uint8_t> codes;
    EXPECT_EQ(MaxAbsError(v, 2, qp, &codes), 0.0);
  }
  const std::vector<float> zeros(64, 0.0f);
  const QuantParams qs = ChooseQuantParams(zeros.data(), zeros.size(), 3, Quantizer::kSymmetric);
  EXPECT_EQ(qs.scale, 0.0f);
}

TEST(QuantizerTest, Bf16DirectedRounding) {
  const float x = BitsFloat(0x3f812345u);
  EXPECT_EQ(FloatBits(Bf16Down(x)), 0x3f810000u);
  EXPECT_EQ(FloatBits(Bf16Up(x)), 0x3f820000u);
  EXPECT_EQ(FloatBits(Bf16Down(-x)), 0xbf820000u);
  EXPECT_EQ(FloatBits(Bf16Up(-x)), 0xbf810000u);
  EXPECT_EQ(Bf16Up(1.0f), 1.0f);
  EXPECT_EQ(NumStoredParams(Quantizer::kSymmetric), 1);
  EXPECT_EQ(NumStoredParams(Quantizer::kClipped), 2);
}

// The fused one-bit decode is UnpackCodes + DequantizeCodes to the bit: every length
// around the 16-code vector step, signed and zero offsets and scales.
TEST(QuantizerTest, DequantizeBits1EqualsUnpackThenDequantize) {
  std::mt19937 rng(5);
  std::vector<uint8_t> packed(130);
  for (auto& b : packed) b = static_cast<uint8_t>(rng());
  for (int n : {1, 7, 15, 16, 17, 31, 33, 1023, 1024}) {
    for (auto [offset, scale] : std::vector<std::pair<float, float>>{
             {-0.013f, 0.0027f}, {0.5f, -0.25f}, {-0.0f, 0.0f}, {0.0f, -0.0f}, {3e-8f, 7e5f}}) {
      std::vector<uint8_t> codes(n);
      UnpackCodes(packed.data(), packed.size(), 0, n, 1, codes.data());
      std::vector<float> want(n + 1, 9.0f), got(n + 1, 9.0f);
      DequantizeCodes(codes.data(), n, offset, scale, want.data());
      DequantizeBits1(packed.data(), n, offset, scale, got.data());
      ASSERT_EQ(std::memcmp(got.data(), want.data(), sizeof(float) * (n + 1)), 0)
          << "n=" << n << " offset " << offset << " scale " << scale;
    }
  }
}

}  // namespace
}  // namespace deltaserve::codec::internal
