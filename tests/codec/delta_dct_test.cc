#include "codec/delta_dct.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "codec/internal/merge.h"
#include "codec/tensor.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::RelError;
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

// Merge must equal "decode, then add in float32, then cast", bit for bit.
TEST(DeltaDctMergeTest, EqualsDecodeThenAddThenCast) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{67, 45}, {64, 64}, {1, 9}}) {
    const auto d = MakeDelta(rows, cols, 5);
    for (const char* sched : {"1:1", "2:0.5,0:0.5", "4:0.25,1:0.25,0:0.5"}) {
      ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols, Params(16, sched, Quantizer::kClipped)));
      std::vector<float> delta_hat(rows * cols);
      ASSERT_THAT(DecodeDctMatrix(enc, rows, cols, delta_hat.data()), IsOk());
      std::mt19937 rng(9);
      std::normal_distribution<float> n(0.0f, 0.05f);
      std::vector<float> base_f(rows * cols);
      for (auto& x : base_f) x = n(rng);
      base_f[0] = -0.0f;  // -0 + 0 (a dropped patch) must become +0 in both paths
      for (DType bt : {DType::kF16, DType::kBF16, DType::kF32}) {
        std::vector<uint8_t> base(rows * cols * DTypeSize(bt));
        FromFloat32(base_f.data(), rows * cols, bt, base.data());
        for (DType ot : {DType::kF16, DType::kBF16, DType::kF32}) {
          std::vector<float> sum(rows * cols);
          ToFloat32(base.data(), bt, rows * cols, sum.data());
          for (int64_t i = 0; i < rows * cols; ++i) sum[i] += delta_hat[i];
          std::vector<uint8_t> want(rows * cols * DTypeSize(ot)), got(want.size(), 0xcd);
          FromFloat32(sum.data(), rows * cols, ot, want.data());
          ASSERT_THAT(DecodeDctMatrixMerge(enc, rows, cols, base.data(), bt, ot, got.data()),
                      IsOk());
          EXPECT_EQ(got, want) << rows << "x" << cols << " " << sched << " "
                               << DTypeName(bt) << "->" << DTypeName(ot);
        }
      }
    }
  }
}

// F16 -> F16 and BF16 -> BF16 at p = 32 (decoded through the fused inverse + merge on
// AVX-512 CPUs, the unfused strip path elsewhere): the bytes and saturation count of
// DecodeDctMatrix, add, saturate and cast, for shapes with edge patches in both
// directions, dropped patches, whole and cut row ranges, and (F16) sums past the range.
TEST(DeltaDctMergeTest, Half16Patch32EqualsDecodeThenAddSaturateCast) {
 for (DType dtype : {DType::kF16, DType::kBF16}) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{96, 100}, {64, 64},
                                                                     {67, 45}, {33, 129}}) {
    auto d = MakeDelta(rows, cols, 21);
    for (float& x : d) x *= 2e4f;  // ~20-100: enough to push 65504 past F16's range
    for (const char* sched : {"1:1", "2:0.5,0:0.5", "4:0.25,1:0.25,0:0.5"}) {
      ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols, Params(32, sched)));
      std::vector<float> delta_hat(rows * cols);
      ASSERT_THAT(DecodeDctMatrix(enc, rows, cols, delta_hat.data()), IsOk());
      std::mt19937 rng(4);
      std::normal_distribution<float> n(0.0f, 0.05f);
      std::vector<float> base_f(rows * cols);
      for (auto& x : base_f) x = n(rng);
      // Saturating sums: 65504 + a positive delta rounds to Inf unless saturated.
      for (int64_t i = 0; i < rows * cols; i += 17) {
        base_f[i] = delta_hat[i] >= 0 ? 65504.0f : -65504.0f;
      }
      base_f[1] = -0.0f;
      std::vector<uint8_t> base(rows * cols * 2);
      FromFloat32(base_f.data(), rows * cols, dtype, base.data());
      std::vector<float> sum(rows * cols);
      ToFloat32(base.data(), dtype, rows * cols, sum.data());
      for (int64_t i = 0; i < rows * cols; ++i) sum[i] += delta_hat[i];
      const int64_t want_saturated = internal::SaturateForCast(sum.data(), rows * cols, dtype);
      std::vector<uint8_t> want(rows * cols * 2);
      FromFloat32(sum.data(), rows * cols, dtype, want.data());
      for (std::vector<int64_t> cuts : {std::vector<int64_t>{0, rows}, {0, 32, rows}, {0, 5, rows}}) {
        if (cuts[1] > rows) continue;
        std::vector<uint8_t> got(want.size(), 0xcd);
        int64_t saturated = 0;
        for (size_t i = 0; i + 1 < cuts.size(); ++i) {
          ASSERT_THAT(DecodeDctMatrixMergeRows(enc, rows, cols, cuts[i], cuts[i + 1], base.data(),
                                               dtype, dtype, got.data(), nullptr,
                                               &saturated),
                      IsOk());
        }
        EXPECT_EQ(got, want) << DTypeName(dtype) << " " << rows << "x" << cols << " " << sched
                             << " cuts " << cuts[1];
        EXPECT_EQ(saturated, want_saturated) << rows << "x" << cols << " " << sched;
      }
      if (dtype == DType::kF16) {
        EXPECT_GT(want_saturated, 0);
      }
    }
  }
 }
}

