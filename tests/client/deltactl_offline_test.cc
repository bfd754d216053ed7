// deltactl's offline subcommands through the real binary, on small synthetic models:
// exit codes, error messages, --help, --json, options reaching the codec.
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "codec/container.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/deltactl_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ReadBytes;
using ::deltaserve::testing::RunDeltactl;
using ::deltaserve::testing::ScopedTempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

OwnedTensor Tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, uint32_t seed,
                   float scale) {
  OwnedTensor t;
  t.info = {name, dtype, std::move(shape)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(static_cast<size_t>(t.info.num_elements()));
  for (auto& x : v) x = dist(rng);
  t.data.resize(t.info.num_bytes());
  FromFloat32(v.data(), t.info.num_elements(), dtype, t.data.data());
  return t;
}

// base: w [128, 160], bias [160]; finetuned: w + noise, bias + noise (10% of its norm).
class DeltactlOfflineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const OwnedTensor w = Tensor("w", DType::kF32, {128, 160}, 1, 0.05f);
    const OwnedTensor b = Tensor("bias", DType::kF32, {160}, 2, 0.1f);
    OwnedTensor w_ft = w, b_ft = b;
    auto add_noise = [](OwnedTensor* t, const OwnedTensor& noise) {
      for (size_t i = 0; i < t->data.size(); i += 4) {
        float a, n;
        std::memcpy(&a, &t->data[i], 4);
        std::memcpy(&n, &noise.data[i], 4);
        a += n;
        std::memcpy(&t->data[i], &a, 4);
      }
    };
    add_noise(&w_ft, Tensor("n", DType::kF32, {128, 160}, 3, 0.005f));
    add_noise(&b_ft, Tensor("n", DType::kF32, {160}, 4, 0.01f));
    ASSERT_THAT(WriteSafetensors(base_, {w.view(), b.view()}, {}), IsOk());
    ASSERT_THAT(WriteSafetensors(ft_, {w_ft.view(), b_ft.view()}, {}), IsOk());
  }

  testing::DeltactlResult Run(const std::string& args) { return RunDeltactl(args, dir_); }
  std::string Compress(const std::string& extra = "") {
    const auto r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ +
                       " --min-dct-elements 1000 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  ScopedTempDir dir_;
  std::string base_ = dir_.File("base.safetensors");
  std::string ft_ = dir_.File("ft.safetensors");
  std::string dds_ = dir_.File("d.dds");
};

TEST_F(DeltactlOfflineTest, HelpEverywhere) {
  auto r = Run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"convert", "compress", "decompress", "inspect", "eval"}) {
    EXPECT_THAT(r.out, HasSubstr(sub));
    auto s = Run(std::string(sub) + " --help");
    EXPECT_EQ(s.exit_code, 0) << sub;
    EXPECT_THAT(s.out, HasSubstr("Usage:")) << sub;
  }
  EXPECT_THAT(Run("compress --help").out, HasSubstr("--schedule"));
}

TEST_F(DeltactlOfflineTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run("").exit_code, 2);
  EXPECT_EQ(Run("frobnicate").exit_code, 2);
  auto r = Run("compress --base " + base_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--finetuned is required"));
  EXPECT_EQ(Run("decompress --base a --delta b --out c --dtype f64").exit_code, 2);
  // No output, or both: usage errors naming the two flags, before any file is read.
  r = Run("decompress --base a --delta b");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("Exactly 1 option from [--out,--out-dir] is required"));
  r = Run("decompress --base a --delta b --out c --out-dir d");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--out excludes --out-dir"));
  // --help still answers with neither given.
  r = Run("decompress --help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("exactly one of --out FILE and --out-dir DIR"));
}

