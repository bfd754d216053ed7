// deltactl compress on inputs a new user gets wrong (session 9's trial), through the real
// binary: a finetuned tensor whose dtype changed, refusals that must name deltactl's flags
// (not CompressOptions fields), the "larger than the 16-bit delta" advice, and a PyTorch
// checkpoint given where safetensors is read.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/deltactl_test_util.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::Nudged;
using ::deltaserve::testing::RunDeltactl;
using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::Write;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

// base: w [64, 64] F32 and bias [64] F32.
class DeltactlInputsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = Gaussian(64 * 64, 0.05f, 1);
    bias_ = Gaussian(64, 0.1f, 2);
    ASSERT_THAT(Write(base_, {MakeTensor("w", DType::kF32, {64, 64}, w_),
                              MakeTensor("bias", DType::kF32, {64}, bias_)}),
                IsOk());
  }
  testing::DeltactlResult Compress(const std::string& extra) {
    return RunDeltactl("compress --base " + base_ + " --finetuned " + ft_ + " --out " + dds_ +
                           " --min-dct-elements 1000 " + extra,
                       dir_);
  }

  ScopedTempDir dir_;
  std::string base_ = dir_.File("base.safetensors");
  std::string ft_ = dir_.File("ft.safetensors");
  std::string dds_ = dir_.File("d.dds");
  std::vector<float> w_, bias_;
};

// The trial: a finetuned 'w' saved as I32 (base F32) compressed with no word, and the
// merged model held an I32 weight; the "larger than the 16-bit delta" warning then
// advised --max-error / --bits, which do not shrink a raw tensor.
TEST_F(DeltactlInputsTest, ADtypeChangeIsRefusedUnlessAllowedAndThenNamed) {
  OwnedTensor w_int{{"w", DType::kI32, {64, 64}}, std::vector<uint8_t>(64 * 64 * 4)};
  for (size_t i = 0; i < w_.size(); ++i) {
    const int32_t v = static_cast<int32_t>(std::lround(1000 * w_[i]));
    std::memcpy(w_int.data.data() + 4 * i, &v, 4);
  }
  ASSERT_THAT(Write(ft_, {w_int, MakeTensor("bias", DType::kF32, {64}, Nudged(bias_, 3))}),
              IsOk());
  auto r = Compress("");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 tensor(s) refused (--allow-dtype-change stores tensors whose "
                               "dtype changes raw): tensor 'w': base dtype F32 -> finetuned "
                               "dtype I32 (it would be stored raw, and the merged model would "
                               "get the finetuned dtype)\n"));
  EXPECT_THAT(r.err, Not(HasSubstr("CompressOptions")));
  EXPECT_FALSE(std::filesystem::exists(dds_));

  r = Compress("--allow-dtype-change");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("warning: tensor 'w': base dtype F32 -> finetuned dtype I32: "
                               "stored raw; the merged model gets the finetuned dtype\n"));
  // The container is larger than the delta because of the raw tensors (16 KiB of I32 and
  // the bias), which is what the advice says.
  EXPECT_THAT(r.err, ContainsRegex("warning: the container takes [0-9.]+ bits/weight, more than "
                                   "the 16-bit delta itself \\(ratio 0\\.[0-9]{2}x\\): 2 "
                                   "tensors stored raw \\(lossless\\) take 16[0-9]{3} of its "
                                   "[0-9]+ bytes, which --bits, --max-error and --schedule do "
                                   "not shrink"));
  EXPECT_THAT(r.err, Not(HasSubstr("a larger --max-error")));
  r = RunDeltactl("decompress --base " + base_ + " --delta " + dds_ + " --out " +
                      dir_.File("m.safetensors"),
                  dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(dir_.File("m.safetensors")));
  ASSERT_OK_AND_ASSIGN(TensorView w, merged->Get("w"));
  EXPECT_EQ(w.info.dtype, DType::kI32);
  EXPECT_EQ(std::vector<uint8_t>(w.data.begin(), w.data.end()), w_int.data);
}