// Row ranges: any split of [0, rows) (aligned or not, empty pieces, one row) gives the
// full decode's bytes; each call writes only its rows; bad ranges are refused.
TEST(DeltaDctMergeTest, RowRangesUnionEqualsFullDecode) {
  const int64_t rows = 133, cols = 70;
  const auto d = MakeDelta(rows, cols, 11);
  std::vector<uint8_t> base(rows * cols * 2);
  {
    std::vector<float> bf(rows * cols);
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0f, 0.05f);
    for (auto& x : bf) x = n(rng);
    FromFloat32(bf.data(), rows * cols, DType::kF16, base.data());
  }
  for (int p : {8, 32}) {
    for (const char* sched : {"1:1", "4:0.25,1:0.25,0:0.5"}) {
      ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols,
                                                     Params(p, sched, Quantizer::kClipped)));
      std::vector<uint8_t> full(rows * cols * 2);
      ASSERT_THAT(DecodeDctMatrixMerge(enc, rows, cols, base.data(), DType::kF16, DType::kF16,
                                       full.data()),
                  IsOk());
      for (std::vector<int64_t> cuts :
           {std::vector<int64_t>{0, rows}, {0, 64, 128, rows}, {0, 1, 7, 7, 40, 99, 132, rows},
            {0, 32, 33, 96, rows}}) {
        std::vector<uint8_t> got(full.size(), 0xcd);
        for (size_t i = 0; i + 1 < cuts.size(); ++i) {
          std::vector<uint8_t> before = got;
          ASSERT_THAT(DecodeDctMatrixMergeRows(enc, rows, cols, cuts[i], cuts[i + 1],
                                               base.data(), DType::kF16, DType::kF16,
                                               got.data()),
                      IsOk());
          // Only rows [cuts[i], cuts[i+1]) changed.
          const size_t lo = cuts[i] * cols * 2, hi = cuts[i + 1] * cols * 2;
          EXPECT_TRUE(std::equal(got.begin(), got.begin() + lo, before.begin()));
          EXPECT_TRUE(std::equal(got.begin() + hi, got.end(), before.begin() + hi));
        }
        EXPECT_EQ(got, full) << "p=" << p << " " << sched << " cuts " << cuts.size();
      }
      std::vector<uint8_t> out(full.size());
      EXPECT_THAT(DecodeDctMatrixMergeRows(enc, rows, cols, 5, 4, base.data(), DType::kF16,
                                           DType::kF16, out.data()),
                  StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row range")));
      EXPECT_THAT(DecodeDctMatrixMergeRows(enc, rows, cols, 0, rows + 1, base.data(),
                                           DType::kF16, DType::kF16, out.data()),
                  StatusIs(absl::StatusCode::kInvalidArgument));
      EXPECT_THAT(DecodeDctMatrixMergeRows(enc, rows, cols, -1, 3, base.data(), DType::kF16,
                                           DType::kF16, out.data()),
                  StatusIs(absl::StatusCode::kInvalidArgument));
    }
  }
}

TEST(DeltaDctTest, DeterministicEncodeAndDecode) {
  const int64_t rows = 100, cols = 70;
  const auto d = MakeDelta(rows, cols, 6);
  const DctParams params;
  ASSERT_OK_AND_ASSIGN(auto a, EncodeDctMatrix(d.data(), rows, cols, params));
  ASSERT_OK_AND_ASSIGN(auto b, EncodeDctMatrix(d.data(), rows, cols, params));
  EXPECT_EQ(a, b);
  std::vector<float> x(rows * cols), y(rows * cols, 1.0f);
  ASSERT_THAT(DecodeDctMatrix(a, rows, cols, x.data()), IsOk());
  ASSERT_THAT(DecodeDctMatrix(a, rows, cols, y.data()), IsOk());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);
}

// Layout of a small payload, byte by byte (codec/FORMAT.md).
TEST(DeltaDctFormatTest, HeaderAndSizes) {
  const int64_t rows = 20, cols = 40;  // p = 16: 2 x 3 = 6 patches
  const auto d = MakeDelta(rows, cols, 8);
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols,
                                                 Params(16, "2:0.5,0:0.5", Quantizer::kMinMax, true)));
  ASSERT_GE(enc.size(), 19u);
  EXPECT_EQ(std::string(enc.begin(), enc.begin() + 4), "DDCT");
  EXPECT_EQ(enc[4], 1);   // version
  EXPECT_EQ(enc[5], 16);  // p
  EXPECT_EQ(enc[6], 0);   // kMinMax
  EXPECT_EQ(enc[7], 1);   // separate_dc
  EXPECT_EQ(enc[8] | enc[9] << 8 | enc[10] << 16 | enc[11] << 24, 20);
  EXPECT_EQ(enc[12] | enc[13] << 8, 40);
  EXPECT_EQ(enc[16], 2);  // levels
  EXPECT_EQ(enc[17], 2);
  EXPECT_EQ(enc[18], 0);
  // 19 header + 1 map byte (6 x 1 bit) + 3 kept x (dc, offset, scale) x 2 bytes +
  // ceil(3 x 255 x 2 / 8) code bytes.
  EXPECT_EQ(enc.size(), 19u + 1u + 18u + 192u);
}

