#include "codec/delta_dct.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// Smooth low-rank structure plus noise, like a finetuning delta.
std::vector<float> MakeDelta(int64_t rows, int64_t cols, uint32_t seed, float noise = 0.3f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(rows), v(cols), d(rows * cols);
  for (auto& x : u) x = n(rng);
  for (auto& x : v) x = n(rng);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      // Row-dependent magnitude so patch norms differ.
      const float mag = 1.0f + 3.0f * static_cast<float>((r * 7 + c / 5) % 11) / 11.0f;
      d[r * cols + c] = 1e-3f * (mag * u[r] * v[c] + noise * n(rng));
    }
  }
  return d;
}

double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

DctParams Params(int p, const char* schedule, Quantizer q = Quantizer::kMinMax,
                 bool separate_dc = false) {
  DctParams params;
  params.patch_size = p;
  params.schedule = BitSchedule::Parse(schedule).value();
  params.quantizer = q;
  params.separate_dc = separate_dc;
  return params;
}

double RoundTripError(const std::vector<float>& d, int64_t rows, int64_t cols,
                      const DctParams& params, size_t* bytes = nullptr) {
  auto enc = EncodeDctMatrix(d.data(), rows, cols, params);
  EXPECT_THAT(enc, IsOk());
  if (!enc.ok()) return 1e9;
  if (bytes) *bytes = enc->size();
  std::vector<float> out(rows * cols, 123.0f);
  EXPECT_THAT(DecodeDctMatrix(*enc, rows, cols, out.data()), IsOk());
  return RelError(d, out);
}

TEST(BitScheduleTest, ParsesAndPrints) {
  ASSERT_OK_AND_ASSIGN(BitSchedule s, BitSchedule::Parse("4:0.125, 2:0.25,1:0.25,0:0.375"));
  EXPECT_THAT(s.levels, ElementsAre(Pair(4, 0.125), Pair(2, 0.25), Pair(1, 0.25),
                                    Pair(0, 0.375)));
  EXPECT_EQ(s.ToString(), "4:0.125,2:0.25,1:0.25,0:0.375");
  EXPECT_DOUBLE_EQ(s.MeanBits(), 1.25);
}