// The trial: "(see CompressOptions allow_nonfinite and max_relative_delta)"; and with
// --allow-nonfinite the size advice named --max-error / --bits.
TEST_F(DeltactlInputsTest, RefusalsNameTheFlagThatAcceptsThem) {
  std::vector<float> bad = Nudged(w_, 4);
  bad[5] = std::nanf("");
  ASSERT_THAT(Write(ft_, {MakeTensor("w", DType::kF32, {64, 64}, bad),
                         MakeTensor("bias", DType::kF32, {64}, Nudged(bias_, 5))}),
              IsOk());
  auto r = Compress("");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 tensor(s) refused (--allow-nonfinite stores tensors holding "
                               "NaN/Inf raw): tensor 'w': 1 non-finite values (NaN/Inf), the "
                               "first at [0, 5]\n"));
  EXPECT_THAT(r.err, Not(HasSubstr("CompressOptions")));
  EXPECT_THAT(r.err, Not(HasSubstr("max-relative-delta")));  // not this refusal's flag

  r = Compress("--allow-nonfinite");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("2 tensors stored raw (lossless) take "));
  EXPECT_THAT(r.err, Not(HasSubstr("a larger --max-error")));

  // A delta norm above the limit names --max-relative-delta.
  std::vector<float> far = Gaussian(64 * 64, 0.5f, 6);
  ASSERT_THAT(Write(ft_, {MakeTensor("w", DType::kF32, {64, 64}, far),
                         MakeTensor("bias", DType::kF32, {64}, Nudged(bias_, 5))}),
              IsOk());
  r = Compress("");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1 tensor(s) refused (--max-relative-delta raises the delta "
                               "norm limit (0: no check)): tensor 'w': delta norm is "));
  EXPECT_THAT(r.err, Not(HasSubstr("max_relative_delta")));
}

// The trial: `compress --finetuned model.pt` said only "header length 578712552184433488
// exceeds the limit of 104857600 bytes".
TEST_F(DeltactlInputsTest, APyTorchCheckpointIsNamedWithAConversion) {
  std::string zip("PK\x03\x04\x14\x00", 6);
  zip.append(20, '\0');
  const std::string entry = "archive/data.pkl";
  zip += static_cast<char>(entry.size());
  zip.append(3, '\0');
  zip += entry + std::string(100, 'x');
  std::ofstream(ft_, std::ios::binary | std::ios::trunc) << zip;
  const auto r = Compress("");
  EXPECT_EQ(r.exit_code, 2) << r.err;  // a usage error, as a bad flag value
  EXPECT_THAT(r.err, HasSubstr(ft_ + ": header length "));
  EXPECT_THAT(r.err, HasSubstr("; it is a PyTorch checkpoint (torch.save's zip format, "
                               ".pt/.pth/.bin), not safetensors: convert it with "
                               "PYTHONPATH=build/python python3 -c \"import torch; from "
                               "deltaserve.safetensors import write_file; sd = torch.load('" +
                               ft_ + "', map_location='cpu');"));
  EXPECT_THAT(r.err, Not(HasSubstr("type.deltaserve")));  // the mark is not printed
}

// The trial: a codec v2 container showed Delta-DCT's "codec.quantizer=clipped
// codec.schedule=1:1" in `inspect` and `info`, which do not apply to it. They are left
// out of what is shown (the bytes keep them); a Delta-DCT container shows them.
TEST_F(DeltactlInputsTest, InspectShowsOnlyTheMetadataOfTheCodecUsed) {
  ASSERT_THAT(Write(ft_, {MakeTensor("w", DType::kF32, {64, 64}, Nudged(w_, 7)),
                         MakeTensor("bias", DType::kF32, {64}, Nudged(bias_, 8))}),
              IsOk());
  auto r = Compress("");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ContainsRegex("metadata:    codec.ecq_gain_weight=[0-9.]+ "
                                   "codec.ecq_low_rank=1 codec.ecq_target=bits=1 "
                                   "codec.ecq_weighting=delta codec.lossy=ecq "
                                   "codec.min_dct_elements=1000 codec.patch_size=[0-9]+ "
                                   "codec.rules= tool=deltaserve [0-9.]+\n"));
  for (const char* key : {"codec.schedule", "codec.quantizer", "codec.separate_dc"}) {
    EXPECT_THAT(r.out, Not(HasSubstr(key))) << key;
  }
  r = RunDeltactl("inspect " + dds_, dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(" codec.lossy=ecq "));
  EXPECT_THAT(r.out, Not(HasSubstr("codec.schedule")));
  // --json shows every key of the header.
  r = RunDeltactl("inspect --json " + dds_, dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"codec.schedule\""));

  r = Compress("--codec dct");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(" codec.quantizer=clipped codec.rules= codec.schedule=1:1 "
                               "codec.separate_dc=0 tool="));
}

}  // namespace
}  // namespace deltaserve::codec
