#include "codec/payload_info.h"

#include <random>
#include <vector>

#include "codec/delta_dct.h"
#include "codec/delta_ecq.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int64_t kRows = 128, kCols = 96;

std::vector<float> Noise(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1e-3f);
  std::vector<float> d(kRows * kCols);
  for (auto& x : d) x = n(rng);
  return d;
}

TensorRecord Record(Encoding e, const std::vector<uint8_t>& payload) {
  TensorRecord r;
  r.info.name = "w";
  r.encoding = e;
  r.rows = kRows;
  r.cols = kCols;
  r.payload = payload;
  return r;
}

TEST(PayloadInfoTest, DeltaDctPayload) {
  const auto d = Noise(1);
  DctParams p;
  p.patch_size = 16;
  ASSERT_OK_AND_ASSIGN(auto payload, EncodeDctMatrix(d.data(), kRows, kCols, p));
  ASSERT_OK_AND_ASSIGN(PayloadInfo info, DescribePayload(Record(Encoding::kDct, payload)));
  EXPECT_EQ(info.transform, "dct");
  EXPECT_EQ(info.patch_size, 16);
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.ToString(), "dct p16");
}

TEST(PayloadInfoTest, EcqPayloads) {
  // A rank-3 delta: the encoder keeps low-rank factors.
  std::vector<float> d(kRows * kCols);
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(3 * kRows), v(3 * kCols);
  for (auto& x : u) x = n(rng);
  for (auto& x : v) x = n(rng);
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t c = 0; c < kCols; ++c) {
      float s = 0.0f;
      for (int k = 0; k < 3; ++k) s += u[k * kRows + r] * v[k * kCols + c];
      d[r * kCols + c] = 1e-3f * (s + 0.01f * n(rng));
    }
  }
  ASSERT_OK_AND_ASSIGN(auto lr, EncodeEcqMatrix(d.data(), kRows, kCols, 2e-5f));
  ASSERT_OK_AND_ASSIGN(PayloadInfo info, DescribePayload(Record(Encoding::kEcq, lr)));
  EXPECT_GE(info.rank, 3);
  EXPECT_THAT(info.ToString(), HasSubstr(" + rank "));

  EcqOptions plain;
  plain.try_low_rank = false;
  plain.try_identity = false;
  const auto noise = Noise(3);
  ASSERT_OK_AND_ASSIGN(auto dct, EncodeEcqMatrix(noise.data(), kRows, kCols, 1e-3f, plain));
  ASSERT_OK_AND_ASSIGN(info, DescribePayload(Record(Encoding::kEcq, dct)));
  EXPECT_EQ(info.ToString(), "dct p32");
  EXPECT_EQ(info.rank, 0);
}

TEST(PayloadInfoTest, BadPayloadsAndLosslessRecords) {
  const auto d = Noise(4);
  ASSERT_OK_AND_ASSIGN(auto payload, EncodeEcqMatrix(d.data(), kRows, kCols, 1e-3f));
  payload.resize(20);  // truncated inside the fixed header
  EXPECT_THAT(DescribePayload(Record(Encoding::kEcq, payload)).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DescribePayload(Record(Encoding::kRaw, payload)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not lossy")));
}

}  // namespace
}  // namespace deltaserve::codec