TEST(DeltaDctCorruptionTest, EveryTruncationIsAnError) {
  const int64_t rows = 17, cols = 33;
  const auto d = MakeDelta(rows, cols, 4);
  for (bool dc : {false, true}) {
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols,
                                                   Params(8, "3:0.3,1:0.3,0:0.4", Quantizer::kMinMax, dc)));
    std::vector<float> out(rows * cols);
    for (size_t len = 0; len < enc.size(); ++len) {
      // An exact-size heap copy, so ASan catches any over-read.
      std::vector<uint8_t> cut(enc.begin(), enc.begin() + len);
      const absl::Status s = DecodeDctMatrix(cut, rows, cols, out.data());
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss)) << "length " << len;
    }
    std::vector<uint8_t> longer(enc);
    longer.push_back(0);
    EXPECT_THAT(DecodeDctMatrix(longer, rows, cols, out.data()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("trailing")));
  }
}

TEST(DeltaDctCorruptionTest, RandomByteFlipsNeverCrash) {
  const int64_t rows = 40, cols = 24;
  const auto d = MakeDelta(rows, cols, 12);
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols, Params(8, "4:0.25,2:0.25,1:0.25,0:0.25")));
  std::mt19937 rng(3);
  std::vector<float> out(rows * cols);
  std::vector<uint8_t> base(rows * cols * 2, 0), merged(rows * cols * 2);
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bad(enc);
    const int flips = 1 + trial % 3;
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    const absl::Status s = DecodeDctMatrix(bad, rows, cols, out.data());
    const absl::Status m = DecodeDctMatrixMerge(bad, rows, cols, base.data(), DType::kF16,
                                                DType::kF16, merged.data());
    EXPECT_EQ(s.code(), m.code());
    if (!s.ok()) {
      ++errors;
      EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                  s.code() == absl::StatusCode::kInvalidArgument) << s;
    }
  }
  EXPECT_GT(errors, 100);  // header, map, parameter and padding checks catch many
}

TEST(DeltaDctCorruptionTest, SpecificBadFields) {
  const int64_t rows = 20, cols = 40;
  const auto d = MakeDelta(rows, cols, 8);
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), rows, cols, Params(16, "2:0.5,0:0.5")));
  std::vector<float> out(rows * cols);
  auto decode_with = [&](size_t at, uint8_t value) {
    std::vector<uint8_t> bad(enc);
    bad[at] = value;
    return DecodeDctMatrix(bad, rows, cols, out.data());
  };
  EXPECT_THAT(decode_with(0, 'X'), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  EXPECT_THAT(decode_with(4, 2), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version")));
  EXPECT_THAT(decode_with(5, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("patch size")));
  EXPECT_THAT(decode_with(5, 65), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(decode_with(6, 3), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("quantizer")));
  EXPECT_THAT(decode_with(7, 2), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("flags")));
  EXPECT_THAT(decode_with(8, 21), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(decode_with(16, 0), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("level")));
  EXPECT_THAT(decode_with(17, 9), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bit-width")));
  EXPECT_THAT(decode_with(19, 0xff), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("padding")));
  // A lying bit-width table: patches claim more code bits than the payload holds.
  EXPECT_THAT(decode_with(17, 8), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  // A non-finite scale (bf16 0x7f80 = inf) in the first kept patch: bytes 22..23.
  {
    std::vector<uint8_t> bad(enc);
    bad[22] = 0x80;
    bad[23] = 0x7f;
    EXPECT_THAT(DecodeDctMatrix(bad, rows, cols, out.data()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("non-finite")));
    bad[22] = 0x80;
    bad[23] = 0xbf;  // -1.0
    EXPECT_THAT(DecodeDctMatrix(bad, rows, cols, out.data()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("negative scale")));
  }
  // Wrong caller shape, and bad caller arguments.
  EXPECT_THAT(DecodeDctMatrix(enc, rows + 1, cols, out.data()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("20 x 40")));
  EXPECT_THAT(DecodeDctMatrix(enc, 0, cols, out.data()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DecodeDctMatrixMerge(enc, rows, cols, nullptr, DType::kF16, DType::kF16, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A lying shape with an all-dropped schedule must not allocate per-patch state for
// 2^64 patches: the payload is tiny but claims a 4G x 4G matrix.
TEST(DeltaDctCorruptionTest, HugeClaimedShapeWithTinyPayload) {
  const std::vector<float> d(4, 0.0f);
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeDctMatrix(d.data(), 2, 2, Params(2, "1:1")));
  std::vector<uint8_t> bad(enc);
  for (int i = 8; i < 16; ++i) bad[i] = 0xff;
  std::vector<float> out(4);
  EXPECT_THAT(DecodeDctMatrix(bad, 0xffffffffLL, 0xffffffffLL, out.data()),
              StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace deltaserve::codec
