#include "codec/delta_ecq.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/ecq_alloc.h"
#include "codec/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::RelError;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// Low-rank structure plus noise, like a finetuning delta (scale ~1e-3).
std::vector<float> MakeDelta(int64_t rows, int64_t cols, uint32_t seed, float noise = 0.3f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(rows), v(cols), d(rows * cols);
  for (auto& x : u) x = n(rng);
  for (auto& x : v) x = n(rng);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[r * cols + c] = 1e-3f * (u[r] * v[c] + noise * n(rng));
  }
  return d;
}

// Smooth (random-walk) rank-1 structure plus a little noise: the DCT concentrates it.
std::vector<float> MakeSmoothDelta(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> u(rows), v(cols), d(rows * cols);
  float a = 0, b = 0;
  for (auto& x : u) x = (a += 0.2f * n(rng));
  for (auto& x : v) x = (b += 0.2f * n(rng));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[r * cols + c] = 1e-3f * (u[r] * v[c] + 0.01f * n(rng));
  }
  return d;
}

std::vector<float> Decode(const std::vector<uint8_t>& enc, int64_t rows, int64_t cols) {
  std::vector<float> out(rows * cols, 123.0f);
  EXPECT_THAT(DecodeEcqMatrix(enc, rows, cols, out.data()), IsOk());
  return out;
}

void PutU32(std::vector<uint8_t>* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutF32(std::vector<uint8_t>* b, size_t at, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  PutU32(b, at, u);
}

TEST(EcqTest, ErrorFollowsStep) {
  const int64_t rows = 96, cols = 80;
  const auto d = MakeDelta(rows, cols, 1);
  double prev_err = 2.0;
  size_t prev_size = 0;
  for (float step : {4e-3f, 1e-3f, 2.5e-4f, 6e-5f}) {
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, step));
    const double err = RelError(d, Decode(enc, rows, cols));
    EXPECT_LT(err, prev_err) << step;
    EXPECT_GT(enc.size(), prev_size) << step;
    prev_err = err;
    prev_size = enc.size();
  }
  // At the finest step the error is about step / sqrt(12) per weight.
  EXPECT_LT(prev_err, 0.05);
}

TEST(EcqTest, EdgeShapesAndZeroDelta) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {1, 300}, {300, 1}, {33, 17}, {64, 64}, {65, 129}}) {
    for (int p : {2, 8, 32}) {
      EcqOptions o;
      o.patch_size = p;
      const auto d = MakeDelta(rows, cols, 5);
      ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, 1e-4f, o));
      EXPECT_LT(RelError(d, Decode(enc, rows, cols)), 0.1) << rows << "x" << cols << " p" << p;
      const std::vector<float> zero(rows * cols, 0.0f);
      ASSERT_OK_AND_ASSIGN(auto z, EncodeEcqMatrix(zero.data(), rows, cols, 1e-4f, o));
      EXPECT_EQ(Decode(z, rows, cols), zero);
    }
  }
}

TEST(EcqTest, TransformChosenByCost) {
  const int64_t rows = 64, cols = 64;
  // Smooth rank-1: the DCT concentrates it.
  std::vector<float> smooth(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) smooth[r * cols + c] = 1e-3f * std::cos(0.05f * r) * std::cos(0.03f * c);
  }
  ASSERT_OK_AND_ASSIGN(auto a, EncodeEcqMatrix(smooth.data(), rows, cols, 1e-5f));
  EXPECT_EQ(a[5], static_cast<uint8_t>(EcqTransform::kDct));
  // A few spikes: the DCT would spread each over a whole patch.
  std::vector<float> spikes(rows * cols, 0.0f);
  for (int i = 0; i < 10; ++i) spikes[i * 397 % (rows * cols)] = 1e-2f;
  ASSERT_OK_AND_ASSIGN(auto b, EncodeEcqMatrix(spikes.data(), rows, cols, 1e-4f));
  EXPECT_EQ(b[5], static_cast<uint8_t>(EcqTransform::kIdentity));
  EXPECT_EQ(b[6], 1);
  EXPECT_LT(RelError(spikes, Decode(b, rows, cols)), 0.01);
  // Without identity the choice is always the DCT.
  EcqOptions dct_only;
  dct_only.try_identity = false;
  ASSERT_OK_AND_ASSIGN(auto c, EncodeEcqMatrix(spikes.data(), rows, cols, 1e-4f, dct_only));
  EXPECT_EQ(c[5], static_cast<uint8_t>(EcqTransform::kDct));
}

