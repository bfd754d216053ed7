// CompressModel over several threads (CompressOptions::threads): the same container
// bytes, warnings and errors as one thread.
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "codec/delta_codec.h"
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
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class CompressThreadsTest : public ::testing::Test {
 protected:
  // A base and a finetune of 14 tensors: DCT-coded matrices of several sizes, raw 1-D
  // tensors, an unchanged one, and, if asked, a NaN in tensor 9 (1-D).
  void WriteModels(bool nonfinite) {
    std::vector<OwnedTensor> base, ft;
    for (int t = 0; t < 14; ++t) {
      const std::string name = absl::StrCat("t", t);
      std::vector<int64_t> shape = {128 + 40 * (t % 4), 128 + 32 * (t % 3)};
      if (t % 5 == 4) shape = {300};
      const DType dtype = t % 2 ? DType::kBF16 : DType::kF16;
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<float> b = Gaussian(n, 0.02f, 100 + t), d = Gaussian(n, 0.002f, 200 + t);
      std::vector<float> f(b);
      if (t != 6) {
        for (int64_t i = 0; i < n; ++i) f[i] += d[i];
      }
      if (nonfinite && t == 9) f[5] = std::numeric_limits<float>::quiet_NaN();
      base.push_back(MakeTensor(name, dtype, shape, b));
      ft.push_back(MakeTensor(name, dtype, shape, f));
    }
    ASSERT_THAT(testing::Write(tmp_.File("base.safetensors"), base), IsOk());
    ASSERT_THAT(testing::Write(tmp_.File("ft.safetensors"), ft), IsOk());
  }

  absl::StatusOr<CompressStats> Compress(int threads, const std::string& out,
                                         bool allow_nonfinite = false) {
    auto base = ModelReader::Open(tmp_.File("base.safetensors"));
    auto ft = ModelReader::Open(tmp_.File("ft.safetensors"));
    if (!base.ok()) return base.status();
    if (!ft.ok()) return ft.status();
    CompressOptions options;
    options.threads = threads;
    options.allow_nonfinite = allow_nonfinite;
    return CompressModel(**base, **ft, options, tmp_.File(out));
  }

  ::deltaserve::testing::ScopedTempDir tmp_;
};

TEST_F(CompressThreadsTest, EveryThreadCountWritesTheSameBytes) {
  WriteModels(/*nonfinite=*/true);
  ASSERT_OK_AND_ASSIGN(CompressStats one, Compress(1, "1.dds", true));
  const std::string want = ReadAll(tmp_.File("1.dds"));
  ASSERT_GT(want.size(), 1000u);
  EXPECT_EQ(one.dct_tensors, 11u);
  EXPECT_EQ(one.unchanged_tensors, 1u);
  ASSERT_EQ(one.warnings.size(), 1u);
  EXPECT_THAT(one.warnings[0], HasSubstr("tensor 't9': 1 non-finite values"));
  for (int threads : {2, 3, 8, 0}) {
    SCOPED_TRACE(threads);
    const std::string out = std::to_string(threads) + ".dds";
    ASSERT_OK_AND_ASSIGN(CompressStats s, Compress(threads, out, true));
    EXPECT_EQ(ReadAll(tmp_.File(out)), want);
    EXPECT_EQ(s.container_bytes, one.container_bytes);
    EXPECT_EQ(s.dct_bytes, one.dct_bytes);
    EXPECT_EQ(s.raw_tensors, one.raw_tensors);
    EXPECT_EQ(s.warnings, one.warnings);
  }
}

TEST_F(CompressThreadsTest, ARefusedTensorIsTheSameErrorOnEveryThreadCount) {
  WriteModels(/*nonfinite=*/true);
  for (int threads : {1, 4}) {
    SCOPED_TRACE(threads);
    EXPECT_THAT(Compress(threads, "x.dds"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         // Only the option that accepts this kind of refusal.
                         HasSubstr("1 tensor(s) refused (CompressOptions::allow_nonfinite "
                                   "stores tensors holding NaN/Inf raw): tensor 't9': 1 "
                                   "non-finite values")));
    EXPECT_FALSE(std::filesystem::exists(tmp_.File("x.dds")));
  }
  CompressOptions bad;
  bad.threads = -1;
  EXPECT_THAT(bad.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threads")));
}

}  // namespace
}  // namespace deltaserve::codec
