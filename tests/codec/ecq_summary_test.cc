// Codec v2's summary encoder (EcqTensor::Summarize / Choose / EncodeDelta, and
// CompressModel above EcqOptions::exhaustive_max_weights), the shared quantizer, the
// low-rank sketch test, and the parallel planner's determinism.
#include <cmath>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/delta_ecq.h"
#include "codec/internal/ecq_encode.h"
#include "codec/internal/ecq_lowrank.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::RelError;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// Rank-`rank` structure of white factors (weights 1e-3 / (1 + k)) plus Gaussian noise
// of 1e-3 x `noise` per weight.
std::vector<float> LowRankPlusNoise(int64_t rows, int64_t cols, int rank, float noise,
                                    uint32_t seed) {
  std::vector<float> d = Gaussian(rows * cols, 1e-3f * noise, seed);
  for (int k = 0; k < rank; ++k) {
    const auto u = Gaussian(rows, 1.0f, seed + 100 + k), v = Gaussian(cols, 1.0f, seed + 200 + k);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) d[r * cols + c] += 1e-3f / (1 + k) * u[r] * v[c];
    }
  }
  return d;
}

std::vector<float> Decode(const std::vector<uint8_t>& enc, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols), 123.0f);
  EXPECT_THAT(DecodeEcqMatrix(enc, rows, cols, out.data()), IsOk());
  return out;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// The vectorized symbol pass gives Quantize's symbols and escapes, zero, small, near
// the escape threshold (|code| 127 / 128) and huge codes included.
TEST(EcqQuantizeTest, SymbolsMatchQuantize) {
  std::vector<float> c = Gaussian(5000, 3.0f, 1);
  for (float x : {0.0f, -0.0f, 127.4f, -127.4f, 127.6f, -127.6f, 128.0f, -128.0f, 1e6f, -3e8f}) {
    c.push_back(x);
  }
  for (float step : {0.01f, 0.5f, 1.0f, 7.0f}) {
    for (float r : internal::kEcqRoundings) {
      std::vector<uint8_t> want(c.size()), got(c.size(), 77);
      std::vector<int32_t> want_esc, got_esc;
      internal::QuantStats st;
      std::vector<uint64_t> hist(256);
      uint64_t esc = 0;
      internal::Quantize(c.data(), c.size(), 1.0f / step, r, &st, hist.data(), &esc, want.data(),
                         &want_esc);
      internal::QuantizeSymbols(c.data(), c.size(), 1.0f / step, r, got.data(), &got_esc);
      EXPECT_EQ(got, want) << step << " " << r;
      EXPECT_EQ(got_esc, want_esc) << step << " " << r;
      EXPECT_EQ(esc, want_esc.size());
    }
  }
  // Symbols by hand at step 1, r = 1/2: 0 -> 0, -1 -> 1, 1 -> 2, 127 -> 254, -127 -> 253,
  // +-128 escape.
  const std::vector<float> v = {0.2f, -1.0f, 1.0f, 127.0f, -127.0f, 128.0f, -128.0f};
  std::vector<uint8_t> s(v.size());
  std::vector<int32_t> e;
  internal::QuantizeSymbols(v.data(), v.size(), 1.0f, 0.5f, s.data(), &e);
  EXPECT_EQ(s, (std::vector<uint8_t>{0, 1, 2, 254, 253, 255, 255}));
  EXPECT_EQ(e, (std::vector<int32_t>{128, -128}));
}