TEST(EcqTest, LargeCodesAreEscaped) {
  const int64_t rows = 16, cols = 16;
  std::vector<float> d(rows * cols, 0.0f);
  d[3] = 1.0f;
  d[77] = -0.5f;
  d[200] = 3e-3f;
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, 1e-3f));
  const auto out = Decode(enc, rows, cols);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_NEAR(out[i], d[i], 1e-3) << i;
}

TEST(EcqTest, RejectsBadInput) {
  const auto d = MakeDelta(4, 4, 2);
  EXPECT_THAT(EncodeEcqMatrix(d.data(), 0, 4, 1e-3f).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EncodeEcqMatrix(d.data(), 4, 4, 0.0f).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step")));
  EXPECT_THAT(EncodeEcqMatrix(d.data(), 4, 4, NAN).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EncodeEcqMatrix(d.data(), 4, 4, 1e-12f).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too small")));
  EcqOptions o;
  o.patch_size = 1;
  EXPECT_THAT(EncodeEcqMatrix(d.data(), 4, 4, 1e-3f, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<float> bad(d);
  bad[5] = INFINITY;
  EXPECT_THAT(EncodeEcqMatrix(bad.data(), 4, 4, 1e-3f).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  EXPECT_THAT(EncodeEcqMatrix(nullptr, 4, 4, 1e-3f).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EcqTest, Deterministic) {
  const auto d = MakeDelta(70, 90, 6);
  ASSERT_OK_AND_ASSIGN(auto a, EncodeEcqMatrix(d.data(), 70, 90, 2e-4f));
  ASSERT_OK_AND_ASSIGN(auto b, EncodeEcqMatrix(d.data(), 70, 90, 2e-4f));
  EXPECT_EQ(a, b);
  const auto x = Decode(a, 70, 90), y = Decode(a, 70, 90);
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);
}

// Fixed header, byte by byte (codec/FORMAT.md, "Entropy-coded payload").
TEST(EcqFormatTest, Header) {
  const int64_t rows = 300, cols = 520;  // p = 32: 17 padded patch columns = 544 wide
  const auto d = MakeSmoothDelta(rows, cols, 8);
  EcqOptions o;
  o.try_low_rank = false;  // the layout without factors (with: delta_ecq_lowrank_test.cc)
  o.gain_weight = 1.0;     // the stored step is the quantizer's (gain: delta_ecq_gain_test.cc)
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, 5e-4f, o));
  EXPECT_EQ(std::string(enc.begin(), enc.begin() + 4), "DECQ");
  EXPECT_EQ(enc[4], 1);   // version
  EXPECT_EQ(enc[5], 1);   // DCT (a smooth matrix)
  EXPECT_EQ(enc[6], 32);  // p
  EXPECT_EQ(enc[7], 0);   // flags
  EXPECT_EQ(enc[8] | enc[9] << 8, 300);
  EXPECT_EQ(enc[12] | enc[13] << 8, 520);
  float step;
  std::memcpy(&step, &enc[16], 4);
  EXPECT_EQ(step, 5e-4f);
  float bias;
  std::memcpy(&bias, &enc[20], 4);
  EXPECT_GE(bias, 0.0f);
  EXPECT_LT(bias, 1.0f);
  // 64-row units of 64 x 544 = 34816 symbols; 4 units reach 2^17: 256 rows per chunk.
  EXPECT_EQ(enc[24] | enc[25] << 8, 256);
  EXPECT_EQ(enc[28], 2);  // chunks
  EXPECT_EQ(EcqChunkRows(enc), 256);
  const uint32_t len0 = enc[32] | enc[33] << 8 | enc[34] << 16 | uint32_t{enc[35]} << 24;
  const uint32_t len1 = enc[36] | enc[37] << 8 | enc[38] << 16 | uint32_t{enc[39]} << 24;
  EXPECT_EQ(enc.size(), 40u + len0 + len1);
}

TEST(EcqMergeTest, RowRangesUnionEqualsFullDecodeThenMerge) {
  const int64_t rows = 600, cols = 512;  // 3 chunks of 256 rows (the last of 88)
  const auto d = MakeSmoothDelta(rows, cols, 11);
  std::vector<uint8_t> base(rows * cols * 2);
  std::vector<float> bf(rows * cols);
  {
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0f, 0.05f);
    for (auto& x : bf) x = n(rng);
    FromFloat32(bf.data(), rows * cols, DType::kF16, base.data());
    ToFloat32(base.data(), DType::kF16, rows * cols, bf.data());
  }
  for (bool identity : {false, true}) {
    std::vector<float> src = d;
    if (identity) {  // sparse: the identity transform wins
      for (size_t i = 0; i < src.size(); ++i) src[i] = i % 97 == 0 ? 1e-2f : 0.0f;
    }
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(src.data(), rows, cols, 1e-4f));
    ASSERT_EQ(enc[5], identity ? 0 : 1);
    const auto dec = Decode(enc, rows, cols);
    std::vector<uint8_t> want(rows * cols * 2);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float s = bf[i] + dec[i];
      FromFloat32(&s, 1, DType::kF16, &want[2 * i]);
    }
    std::vector<uint8_t> full(want.size());
    ASSERT_THAT(DecodeEcqMatrixMergeRows(enc, rows, cols, 0, rows, base.data(), DType::kF16,
                                         DType::kF16, full.data()),
                IsOk());
    EXPECT_EQ(full, want);
    for (std::vector<int64_t> cuts : {std::vector<int64_t>{0, 256, 512, rows},
                                      {0, 1, 7, 7, 300, 599, rows}, {0, 64, 320, rows}}) {
      std::vector<uint8_t> got(full.size(), 0xcd);
      std::vector<std::pair<int64_t, int64_t>> done;
      for (size_t i = 0; i + 1 < cuts.size(); ++i) {
        std::vector<uint8_t> before = got;
        ASSERT_THAT(DecodeEcqMatrixMergeRows(
                        enc, rows, cols, cuts[i], cuts[i + 1], base.data(), DType::kF16,
                        DType::kF16, got.data(),
                        [&](int64_t a, int64_t b) { done.emplace_back(a, b); }),
                    IsOk());
        const size_t lo = cuts[i] * cols * 2, hi = cuts[i + 1] * cols * 2;
        EXPECT_TRUE(std::equal(got.begin(), got.begin() + lo, before.begin()));
        EXPECT_TRUE(std::equal(got.begin() + hi, got.end(), before.begin() + hi));
      }
      EXPECT_EQ(got, full);
      int64_t at = 0;  // on_rows covers [0, rows) in order, without overlap
      for (auto [a, b] : done) {
        EXPECT_EQ(a, at);
        EXPECT_GT(b, a);
        at = b;
      }
      EXPECT_EQ(at, rows);
    }
    std::vector<uint8_t> out(full.size());
    EXPECT_THAT(DecodeEcqMatrixMergeRows(enc, rows, cols, 5, 4, base.data(), DType::kF16,
                                         DType::kF16, out.data()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row range")));
  }
}

TEST(EcqCorruptionTest, EveryTruncationIsAnError) {
  const int64_t rows = 40, cols = 33;
  auto d = MakeDelta(rows, cols, 4);
  d[7] = 0.5f;  // an escape
  // DCT, identity, and low-rank factors + residual (flag bit 0).
  for (int variant : {0, 1, 2}) {
    const bool identity = variant == 1, low_rank = variant == 2;
    EcqOptions o;
    o.patch_size = 8;
    o.try_low_rank = low_rank;
    std::vector<float> src = d;
    if (identity) {
      for (size_t i = 0; i < src.size(); ++i) src[i] = i % 31 == 0 ? src[i] : 0.0f;
    }
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(src.data(), rows, cols, 1e-4f, o));
    ASSERT_EQ(enc[7], low_rank ? 1 : 0);
    std::vector<float> out(rows * cols);
    for (size_t len = 0; len < enc.size(); ++len) {
      std::vector<uint8_t> cut(enc.begin(), enc.begin() + len);  // exact size: ASan sees over-reads
      EXPECT_THAT(DecodeEcqMatrix(cut, rows, cols, out.data()),
                  StatusIs(absl::StatusCode::kDataLoss))
          << "length " << len;
    }
    std::vector<uint8_t> longer(enc);
    longer.push_back(0);
    EXPECT_THAT(DecodeEcqMatrix(longer, rows, cols, out.data()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("trailing")));
  }
}

TEST(EcqCorruptionTest, RandomByteFlipsNeverCrash) {
  const int64_t rows = 70, cols = 40;
  auto d = MakeDelta(rows, cols, 12);
  d[100] = 0.3f;
  for (bool low_rank : {false, true}) {
    EcqOptions o;
    o.patch_size = 8;
    o.try_low_rank = low_rank;
    ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, 2e-4f, o));
    ASSERT_EQ(enc[7], low_rank ? 1 : 0);  // flag bit 0: low-rank factors
    std::mt19937 rng(3);
    std::vector<float> out(rows * cols);
    std::vector<uint8_t> base(rows * cols * 2, 0), merged(rows * cols * 2);
    int errors = 0;
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<uint8_t> bad(enc);
      const int flips = 1 + trial % 3;
      for (int f = 0; f < flips; ++f)
        bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      const absl::Status s = DecodeEcqMatrix(bad, rows, cols, out.data());
      const absl::Status m = DecodeEcqMatrixMergeRows(bad, rows, cols, 0, rows, base.data(),
                                                      DType::kF16, DType::kF16, merged.data());
      EXPECT_EQ(s.code(), m.code());
      if (!s.ok()) {
        ++errors;
        EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                    s.code() == absl::StatusCode::kInvalidArgument)
            << s;
      } else {
        for (float x : out) ASSERT_TRUE(std::isfinite(x));
      }
    }
    EXPECT_GT(errors, 100);
  }
}

