// The reconstruction gain of codec v2 (EcqOptions::gain_weight, codec/FORMAT.md
// "Reconstruction gain"): the stored step is the quantizer's step times the gain that
// weighs the error along the delta w times the error across it.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "codec/delta_ecq.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kRows = 256, kCols = 256;

// Gaussian noise, as a finetuning delta looks in the DCT domain (scale ~1e-3).
std::vector<float> NoiseDelta(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1e-3f);
  std::vector<float> d(kRows * kCols);
  for (auto& x : d) x = n(rng);
  return d;
}

float StoredStep(const std::vector<uint8_t>& payload) {
  float step;
  std::memcpy(&step, &payload[16], 4);
  return step;
}

std::vector<float> Decode(const std::vector<uint8_t>& payload) {
  std::vector<float> out(kRows * kCols);
  EXPECT_THAT(DecodeEcqMatrix(payload, kRows, kCols, out.data()), IsOk());
  return out;
}

struct Sums {
  double x = 0, y = 0, e = 0, err = 0;  // <d, r>, ||r||^2, ||d||^2, ||d - r||^2
};
Sums SumsOf(const std::vector<float>& d, const std::vector<float>& r) {
  Sums s;
  for (size_t i = 0; i < d.size(); ++i) {
    s.x += double{d[i]} * r[i];
    s.y += double{r[i]} * r[i];
    s.e += double{d[i]} * d[i];
    s.err += (double{d[i]} - r[i]) * (double{d[i]} - r[i]);
  }
  return s;
}

// At ~1 bit per weight (step 1.8 sigma) the least-squares reconstruction keeps ~0.7 of
// the delta along it; gain weight 2 scales the same codes by g = 2x / (y + x^2 / e).
TEST(EcqGainTest, StoredStepIsQuantizerStepTimesTheWeightedGain) {
  const auto d = NoiseDelta(1);
  const float step = 1.8e-3f;
  EcqOptions ls, w2;
  ls.try_low_rank = w2.try_low_rank = false;
  ls.gain_weight = 1.0;
  w2.gain_weight = 2.0;
  ASSERT_OK_AND_ASSIGN(auto t1, EcqTensor::Prepare(d.data(), kRows, kCols, ls));
  ASSERT_OK_AND_ASSIGN(auto t2, EcqTensor::Prepare(d.data(), kRows, kCols, w2));
  EcqTrial choice;
  ASSERT_OK_AND_ASSIGN(auto p1, t1->Encode(step, &choice));
  EXPECT_EQ(StoredStep(p1), step);  // gain 1: the quantizer's step itself
  EcqTrial trial2;
  ASSERT_OK_AND_ASSIGN(auto p2, t2->Encode(step, &trial2, &choice));  // the same codes
  ASSERT_EQ(p1.size(), p2.size());
  const Sums s1 = SumsOf(d, Decode(p1));
  EXPECT_NEAR(s1.x / s1.e, 0.70, 0.05);  // the least-squares shrinkage at this rate
  const double g = 2.0 * s1.x / (s1.y + s1.x * s1.x / s1.e);
  EXPECT_GT(g, 1.1);
  EXPECT_NEAR(StoredStep(p2) / step, g, 1e-4 * g);
  const Sums s2 = SumsOf(d, Decode(p2));
  EXPECT_NEAR(s2.x / s2.e, g * s1.x / s1.e, 1e-4);  // more of the delta kept along it
  EXPECT_GT(s2.err, s1.err);                        // for some more squared error,
  EXPECT_NEAR(trial2.distortion, s2.err, 1e-3 * s2.err);  // which the trial reports
  EXPECT_LT(std::sqrt(s2.err / s2.e), 0.62);  // still below 1-bit Delta-DCT (0.60-0.61)
}

TEST(EcqGainTest, BadGainWeightIsInvalidArgument) {
  const auto d = NoiseDelta(2);
  for (double w : {0.0, 0.99, -1.0, std::nan(""), 2e6}) {
    EcqOptions o;
    o.gain_weight = w;
    EXPECT_THAT(EcqTensor::Prepare(d.data(), kRows, kCols, o).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gain_weight")))
        << w;
  }
}

TEST(EcqGainTest, ZeroDeltaHasGainOne) {
  std::vector<float> d(kRows * kCols, 0.0f);
  EcqOptions o;
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), kRows, kCols, 1e-3f, o));
  EXPECT_EQ(StoredStep(enc), 1e-3f);
  for (float v : Decode(enc)) ASSERT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace deltaserve::codec