// The sorted sample's pass gives Quantize's histogram, escape and nonzero counts
// exactly, and its sums up to the order of the additions: ties (repeated magnitudes of
// both signs), zeros of both signs, codes at the rounding boundaries and escapes.
TEST(EcqQuantizeTest, SortedSampleMatchesQuantize) {
  std::vector<float> c = Gaussian(9001, 2.0f, 3);
  for (int i = 0; i < 200; ++i) c.push_back(c[i * 7]);       // ties
  for (int i = 0; i < 200; ++i) c.push_back(-c[i * 11 + 1]);  // ties of opposite sign
  for (float x : {0.0f, -0.0f, 0.5f, -0.5f, 0.58f, 1.5f, -2.5f, 127.5f, -128.0f, 4e4f, -9e6f}) {
    c.push_back(x);
  }
  const internal::EcqSortedSample sorted = internal::SortEcqSample(c);
  ASSERT_EQ(sorted.value.size(), c.size());
  ASSERT_EQ(sorted.square_prefix.size(), c.size() + 1);
  for (size_t i = 1; i < sorted.value.size(); ++i) {
    ASSERT_LE(std::fabs(sorted.value[i - 1]), std::fabs(sorted.value[i]));
  }
  auto near = [](double got, double want) {
    return std::fabs(got - want) <= 1e-12 * std::max(1.0, std::fabs(want));
  };
  for (float step : {1e-3f, 0.25f, 1.0f, 3.0f, 50.0f, 1e8f}) {
    for (float r : internal::kEcqRoundings) {
      SCOPED_TRACE(::testing::Message() << step << " " << r);
      internal::QuantStats want, got;
      std::vector<uint64_t> want_hist(256), got_hist(256);
      uint64_t want_esc = 0, got_esc = 0;
      internal::Quantize(c.data(), c.size(), 1.0f / step, r, &want, want_hist.data(), &want_esc,
                         nullptr, nullptr);
      internal::QuantizeSorted(sorted, 1.0f / step, r, &got, got_hist.data(), &got_esc);
      EXPECT_EQ(got_hist, want_hist);
      EXPECT_EQ(got_esc, want_esc);
      EXPECT_EQ(got.nonzero, want.nonzero);
      EXPECT_TRUE(near(got.zero_sq, want.zero_sq)) << got.zero_sq << " " << want.zero_sq;
      EXPECT_TRUE(near(got.sum_e, want.sum_e)) << got.sum_e << " " << want.sum_e;
      EXPECT_TRUE(near(got.sum_e2, want.sum_e2));
      EXPECT_TRUE(near(got.sum_m, want.sum_m));
      EXPECT_TRUE(near(got.sum_m2, want.sum_m2));
      EXPECT_TRUE(near(got.sum_em, want.sum_em));
    }
  }
  // All codes 0 (a huge step) and an empty sample.
  internal::QuantStats st;
  std::vector<uint64_t> hist(256);
  uint64_t esc = 0;
  internal::QuantizeSorted(sorted, 1e-12f, 0.5f, &st, hist.data(), &esc);
  EXPECT_EQ(hist[0], c.size());
  EXPECT_EQ(st.nonzero, 0u);
  EXPECT_EQ(st.zero_sq, sorted.square_prefix.back());
  const internal::EcqSortedSample empty = internal::SortEcqSample({});
  internal::QuantizeSorted(empty, 1.0f, 0.5f, &st, hist.data(), &esc);
  EXPECT_EQ(hist[0], c.size());
}

TEST(EcqLowRankSketchTest, SeesStructureAndNotNoise) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {256, 192}, {192, 256}, {512, 512}, {2048, 64}}) {
    const auto structured = LowRankPlusNoise(rows, cols, 3, 0.05f, 7);
    const auto noise = LowRankPlusNoise(rows, cols, 0, 1.0f, 8);
    auto energy = [](const std::vector<float>& d) {
      double e = 0.0;
      for (float x : d) e += static_cast<double>(x) * x;
      return e;
    };
    EXPECT_TRUE(internal::EcqLowRankMayPay(structured.data(), rows, cols, 1, energy(structured)))
        << rows << "x" << cols;
    EXPECT_FALSE(internal::EcqLowRankMayPay(noise.data(), rows, cols, 1, energy(noise)))
        << rows << "x" << cols;
    EXPECT_FALSE(internal::EcqLowRankMayPay(noise.data(), rows, cols, 8, energy(noise)))
        << rows << "x" << cols;
  }
}