TEST(EcqCorruptionTest, SpecificBadFields) {
  const int64_t rows = 20, cols = 40;
  auto d = MakeSmoothDelta(rows, cols, 8);
  d[0] = 0.5f;  // escaped codes
  EcqOptions o;
  o.patch_size = 16;
  o.try_identity = false;
  o.try_low_rank = false;  // factor fields: delta_ecq_lowrank_test.cc
  ASSERT_OK_AND_ASSIGN(auto enc, EncodeEcqMatrix(d.data(), rows, cols, 1e-4f, o));
  ASSERT_EQ(enc[5], 1);
  std::vector<float> out(rows * cols);
  auto expect = [&](std::vector<uint8_t> bad, absl::StatusCode code, const char* what) {
    EXPECT_THAT(DecodeEcqMatrix(bad, rows, cols, out.data()), StatusIs(code, HasSubstr(what)));
  };
  auto with = [&](size_t at, uint8_t v) {
    std::vector<uint8_t> b(enc);
    b[at] = v;
    return b;
  };
  expect(with(0, 'X'), absl::StatusCode::kDataLoss, "bad magic");
  expect(with(4, 2), absl::StatusCode::kDataLoss, "version");
  expect(with(5, 2), absl::StatusCode::kDataLoss, "transform");
  expect(with(6, 1), absl::StatusCode::kDataLoss, "patch size");
  expect(with(6, 65), absl::StatusCode::kDataLoss, "patch size");
  expect(with(7, 2), absl::StatusCode::kDataLoss, "unknown flags");
  // Flag bit 0 without a factor section: the chunk bytes do not parse as factors.
  EXPECT_THAT(DecodeEcqMatrix(with(7, 1), rows, cols, out.data()),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeEcqMatrix(enc, rows + 1, cols, out.data()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected")));
  EXPECT_THAT(DecodeEcqMatrix(enc, rows, 0, out.data()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  for (float step : {0.0f, -1.0f, NAN, INFINITY, 1e30f}) {
    std::vector<uint8_t> b(enc);
    PutF32(&b, 16, step);
    expect(b, absl::StatusCode::kDataLoss, "step");
  }
  for (float bias : {-0.1f, 1.0f, NAN}) {
    std::vector<uint8_t> b(enc);
    PutF32(&b, 20, bias);
    expect(b, absl::StatusCode::kDataLoss, "bias");
  }
  for (uint32_t cr : {0u, 8u, 17u}) {
    std::vector<uint8_t> b(enc);
    PutU32(&b, 24, cr);
    expect(b, absl::StatusCode::kDataLoss, "chunk rows");
  }
  {
    std::vector<uint8_t> b(enc);
    PutU32(&b, 28, 2);
    expect(b, absl::StatusCode::kDataLoss, "chunks, expected");
  }
  const uint32_t len0 = enc[32] | enc[33] << 8 | enc[34] << 16 | uint32_t{enc[35]} << 24;
  ASSERT_EQ(enc.size(), 36u + len0);
  {
    std::vector<uint8_t> b(enc);
    PutU32(&b, 32, 3);
    expect(b, absl::StatusCode::kDataLoss, "too short");
  }
  const uint32_t rans_len = enc[36] | enc[37] << 8 | enc[38] << 16 | uint32_t{enc[39]} << 24;
  ASSERT_GE(len0, 4 + rans_len + 4);  // at least one escaped code
  ASSERT_EQ((len0 - 4 - rans_len) % 4, 0u);
  {
    std::vector<uint8_t> b(enc);
    PutU32(&b, 36, len0 - 3);
    expect(b, absl::StatusCode::kDataLoss, "rANS length");
  }
  {  // the escape's code must need an escape
    std::vector<uint8_t> b(enc);
    PutU32(&b, enc.size() - 4, 3);
    expect(b, absl::StatusCode::kDataLoss, "escaped code");
  }
  {  // the escaped code removed: the escape symbol has no value
    std::vector<uint8_t> b(enc.begin(), enc.end() - 4);
    PutU32(&b, 32, len0 - 4);
    expect(b, absl::StatusCode::kDataLoss, "escape symbols");
  }
  {  // the rANS stream itself damaged
    std::vector<uint8_t> b(enc);
    b[40] ^= 0xff;
    EXPECT_THAT(DecodeEcqMatrix(b, rows, cols, out.data()), StatusIs(absl::StatusCode::kDataLoss));
  }
}

TEST(EcqAllocTest, BitsTargetIsMetWithin2Percent) {
  std::vector<std::unique_ptr<EcqTensor>> owned;
  std::vector<const EcqTensor*> ts;
  uint64_t weights = 0;
  for (auto [r, c, seed] :
       std::vector<std::tuple<int, int, int>>{{256, 256, 1}, {128, 512, 2}, {300, 100, 3}}) {
    auto d = MakeDelta(r, c, seed, 1.0f);
    for (auto& x : d) x *= 1.0f + seed;  // tensors of different energies
    ASSERT_OK_AND_ASSIGN(auto t, EcqTensor::Prepare(d.data(), r, c, EcqOptions{}));
    weights += r * c;
    ts.push_back(t.get());
    owned.push_back(std::move(t));
  }
  double prev_err = 2.0;
  for (double bits : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    ASSERT_OK_AND_ASSIGN(EcqPlan plan, PlanEcq(ts, weights, 500.0, {bits, 0.0}));
    uint64_t bytes = 0;
    for (const auto& p : plan.payloads) bytes += p.size();
    EXPECT_EQ(bytes, plan.payload_bytes);
    const double got = (bytes + 500.0) * 8 / weights;
    EXPECT_NEAR(got, bits, 0.02 * bits) << bits;
    const double err = std::sqrt(plan.distortion / plan.energy);
    EXPECT_LT(err, prev_err);
    prev_err = err;
  }
  EXPECT_THAT(PlanEcq(ts, weights, 0.0, {0.0, 0.0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanEcq({}, weights, 0.0, {1.0, 0.0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EcqAllocTest, MaxErrorIsMetByDecodedWeights) {
  const int64_t rows = 200, cols = 160;
  const auto d = MakeDelta(rows, cols, 9, 1.0f);
  ASSERT_OK_AND_ASSIGN(auto t, EcqTensor::Prepare(d.data(), rows, cols, EcqOptions{}));
  std::vector<const EcqTensor*> ts = {t.get()};
  size_t prev = 0;
  for (double e : {0.5, 0.2, 0.05}) {
    ASSERT_OK_AND_ASSIGN(EcqPlan plan, PlanEcq(ts, rows * cols, 0.0, {0.0, e}));
    const double err = RelError(d, Decode(plan.payloads[0], rows, cols));
    EXPECT_LE(err, e);
    EXPECT_GT(err, 0.8 * e);  // the smallest payload that meets it, not a much larger one
    EXPECT_GT(plan.payload_bytes, prev);
    prev = plan.payload_bytes;
  }
}

}  // namespace
}  // namespace deltaserve::codec