TEST_F(DeltactlOfflineTest, CompressInspectDecompress) {
  const std::string out = Compress("--patch 16 --schedule 2:0.5,0:0.5 --quantizer minmax");
  EXPECT_THAT(out, HasSubstr("tensors:     2 (dct 1, raw 1, unchanged 0)"));
  EXPECT_THAT(out, HasSubstr("transforms:  dct p16 1\n"));
  auto r = Run("inspect --json " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("metadata").at("codec.patch_size"), "16");
  EXPECT_EQ(j.at("metadata").at("codec.schedule"), "2:0.5,0:0.5");
  EXPECT_EQ(j.at("metadata").at("codec.quantizer"), "minmax");
  ASSERT_EQ(j.at("tensors").size(), 2u);
  EXPECT_EQ(j.at("tensors")[0].at("name"), "bias");
  EXPECT_EQ(j.at("tensors")[0].at("encoding"), "raw");
  EXPECT_EQ(j.at("tensors")[1].at("name"), "w");
  EXPECT_EQ(j.at("tensors")[1].at("encoding"), "dct");
  EXPECT_EQ(j.at("tensors")[1].at("transform"), "dct");
  EXPECT_EQ(j.at("tensors")[1].at("patch_size"), 16);
  EXPECT_EQ(j.at("tensors")[1].at("rank"), 0);
  EXPECT_FALSE(j.at("tensors")[0].contains("transform"));  // raw
  EXPECT_EQ(j.at("tensors")[1].at("shape"), nlohmann::json({128, 160}));
  const auto& t = j.at("totals");
  EXPECT_EQ(t.at("container_bytes").get<uint64_t>(), std::filesystem::file_size(dds_));
  EXPECT_EQ(t.at("weights").get<uint64_t>(), 128u * 160 + 160);
  // Whole-model bits per weight counts every byte of the file.
  EXPECT_DOUBLE_EQ(t.at("bits_per_weight_whole").get<double>(),
                   8.0 * std::filesystem::file_size(dds_) / (128 * 160 + 160));
  EXPECT_FALSE(t.contains("rel_delta_error"));  // inspect does not evaluate

  r = Run("inspect " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[128, 160]"));
  EXPECT_THAT(r.out, HasSubstr("bits/weight: dct-coded"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("w +\\[128, 160\\] +F32 +dct +dct p16 "));

  r = Run("eval --base " + base_ + " --finetuned " + ft_ + " --delta " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rel. delta error"));

  const std::string merged = dir_.File("m.safetensors");
  r = Run("decompress --base " + base_ + " --delta " + dds_ + " --out " + merged + " --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_OK_AND_ASSIGN(auto m, ModelReader::Open(merged));
  ASSERT_EQ(m->tensors().size(), 2u);
  for (const auto& info : m->tensors()) EXPECT_EQ(info.dtype, DType::kBF16) << info.name;
}

TEST_F(DeltactlOfflineTest, RulesReachThePolicy) {
  const std::string out = Compress("--rule 'w=raw'");
  EXPECT_THAT(out, HasSubstr("(lossy 0, raw 2, unchanged 0)"));
  EXPECT_THAT(out, HasSubstr("codec.rules=w=raw"));
}

// Codec v2: --bits picks the ecq encoding and meets the size (inspect's count).
TEST_F(DeltactlOfflineTest, CompressEcqBits) {
  // A v2 container's report names its encoding (it said "dct" for ecq tensors).
  const std::string out = Compress("--bits 2");
  EXPECT_THAT(out, HasSubstr("tensors:     2 (ecq 1, raw 1, unchanged 0)"));
  EXPECT_THAT(out, HasSubstr("bits/weight: ecq-coded "));
  EXPECT_THAT(out, Not(HasSubstr("dct-coded")));
  auto r = Run("inspect --json " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("metadata").at("codec.lossy"), "ecq");
  EXPECT_EQ(j.at("metadata").at("codec.ecq_target"), "bits=2");
  EXPECT_EQ(j.at("tensors")[1].at("encoding"), "ecq");
  EXPECT_NEAR(j.at("totals").at("bits_per_weight_lossy").get<double>(), 2.0, 0.04);
  // The names from before codec v2 stay, with the same values.
  EXPECT_EQ(j.at("totals").at("bits_per_weight_dct"), j.at("totals").at("bits_per_weight_lossy"));
  EXPECT_EQ(j.at("totals").at("dct_weights"), j.at("totals").at("lossy_weights"));
  const std::string merged = dir_.File("m.safetensors");
  r = Run("decompress --base " + base_ + " --delta " + dds_ + " --out " + merged);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(Compress("--max-error 0.2"), HasSubstr("(ecq 1, raw 1, unchanged 0)"));
  r = Run("eval --json --base " + base_ + " --finetuned " + ft_ + " --delta " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto totals = nlohmann::json::parse(r.out).at("totals");
  EXPECT_LE(totals.at("rel_delta_error_lossy").get<double>(), 0.2);
  EXPECT_EQ(totals.at("rel_delta_error_dct"), totals.at("rel_delta_error_lossy"));
}

// Without --codec, compress writes codec v2 at 1 bit per weight; a Delta-DCT option
// (--schedule, --quantizer, --separate-dc) or --codec dct selects Delta-DCT.
TEST_F(DeltactlOfflineTest, DefaultCodecIsV2AtOneBit) {
  EXPECT_THAT(Compress(), HasSubstr("codec.ecq_target=bits=1 "));
  auto r = Run("inspect --json " + dds_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("metadata").at("codec.lossy"), "ecq");
  EXPECT_EQ(j.at("tensors")[1].at("encoding"), "ecq");
  EXPECT_NEAR(j.at("totals").at("bits_per_weight_lossy").get<double>(), 1.0, 0.02);
  for (const char* dct : {"--codec dct", "--schedule 1:1", "--quantizer clipped", "--separate-dc"}) {
    Compress(dct);
    r = Run("inspect --json " + dds_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    j = nlohmann::json::parse(r.out);
    EXPECT_FALSE(j.at("metadata").contains("codec.lossy")) << dct;
    EXPECT_EQ(j.at("tensors")[1].at("encoding"), "dct") << dct;
  }
  r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ +
          " --bits 2 --schedule 2:1");
  EXPECT_EQ(r.exit_code, 2);  // a usage error
  EXPECT_THAT(r.err, HasSubstr("are Delta-DCT options (--codec dct)"));
}

// The ecq encoder's low-rank factors come from BLAS, whose summation order follows its
// thread count; deltactl runs BLAS on one thread, so the container's bytes are the same
// whatever OPENBLAS_NUM_THREADS says (they differed for 1 and 2 threads before).
TEST_F(DeltactlOfflineTest, CompressBytesDoNotDependOnBlasThreads) {
  // w [768, 512]: a rank-8 delta plus noise, large enough for OpenBLAS to use threads.
  const OwnedTensor w = Tensor("w", DType::kF32, {768, 512}, 11, 0.05f);
  const OwnedTensor u = Tensor("u", DType::kF32, {768, 8}, 12, 1.f);
  const OwnedTensor v = Tensor("v", DType::kF32, {8, 512}, 13, 1.f);
  const OwnedTensor n = Tensor("n", DType::kF32, {768, 512}, 14, 0.0005f);
  std::vector<float> ft(768 * 512);
  auto at = [](const OwnedTensor& t, size_t i) {
    float x;
    std::memcpy(&x, &t.data[4 * i], 4);
    return x;
  };
  for (size_t r = 0; r < 768; ++r) {
    for (size_t c = 0; c < 512; ++c) {
      float low = 0.f;
      for (size_t k = 0; k < 8; ++k) low += at(u, r * 8 + k) * at(v, k * 512 + c);
      ft[r * 512 + c] = at(w, r * 512 + c) + 0.002f * low + at(n, r * 512 + c);
    }
  }
  OwnedTensor w_ft = w;
  std::memcpy(w_ft.data.data(), ft.data(), w_ft.data.size());
  const std::string base = dir_.File("lr_base.safetensors"), fine = dir_.File("lr_ft.safetensors");
  ASSERT_THAT(WriteSafetensors(base, {w.view()}, {}), IsOk());
  ASSERT_THAT(WriteSafetensors(fine, {w_ft.view()}, {}), IsOk());
  const char* before = std::getenv("OPENBLAS_NUM_THREADS");
  const std::string saved = before == nullptr ? "" : before;
  std::vector<std::vector<uint8_t>> containers;
  for (const char* threads : {"1", "2", "4"}) {
    ::setenv("OPENBLAS_NUM_THREADS", threads, 1);
    const std::string out = dir_.File(std::string("lr") + threads + ".dds");
    const auto r = Run("compress --base " + base + " --finetuned " + fine + " --out " + out +
                       " --bits 1 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    containers.push_back(ReadBytes(out));
  }
  if (before == nullptr) {
    ::unsetenv("OPENBLAS_NUM_THREADS");
  } else {
    ::setenv("OPENBLAS_NUM_THREADS", saved.c_str(), 1);
  }
  const auto r = Run("inspect --json " + dir_.File("lr1.dds"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("metadata").at("codec.ecq_low_rank"), "1");
  // inspect names the factors' rank (a rank-8 delta: at least 8 components kept).
  EXPECT_GE(j.at("tensors")[0].at("rank").get<int>(), 8);
  const auto text = Run("inspect " + dir_.File("lr1.dds"));
  EXPECT_THAT(text.out, ::testing::ContainsRegex(" \\+ rank [0-9]+ "));
  EXPECT_THAT(text.out, ::testing::ContainsRegex("transforms:  ecq [a-z0-9 ]+ \\+ low rank 1"));
  ASSERT_GT(containers[0].size(), 0u);
  EXPECT_EQ(containers[0], containers[1]);
  EXPECT_EQ(containers[0], containers[2]);
}

// Every bad compress option is a usage error (exit 2, as a parse error), found while
// parsing: the base and finetuned paths do not even exist here.
TEST_F(DeltactlOfflineTest, BadOptionsAreUsageErrors) {
  for (const char* bad : {"--schedule 2:0.5", "--quantizer fancy", "--patch 1", "--rule 'w=zip'",
                          "--min-dct-elements -5", "--codec zip", "--codec dct --bits 2",
                          "--bits 2 --max-error 0.1", "--bits -1", "--bits 0", "--max-error 0",
                          "--bits 2 --max-error 0", "--max-error nan"}) {
    auto r = Run("compress --base " + dir_.File("nobase") + " --finetuned " + dir_.File("noft") +
                 " --out " + dds_ + " " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_THAT(r.err, HasSubstr("Run with --help for more information.")) << bad;
    EXPECT_THAT(r.err, Not(HasSubstr("INVALID_ARGUMENT"))) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(dds_));
}

// New-user trial: --bits 0.01 wrote 0.0154 bits/weight, --bits 100 31, --max-error >= 1 an
// all-zero delta and --max-error inf leaked "ecq target: bits per weight 0 must be > 0".
// Targets outside the codec's range are usage errors naming the flag and the range; one in
// range that this model cannot meet is written, with a warning of what was achieved.
TEST_F(DeltactlOfflineTest, CompressTargetsOutsideTheirRangeAreUsageErrors) {
  const std::string bits_range =
      "want bits per weight in (0, 16] (above 16 a lossy code costs more than the 16-bit "
      "delta; --rule GLOB=raw stores tensors exactly), got '";
  const std::string error_range =
      "want a relative delta error in (0, 1) (an empty delta already has error 1), got '";
  const std::pair<const char*, std::string> cases[] = {
      {"--bits 100", "--bits: " + bits_range + "100'"},
      {"--bits 16.5", "--bits: " + bits_range + "16.5'"},
      {"--bits inf", "--bits: " + bits_range + "inf'"},
      {"--max-error 1", "--max-error: " + error_range + "1'"},
      {"--max-error 2.5", "--max-error: " + error_range + "2.5'"},
      {"--max-error inf", "--max-error: " + error_range + "inf'"}};
  for (const auto& [bad, want] : cases) {
    auto r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ + " " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_THAT(r.err, HasSubstr(want)) << bad;
    EXPECT_THAT(r.err, Not(HasSubstr("ecq target"))) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(dds_));

  // In range but below this model's fixed bytes: written, and the warning says so.
  auto r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ +
               " --bits 0.01");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::ContainsRegex(
                         "warning: --bits 0.01 not met: the ecq-coded tensors take "
                         "0\\.[0-9]{4} bits/weight, the nearest this model allows \\(its "
                         "names, shapes and headers alone take about that"));
  // A target that is met gives no warning.
  r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ + " --bits 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("not met")));
  EXPECT_THAT(r.err, Not(HasSubstr("more than the 16-bit delta")));
  // New-user trial: --bits 16 (and --max-error 0.001 on faceres) wrote a container larger
  // than the 16-bit delta with no word; it is written, with a warning.
  r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ + " --bits 16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::ContainsRegex(
                         "warning: the container takes 1[6-9]\\.[0-9]{4} bits/weight, more "
                         "than the 16-bit delta itself \\(ratio 0\\.[0-9]{2}x\\)"));
}

// New-user trial: a bad value came back in the options' field names ("patch_size 1
// outside [2, 64]", "threads must be ...") or without the flag ("unknown codec 'zip'").
// Each message now names the flag the user typed.
TEST_F(DeltactlOfflineTest, BadOptionsNameTheFlag) {
  const std::pair<const char*, const char*> cases[] = {
      {"--patch 1", "--patch 1 outside [2, "},
      {"--threads 999", "--threads must be in [0, 256], is 999"},
      // Negative values are refused while parsing (common/cli_validators.h).
      {"--min-dct-elements -5", "--min-dct-elements: want a number of elements in [0, "},
      {"--max-relative-delta -1", "--max-relative-delta: want a plain decimal number"},
      {"--codec zip", "--codec: unknown codec 'zip'"},
      {"--quantizer fancy", "--quantizer: unknown quantizer 'fancy'"},
      {"--ecq-weighting x", "--ecq-weighting: unknown ecq weighting 'x'"},
      {"--rule 'w=zip'", "--rule: "},
      {"--codec dct --schedule 3:zz", "--schedule: "}};
  for (const auto& [bad, want] : cases) {
    auto r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ + " " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_THAT(r.err, ::testing::StartsWith(want)) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(dds_));
}

// New-user trial: `--out` naming a directory was found only at the final rename, after
// the whole encode or decode ("INTERNAL: rename d.tmp -> d failed: Is a directory"), and
// a missing directory came back INTERNAL. Both are now refused before any work (no
// progress line is printed).
TEST_F(DeltactlOfflineTest, OutputPathIsCheckedBeforeAnyWork) {
  const std::string out_dir = dir_.File("outdir"), missing = dir_.File("missing");
  std::filesystem::create_directories(out_dir);
  const std::string compress = "compress --base " + base_ + " --finetuned " + ft_ + " --out ";
  auto r = Run(compress + out_dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "deltactl: INVALID_ARGUMENT: cannot write " + out_dir +
                       ": it is a directory (--out is the container file to write)\n");
  r = Run(compress + missing + "/d.dds");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "deltactl: NOT_FOUND: cannot write " + missing + "/d.dds: no directory " +
                       missing + "\n");
  Compress();
  const std::string decompress = "decompress --base " + base_ + " --delta " + dds_ + " --out ";
  r = Run(decompress + out_dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "deltactl: INVALID_ARGUMENT: cannot write " + out_dir +
                       ": it is a directory (a checkpoint directory is written by --out-dir "
                       "DIR)\n");
  r = Run(decompress + missing + "/m.safetensors");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "deltactl: NOT_FOUND: cannot write " + missing +
                       "/m.safetensors: no directory " + missing + "\n");
}

// New-user trial: an output path naming a FIFO was written as PATH.tmp and renamed over
// the FIFO after the whole encode (a reader waiting on it got nothing); a device node
// (`--out /dev/null` as root) would have been replaced. Refused before any work.
TEST_F(DeltactlOfflineTest, AFifoAsTheOutputIsRefusedBeforeAnyWork) {
  const std::string fifo = dir_.File("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string want = "deltactl: INVALID_ARGUMENT: cannot write " + fifo +
                           ": it is a FIFO (named pipe), not a regular file (an output is "
                           "written to " + fifo + ".tmp and renamed over its path, which would "
                           "replace it)\n";
  auto r = Run("compress --base " + base_ + " --finetuned " + ft_ + " --out " + fifo);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, want);
  Compress();
  r = Run("decompress --base " + base_ + " --delta " + dds_ + " --out " + fifo);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, want);
  struct stat st;
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_FALSE(std::filesystem::exists(fifo + ".tmp"));
}

// New-user trial: a failed `decompress --out-dir` (here: the wrong base) left the
// directory it had made. It is removed, with its parents made for it; one that was
// there stays.
TEST_F(DeltactlOfflineTest, AFailedDecompressToADirectoryRemovesTheDirectoryItMade) {
  Compress();
  const std::string made = dir_.File("made"), there = dir_.File("there");
  auto r = Run("decompress --base " + ft_ + " --delta " + dds_ + " --out-dir " + made + "/ckpt");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_FALSE(std::filesystem::exists(made));
  std::filesystem::create_directory(there);
  r = Run("decompress --base " + ft_ + " --delta " + dds_ + " --out-dir " + there);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(std::filesystem::is_directory(there));
  r = Run("decompress --base " + base_ + " --delta " + dds_ + " --out-dir " + made + "/ckpt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(made + "/ckpt/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(made + "/ckpt/model-00001-of-00001.safetensors"));
}

// Under `ulimit -f` a write past the limit killed deltactl with SIGXFSZ: exit status
// 153, no message, the .tmp file left behind. Now it is an OUT_OF_RANGE error and
// the .tmp file is removed.
TEST_F(DeltactlOfflineTest, FileSizeLimitIsAnError) {
  Compress();
  const std::string merged = dir_.File("m.safetensors"), dds = dir_.File("small.dds");
  for (const std::string& args :
       {"decompress --base " + base_ + " --delta " + dds_ + " --out " + merged,
        "compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds}) {
    const std::string err = dir_.File("ulimit.stderr");
    const int rc = std::system(("sh -c 'ulimit -f 1; exec " + std::string(DELTACTL_BIN) + " " +
                                args + "' >/dev/null 2>" + err)
                                   .c_str());
    ASSERT_TRUE(WIFEXITED(rc)) << args;
    EXPECT_EQ(WEXITSTATUS(rc), 1) << args;
    const auto text = testing::ReadBytes(err);
    EXPECT_THAT(std::string(text.begin(), text.end()),
                AllOf(HasSubstr("deltactl: OUT_OF_RANGE: "), HasSubstr("File too large")))
        << args;
  }
  EXPECT_FALSE(std::filesystem::exists(merged));
  EXPECT_FALSE(std::filesystem::exists(merged + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(dds));
  EXPECT_FALSE(std::filesystem::exists(dds + ".tmp"));
}

TEST_F(DeltactlOfflineTest, WrongBaseAndCorruptionAreReported) {
  Compress();
  auto r =
      Run("decompress --base " + ft_ + " --delta " + dds_ + " --out " + dir_.File("m.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
  r = Run("decompress --force --base " + ft_ + " --delta " + dds_ + " --out " +
          dir_.File("m.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run("eval --base " + ft_ + " --finetuned " + ft_ + " --delta " + dds_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));

  // Flip one payload byte of tensor 'w' (the last record).
  auto bytes = ReadBytes(dds_);
  bytes[bytes.size() - 200] ^= 0x20;
  const std::string bad = dir_.File("bad.dds");
  {
    std::ofstream f(bad, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  r = Run("inspect " + bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(r.err, HasSubstr("tensor 'w'"));
  // Truncated: the reader names the file.
  bytes.resize(bytes.size() / 2);
  {
    std::ofstream f(bad, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  r = Run("decompress --base " + base_ + " --delta " + bad + " --out " +
          dir_.File("x.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(r.err, HasSubstr("bad.dds"));
  r = Run("inspect " + dir_.File("missing.dds"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(DeltactlOfflineTest, ConvertSafetensorsKeepsTensors) {
  const std::string copy = dir_.File("copy.safetensors");
  auto r = Run("convert --in " + ft_ + " --out " + copy);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 tensors"));
  ASSERT_OK_AND_ASSIGN(auto a, ModelReader::Open(ft_));
  ASSERT_OK_AND_ASSIGN(auto b, ModelReader::Open(copy));
  for (const auto& info : a->tensors()) {
    ASSERT_OK_AND_ASSIGN(auto x, a->Get(info.name));
    ASSERT_OK_AND_ASSIGN(auto y, b->Get(info.name));
    EXPECT_TRUE(std::equal(x.data.begin(), x.data.end(), y.data.begin(), y.data.end()));
  }
  r = Run("convert --in " + dir_.File("nope.json") + " --out " + copy);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

}  // namespace
}  // namespace deltaserve::codec