// A summary codes each matrix nearly as well as the exhaustive encoder at the same step:
// the same kind of choice (factors for low rank, none for noise), error and size within
// a few percent.
TEST(EcqSummaryTest, CodesAsWellAsTheExhaustiveEncoder) {
  struct Case {
    int64_t rows, cols;
    int rank;
    float noise, step;
  };
  for (const Case& k : {Case{256, 192, 4, 0.05f, 4e-5f}, Case{256, 192, 0, 1.0f, 1.5e-3f},
                        Case{300, 70, 0, 1.0f, 4e-4f}, Case{64, 4096, 2, 0.2f, 1e-4f}}) {
    const auto d = LowRankPlusNoise(k.rows, k.cols, k.rank, k.noise, 3);
    ASSERT_OK_AND_ASSIGN(auto full, EcqTensor::Prepare(d.data(), k.rows, k.cols, EcqOptions{}));
    ASSERT_OK_AND_ASSIGN(auto sum, EcqTensor::Summarize(d.data(), k.rows, k.cols, EcqOptions{}));
    EXPECT_FALSE(full->summary());
    EXPECT_TRUE(sum->summary());
    EXPECT_EQ(sum->energy(), full->energy());
    EXPECT_GE(sum->max_abs(), full->max_abs());
    EcqTrial t_full, t_sum;
    ASSERT_OK_AND_ASSIGN(auto e_full, full->Encode(k.step, &t_full));
    const EcqTrial choice = sum->Choose(k.step);
    ASSERT_OK_AND_ASSIGN(auto e_sum, sum->EncodeDelta(d.data(), k.step, choice, &t_sum));
    EXPECT_EQ(t_sum.rank > 0, t_full.rank > 0) << k.rows << "x" << k.cols;
    EXPECT_EQ(t_sum.bytes, static_cast<double>(e_sum.size()));
    const double err_full = RelError(d, Decode(e_full, k.rows, k.cols));
    const double err_sum = RelError(d, Decode(e_sum, k.rows, k.cols));
    // Rate-distortion cost at the step's slope, relative: within 3%.
    const double lambda = std::log(2.0) * k.step * k.step / 6.0 * 8.0;
    const double j_full = t_full.distortion + lambda * e_full.size();
    const double j_sum = t_sum.distortion + lambda * e_sum.size();
    EXPECT_LT(j_sum, j_full * 1.03) << k.rows << "x" << k.cols << " errors " << err_sum << " "
                                    << err_full << " bytes " << e_sum.size() << " "
                                    << e_full.size();
    // The squared error it reports is the coded one (within the stats sample's noise).
    EXPECT_NEAR(t_sum.distortion / sum->energy(), err_sum * err_sum, 0.01 * err_sum * err_sum);
  }
}