TEST(BitScheduleTest, RejectsBadText) {
  EXPECT_THAT(BitSchedule::Parse(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0.5,0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"0\"")));
  EXPECT_THAT(BitSchedule::Parse("2:0.5,0:0.4"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sum")));
  EXPECT_THAT(BitSchedule::Parse("9:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("-1:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0,0:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("a:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0.5:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string many;
  for (int i = 0; i < 17; ++i) many += (i ? "," : "") + std::string("1:") + std::to_string(1.0 / 17);
  EXPECT_THAT(BitSchedule::Parse(many), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BitScheduleTest, CountsSumAndFloorBoundaries) {
  ASSERT_OK_AND_ASSIGN(BitSchedule s, BitSchedule::Parse("2:0.5,0:0.5"));
  EXPECT_THAT(s.Counts(10), ElementsAre(5, 5));
  EXPECT_THAT(s.Counts(7), ElementsAre(3, 4));
  EXPECT_THAT(s.Counts(1), ElementsAre(0, 1));
  EXPECT_THAT(s.Counts(0), ElementsAre(0, 0));
  ASSERT_OK_AND_ASSIGN(BitSchedule t, BitSchedule::Parse("4:0.125,2:0.25,1:0.25,0:0.375"));
  EXPECT_THAT(t.Counts(16), ElementsAre(2, 4, 4, 6));
  EXPECT_THAT(t.Counts(13), ElementsAre(1, 3, 4, 5));  // floors of 1.625, 4.875, 8.125
  for (int64_t n : {1, 2, 3, 17, 1000, 65536, 123457}) {
    const auto c = t.Counts(n);
    EXPECT_EQ(c[0] + c[1] + c[2] + c[3], n);
  }
}

TEST(DctParamsTest, Validate) {
  DctParams p;
  EXPECT_THAT(p.Validate(), IsOk());
  p.patch_size = 1;
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p.patch_size = 65;
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = DctParams();
  p.schedule.levels = {{2, 0.5}};
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = DctParams();
  p.quantizer = static_cast<Quantizer>(7);
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MatrixViewTest, DocumentedRule) {
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(MatrixView({3, 3, 32, 1}, 16).value(), P(9, 32));
  EXPECT_EQ(MatrixView({3, 3, 1024, 1}, 16).value(), P(9, 1024));
  EXPECT_EQ(MatrixView({1, 1, 512, 512}, 16).value(), P(512, 512));
  EXPECT_EQ(MatrixView({3, 3, 3, 32}, 16).value(), P(27, 32));
  EXPECT_EQ(MatrixView({1024, 7}, 16).value(), P(1024, 7));
  EXPECT_THAT(MatrixView({5}, 16), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MatrixView({}, 16), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MatrixView({4, 0}, 16), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DeltaDctTest, ErrorDecreasesWithBits) {
  const int64_t rows = 64, cols = 96;
  const auto d = MakeDelta(rows, cols, 1);
  for (Quantizer q : {Quantizer::kClipped, Quantizer::kMinMax}) {
    double prev = 1.0;
    for (const char* s : {"1:0.5,0:0.5", "1:1", "2:1", "3:1", "4:1", "6:1", "8:1"}) {
      // Min-max at 1 bit puts its two levels at the extremes: worse than nothing.
      if (q == Quantizer::kMinMax && s[0] == '1') continue;
      const double e = RoundTripError(d, rows, cols, Params(16, s, q));
      EXPECT_LT(e, prev) << s;
      prev = e;
    }
    EXPECT_LT(prev, 0.01);  // all patches at 8 bits
  }
}

TEST(DeltaDctTest, AllEightBitsIsAccurateForEveryMode) {
  const int64_t rows = 40, cols = 56;
  const auto d = MakeDelta(rows, cols, 2);
  for (Quantizer q : {Quantizer::kMinMax, Quantizer::kSymmetric, Quantizer::kClipped}) {
    for (bool dc : {false, true}) {
      EXPECT_LT(RoundTripError(d, rows, cols, Params(8, "8:1", q, dc)), 0.02)
          << static_cast<int>(q) << " " << dc;
    }
  }
}

TEST(DeltaDctTest, EdgeShapes) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {17, 33}, {33, 17}, {1, 100},
                            {100, 1}, {16, 16}, {31, 5}}) {
    for (int p : {2, 8, 16, 32}) {
      const auto d = MakeDelta(rows, cols, 3);
      EXPECT_LT(RoundTripError(d, rows, cols, Params(p, "8:1")), 0.02)
          << rows << "x" << cols << " p=" << p;
    }
  }
}

TEST(DeltaDctTest, DroppedPatchesDecodeAsZero) {
  const int64_t rows = 32, cols = 32;
  std::vector<float> d(rows * cols, 0.0f);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t c = 0; c < 16; ++c) d[r * cols + c] = 0.01f * (r - c);  // patch 0 only
  for (int64_t r = 16; r < 32; ++r)
    for (int64_t c = 16; c < 32; ++c) d[r * cols + c] = 1e-5f;  // weak patch 3
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols, Params(16, "8:0.25,0:0.75")));
  std::vector<float> out(rows * cols, 5.0f);
  ASSERT_THAT(DecodeDctMatrix(enc, rows, cols, out.data()), IsOk());
  EXPECT_NEAR(out[0 * cols + 15], d[15], 3e-3);
  EXPECT_EQ(out[20 * cols + 20], 0.0f);
  EXPECT_EQ(out[0 * cols + 20], 0.0f);
}

TEST(DeltaDctTest, RejectsBadInput) {
  std::vector<float> d(16, 1.0f);
  EXPECT_THAT(EncodeDctMatrix(d.data(), 0, 16, DctParams()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  d[3] = std::nanf("");
  EXPECT_THAT(EncodeDctMatrix(d.data(), 4, 4, DctParams()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  DctParams bad;
  bad.patch_size = 0;
  EXPECT_THAT(EncodeDctMatrix(d.data(), 4, 4, bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace deltaserve::codec
