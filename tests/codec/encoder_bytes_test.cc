// Pins the bytes of EncodeDctMatrix (v1 payloads) on x86-64-v3 machines, so that
// encoder speed-ups (hand-vectorized kernels, pieces on several threads) cannot change them:
// the hashes were taken from the scalar encoder before those changes.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "codec/delta_codec.h"
#include "codec/delta_dct.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

// FNV-1a 64 of the payload.
uint64_t Fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
  return h;
}

// A 203 x 301 matrix (edges cut patches) of deterministic values whose scale varies by
// row and column band, so that patch norms and bit levels differ.
std::vector<float> Matrix(int64_t rows, int64_t cols) {
  std::vector<float> m(static_cast<size_t>(rows * cols));
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const float u = static_cast<float>(state >> 40) / static_cast<float>(1 << 24) - 0.5f;
      const float scale = 1e-3f * (1 + (r / 17) % 5) * (1 + (c / 29) % 3);
      m[r * cols + c] = scale * u + (c % 41 == 0 ? 2e-3f : 0.0f);
    }
  }
  return m;
}

struct Case {
  int patch;
  const char* schedule;
  Quantizer quantizer;
  bool separate_dc;
  uint64_t fnv;
};

TEST(EncoderBytesTest, PayloadsAreThePinnedBytes) {
  if (!__builtin_cpu_supports("x86-64-v3")) GTEST_SKIP() << "hashes pinned on x86-64-v3";
  const int64_t rows = 203, cols = 301;
  const std::vector<float> m = Matrix(rows, cols);
  const Case cases[] = {
      {32, "1:1", Quantizer::kClipped, false, 0x17bff89afa0d0a55},
      {16, "8:0.1,4:0.2,3:0.2,2:0.2,1:0.2,0:0.1", Quantizer::kClipped, true, 0x64b735d43fb316e3},
      {8, "5:0.5,6:0.3,7:0.2", Quantizer::kMinMax, false, 0xac8b3ad8835df21d},
      {12, "2:0.6,3:0.4", Quantizer::kSymmetric, true, 0xab9e3a3aee879da0},
      {32, "3:0.5,1:0.5", Quantizer::kClipped, false, 0xa524a20b9c80859a},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.schedule));
    DctParams p;
    p.patch_size = c.patch;
    ASSERT_OK_AND_ASSIGN(p.schedule, BitSchedule::Parse(c.schedule));
    p.quantizer = c.quantizer;
    p.separate_dc = c.separate_dc;
    // Pieces of patch rows on several threads (3 does not divide the patch rows evenly;
    // 64 is more threads than patch rows): the same bytes.
    for (int threads : {1, 2, 3, 64}) {
      SCOPED_TRACE(threads);
      ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload,
                           EncodeDctMatrix(m.data(), rows, cols, p, threads));
      EXPECT_EQ(Fnv1a(payload), c.fnv);
    }
  }
}

// Codec v2 through the summary planner (EcqOptions::exhaustive_max_weights 0: what a
// large model takes): F16 base and finetune (the fused fp16 delta pass), DCT and identity
// candidates, the sampled step search, one coding per tensor. The hashes were taken
// before the summary path's kernels were vectorized (sorted samples, AVX2 symbols).
TEST(EncoderBytesTest, EcqSummaryContainerIsThePinnedBytes) {
  if (!__builtin_cpu_supports("x86-64-v3")) GTEST_SKIP() << "hashes pinned on x86-64-v3";
  ::deltaserve::testing::ScopedTempDir dir;
  const std::string base_path = dir.File("b.safetensors"), ft_path = dir.File("f.safetensors");
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 96}, {128, 160}, {203, 301}};
  std::vector<OwnedTensor> base, ft;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto [r, c] = shapes[i];
    const std::vector<float> b = ::deltaserve::testing::Gaussian(r * c, 0.05f, 10 + i);
    std::vector<float> f = Matrix(r, c);
    if (i == 1) {  // rank-2 structure on top
      const auto u = ::deltaserve::testing::Gaussian(r * 2, 1.0f, 40);
      const auto v = ::deltaserve::testing::Gaussian(c * 2, 1.0f, 41);
      for (int64_t y = 0; y < r; ++y) {
        for (int64_t x = 0; x < c; ++x) {
          f[y * c + x] += 2e-3f * (u[2 * y] * v[2 * x] + 0.5f * u[2 * y + 1] * v[2 * x + 1]);
        }
      }
    }
    for (size_t j = 0; j < f.size(); ++j) f[j] += b[j];
    const std::string name = absl::StrCat("m", i);
    base.push_back(::deltaserve::testing::MakeTensor(name, DType::kF16, {r, c}, b));
    ft.push_back(::deltaserve::testing::MakeTensor(name, DType::kF16, {r, c}, f));
  }
  ASSERT_THAT(::deltaserve::testing::Write(base_path, base), ::deltaserve::testing::IsOk());
  ASSERT_THAT(::deltaserve::testing::Write(ft_path, ft), ::deltaserve::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(auto b, ModelReader::Open(base_path));
  ASSERT_OK_AND_ASSIGN(auto f, ModelReader::Open(ft_path));
  const struct {
    double bits;
    uint64_t fnv;
  } targets[] = {{1.0, 11383133764668343687ull}, {2.5, 15005755333219547191ull}};
  for (const auto& t : targets) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(t.bits);
      CompressOptions o;
      o.codec = LossyCodec::kEcq;
      o.min_dct_elements = 1024;
      o.threads = threads;
      o.ecq.exhaustive_max_weights = 0;
      // No low-rank candidates: their factors come from OpenBLAS, whose sums (and so the
      // container bytes) depend on its number of threads (OPENBLAS_NUM_THREADS).
      o.ecq.try_low_rank = false;
      o.ecq_target.bits_per_weight = t.bits;
      const std::string out = dir.File("d.dds");
      ASSERT_THAT(CompressModel(*b, *f, o, out).status(), ::deltaserve::testing::IsOk());
      std::ifstream in(out, std::ios::binary);
      const std::vector<uint8_t> bytes(std::istreambuf_iterator<char>(in), {});
      EXPECT_EQ(Fnv1a(bytes), t.fnv) << std::hex << Fnv1a(bytes);
    }
  }
}

}  // namespace
}  // namespace deltaserve::codec