// Rate control's probe codes a few entropy chunks of a tensor and scales their bytes:
// exact with every chunk, within 1% with every 4th one (8 chunks of 512 x 256; low-rank
// factors, DCT and identity), and rows_of's error is returned.
TEST(EcqSummaryTest, ProbeEstimatesTheCodedSize) {
  const int64_t rows = 4096, cols = 256;
  for (int rank : {0, 4}) {
    const auto d = LowRankPlusNoise(rows, cols, rank, rank ? 0.1f : 1.0f, 5);
    ASSERT_OK_AND_ASSIGN(auto sum, EcqTensor::Summarize(d.data(), rows, cols, EcqOptions{}));
    const float step = rank ? 6e-5f : 1.5e-3f;
    EcqTrial identity;
    identity.transform = EcqTransform::kIdentity;
    identity.rounding = 0.42f;
    const EcqTrial chosen = sum->Choose(step);
    EXPECT_EQ(chosen.rank > 0, rank > 0);
    int rows_asked = 0;
    auto rows_of = [&](int64_t r0, int64_t r1, float* out) {
      rows_asked += static_cast<int>(r1 - r0);
      std::copy(d.begin() + r0 * cols, d.begin() + r1 * cols, out);
      return absl::OkStatus();
    };
    for (const EcqTrial& choice : {chosen, identity}) {
      ASSERT_OK_AND_ASSIGN(auto coded, sum->EncodeDelta(d.data(), step, choice));
      const double exact = static_cast<double>(coded.size());
      rows_asked = 0;
      ASSERT_OK_AND_ASSIGN(double all, sum->ProbeDeltaBytes(rows_of, step, choice, 1));
      EXPECT_EQ(all, exact);
      EXPECT_EQ(rows_asked, rows);
      rows_asked = 0;
      ASSERT_OK_AND_ASSIGN(double probed, sum->ProbeDeltaBytes(rows_of, step, choice, 4));
      EXPECT_NEAR(probed, exact, 0.01 * exact) << rank << " " << static_cast<int>(choice.transform);
      EXPECT_EQ(rows_asked, 2 * 512);  // chunks 2 and 6
    }
  }
  const auto d = LowRankPlusNoise(rows, cols, 0, 1.0f, 6);
  ASSERT_OK_AND_ASSIGN(auto sum, EcqTensor::Summarize(d.data(), rows, cols, EcqOptions{}));
  auto failing = [](int64_t, int64_t, float*) { return absl::DataLossError("gone"); };
  EXPECT_THAT(sum->ProbeDeltaBytes(failing, 1e-3f, sum->Choose(1e-3f), 4).status(),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(EcqSummaryTest, Errors) {
  const auto d = LowRankPlusNoise(64, 48, 0, 1.0f, 4);
  ASSERT_OK_AND_ASSIGN(auto sum, EcqTensor::Summarize(d.data(), 64, 48, EcqOptions{}));
  EXPECT_THAT(sum->Encode(1e-3f).status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EcqTrial choice = sum->Choose(1e-3f);
  EXPECT_THAT(sum->EncodeDelta(nullptr, 1e-3f, choice).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sum->EncodeDelta(d.data(), 0.0f, choice).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sum->EncodeDelta(d.data(), 1e-12f, choice).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too small")));
  choice.rank = 5;  // 64 x 48 noise: no low-rank candidate
  EXPECT_THAT(sum->EncodeDelta(d.data(), 1e-3f, choice).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a candidate")));
  EcqOptions bad;
  bad.exhaustive_max_weights = -1;
  EXPECT_THAT(EcqTensor::Summarize(d.data(), 64, 48, bad).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exhaustive_max_weights")));
}

// A model of three matrices (one near low rank) and a vector, F16 base, F32 finetune.
struct Model {
  ::deltaserve::testing::ScopedTempDir dir;
  std::string base_path = dir.File("b.safetensors"), ft_path = dir.File("f.safetensors");
  Model() {
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 96}, {128, 160}, {96, 256}};
    std::vector<OwnedTensor> base, ft;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [r, c] = shapes[i];
      const auto b = Gaussian(r * c, 0.05f, 10 + i);
      auto d = LowRankPlusNoise(r, c, i == 1 ? 3 : 0, i == 1 ? 0.1f : 1.0f, 20 + i);
      for (size_t j = 0; j < d.size(); ++j) d[j] += b[j];
      const std::string name = absl::StrCat("m", i);
      base.push_back(MakeTensor(name, DType::kF16, {r, c}, b));
      ft.push_back(MakeTensor(name, DType::kF32, {r, c}, d));
    }
    base.push_back(MakeTensor("bias", DType::kF16, {64}, Gaussian(64, 0.1f, 30)));
    ft.push_back(MakeTensor("bias", DType::kF32, {64},
                            ::deltaserve::testing::Nudged(Gaussian(64, 0.1f, 30), 31)));
    EXPECT_THAT(::deltaserve::testing::Write(base_path, base), IsOk());
    EXPECT_THAT(::deltaserve::testing::Write(ft_path, ft), IsOk());
  }
};

CompressOptions EcqOptionsFor(int threads, int64_t exhaustive_max_weights) {
  CompressOptions o;
  o.codec = LossyCodec::kEcq;
  o.min_dct_elements = 1024;
  o.threads = threads;
  o.ecq.exhaustive_max_weights = exhaustive_max_weights;
  return o;
}

// Relative delta error over the lossy records of a container.
double ContainerError(const Model& m, const std::string& dds) {
  auto base = ModelReader::Open(m.base_path);
  auto ft = ModelReader::Open(m.ft_path);
  auto mc = MappedContainer::Open(dds);
  EXPECT_TRUE(base.ok() && ft.ok() && mc.ok());
  double num = 0, den = 0;
  for (size_t i = 0; i < (*mc)->reader().num_records(); ++i) {
    auto rec = (*mc)->reader().record(i);
    EXPECT_THAT(rec.status(), IsOk());
    if (rec->encoding != Encoding::kEcq) continue;
    std::vector<float> d_hat(rec->rows * rec->cols);
    EXPECT_THAT(DecodeEcqMatrix(rec->payload, rec->rows, rec->cols, d_hat.data()), IsOk());
    auto b = (*base)->Get(rec->info.name);
    auto f = (*ft)->Get(rec->info.name);
    std::vector<float> fb(d_hat.size()), ff(d_hat.size());
    ToFloat32(b->data.data(), b->info.dtype, fb.size(), fb.data());
    ToFloat32(f->data.data(), f->info.dtype, ff.size(), ff.data());
    for (size_t j = 0; j < fb.size(); ++j) {
      const double d = double{ff[j]} - fb[j];
      num += (d - d_hat[j]) * (d - d_hat[j]);
      den += d * d;
    }
  }
  return std::sqrt(num / den);
}

// CompressModel with summaries (exhaustive_max_weights 0): the bits target within 2%,
// the error target met and not far under, containers independent of the thread count;
// and the exhaustive plan is also the same for 1 and 3 threads. Errors within 3% of the
// exhaustive plan's at the same target.
TEST(EcqSummaryTest, CompressModelWithSummaries) {
  Model m;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(m.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(m.ft_path));
  for (double bits : {0.5, 1.0, 3.0}) {
    std::vector<std::vector<uint8_t>> containers;
    std::vector<double> errors;
    for (auto [threads, limit] : std::vector<std::pair<int, int64_t>>{
             {1, 0}, {3, 0}, {1, int64_t{1} << 23}, {3, int64_t{1} << 23}}) {
      CompressOptions o = EcqOptionsFor(threads, limit);
      o.ecq_target = {bits, 0.0};
      const std::string dds = m.dir.File("e.dds");
      ASSERT_OK_AND_ASSIGN(CompressStats stats, CompressModel(*base, *ft, o, dds));
      EXPECT_EQ(stats.dct_tensors, 3u);
      containers.push_back(ReadFile(dds));
      errors.push_back(ContainerError(m, dds));
      // Lossy bits per weight as `deltactl inspect` counts them: the records plus their
      // weight share of the header and trailer.
      ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds));
      uint64_t record_bytes = 0;
      for (size_t i = 0; i < mc->reader().num_records(); ++i) {
        ASSERT_OK_AND_ASSIGN(auto rec, mc->reader().record(i));
        record_bytes += SerializedRecordSize(rec);
      }
      const double framing = static_cast<double>(stats.container_bytes - record_bytes);
      const double got = 8.0 *
                         (stats.dct_bytes + framing * stats.dct_weights / stats.total_weights) /
                         stats.dct_weights;
      EXPECT_NEAR(got, bits, 0.02 * bits) << bits << " threads " << threads << " limit " << limit;
    }
    EXPECT_EQ(containers[0], containers[1]) << bits;  // summaries: 1 vs 3 threads
    EXPECT_EQ(containers[2], containers[3]) << bits;  // exhaustive: 1 vs 3 threads
    EXPECT_LT(errors[0], errors[2] * 1.03) << bits << " " << errors[0] << " " << errors[2];
  }
  CompressOptions o = EcqOptionsFor(2, 0);
  o.ecq_target = {0.0, 0.2};
  const std::string dds = m.dir.File("me.dds");
  ASSERT_THAT(CompressModel(*base, *ft, o, dds).status(), IsOk());
  const double err = ContainerError(m, dds);
  EXPECT_LE(err, 0.2);
  EXPECT_GT(err, 0.17);
}

}  // namespace
}  // namespace deltaserve::codec
