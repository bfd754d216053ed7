// CompressModel on pairs shaped like real published checkpoints (issue 11): non-float
// tensors, one-sided names, tied embeddings, transposed layouts, non-finite values and
// F16 overflow. Each test is one reproduction from the issue.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_codec.h"
#include "codec/internal/merge.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::Nudged;
using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::Write;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

float BitsFloatForTest(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

template <typename T>
OwnedTensor MakeRaw(const std::string& name, DType dtype, std::vector<int64_t> shape,
                    const std::vector<T>& values) {
  OwnedTensor t{{name, dtype, std::move(shape)}, std::vector<uint8_t>(values.size() * sizeof(T))};
  std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

class CompressInputsTest : public ::testing::Test {
 protected:
  // Writes both models and compresses; the stats or the error.
  absl::StatusOr<CompressStats> Compress(const std::vector<OwnedTensor>& base,
                                         const std::vector<OwnedTensor>& ft,
                                         const CompressOptions& options = {}) {
    return ::deltaserve::testing::CompressPair(tmp_.path(), base, ft, options, dds(), &base_);
  }
  std::string dds() const { return tmp_.File("d.dds"); }

  ScopedTempDir tmp_;
  std::unique_ptr<ModelReader> base_;
};

// Reproduction 5: I64/BOOL/U8 made compress fail; now raw or unchanged, merged back bit
// for bit in their own dtype, whatever output dtype is asked for. FP8 tensors and their
// scales are raw.
TEST_F(CompressInputsTest, NonFloatTensorsRoundTripBitForBit) {
  const std::vector<float> w = Gaussian(64 * 64, 1, 1);
  const std::vector<OwnedTensor> base = {
      MakeRaw<int64_t>("position_ids", DType::kI64, {1, 4}, {0, 1, 2, 3}),
      MakeRaw<uint8_t>("mask", DType::kBool, {4}, {1, 1, 0, 0}),
      MakeRaw<uint8_t>("tok", DType::kU8, {3}, {7, 8, 9}),
      MakeRaw<uint8_t>("q.weight", DType::kF8E4M3, {2, 2}, {0x38, 0x40, 0xb8, 0x00}),
      MakeTensor("q.weight_scale_inv", DType::kF32, {64, 64}, w),
      MakeTensor("w", DType::kF32, {64, 64}, w)};
  const std::vector<OwnedTensor> ft = {
      MakeRaw<int64_t>("position_ids", DType::kI64, {1, 4}, {16777217, -1, 2, 3}),
      MakeRaw<uint8_t>("mask", DType::kBool, {4}, {1, 0, 0, 0}),
      MakeRaw<uint8_t>("tok", DType::kU8, {3}, {7, 8, 9}),
      MakeRaw<uint8_t>("q.weight", DType::kF8E4M3, {2, 2}, {0x39, 0x40, 0xb8, 0x01}),
      MakeTensor("q.weight_scale_inv", DType::kF32, {64, 64}, Nudged(w, 2)),
      MakeTensor("w", DType::kF32, {64, 64}, Nudged(w, 3))};
  CompressOptions o;
  o.min_dct_elements = 1024;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft, o));
  EXPECT_THAT(stats.warnings,
              Contains(HasSubstr("'q.weight_scale_inv': scale of an FP8 tensor, stored raw")));
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  std::map<std::string, Encoding> enc;
  for (size_t i = 0; i < mc->reader().num_records(); ++i) {
    ASSERT_OK_AND_ASSIGN(TensorRecord r, mc->reader().record(i));
    enc[r.info.name] = r.encoding;
  }
  EXPECT_EQ(enc["position_ids"], Encoding::kRaw);
  EXPECT_EQ(enc["mask"], Encoding::kRaw);
  EXPECT_EQ(enc["tok"], Encoding::kUnchanged);
  EXPECT_EQ(enc["q.weight"], Encoding::kRaw);
  EXPECT_EQ(enc["q.weight_scale_inv"], Encoding::kRaw);
  EXPECT_EQ(enc["w"], Encoding::kDct);

  DecompressOptions d;
  d.out_dtype = DType::kF16;
  ASSERT_THAT(DecompressModel(*base_, mc->reader(), d, tmp_.File("m.safetensors")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
  ASSERT_OK_AND_ASSIGN(TensorView ids, merged->Get("position_ids"));
  ASSERT_EQ(ids.info.dtype, DType::kI64);
  int64_t got[4];
  std::memcpy(got, ids.data.data(), sizeof(got));
  EXPECT_EQ(got[0], 16777217);
  EXPECT_EQ(got[1], -1);
  for (const char* name : {"mask", "tok", "q.weight"}) {
    ASSERT_OK_AND_ASSIGN(TensorView m, merged->Get(name));
    const OwnedTensor& want = *std::find_if(
        ft.begin(), ft.end(), [&](const OwnedTensor& t) { return t.info.name == name; });
    EXPECT_EQ(m.info.dtype, want.info.dtype) << name;
    EXPECT_EQ(std::vector<uint8_t>(m.data.begin(), m.data.end()), want.data) << name;
  }
  ASSERT_OK_AND_ASSIGN(TensorView mw, merged->Get("w"));
  EXPECT_EQ(mw.info.dtype, DType::kF16);

  // A rule cannot ask for DCT on an integer tensor.
  ASSERT_OK_AND_ASSIGN(EncodingRule rule, EncodingRule::Parse("position_ids=dct"));
  o.rules = {rule};
  EXPECT_THAT(Compress(base, ft, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'position_ids'"), HasSubstr("dtype I64"))));
}

// New-user trial (session 9): a finetuned 'w' saved as I32 against an F32 base was stored
// raw with no word, and the merged model held an I32 weight. A dtype change to or from a
// non-float dtype is refused, naming both dtypes; allow_dtype_change stores it raw with a
// warning. F32 -> BF16 is a float cast, coded as a delta as before.
TEST_F(CompressInputsTest, ADtypeChangeToANonFloatDtypeIsRefusedOrNamed) {
  const std::vector<float> w = Gaussian(64 * 64, 1, 21);
  std::vector<int32_t> w_int(w.size());
  for (size_t i = 0; i < w.size(); ++i) w_int[i] = static_cast<int32_t>(1000 * w[i]);
  const std::vector<OwnedTensor> base = {MakeTensor("w", DType::kF32, {64, 64}, w),
                                         MakeTensor("v", DType::kF32, {64, 64}, w)};
  const std::vector<OwnedTensor> ft = {MakeTensor("v", DType::kBF16, {64, 64}, Nudged(w, 22)),
                                       MakeRaw<int32_t>("w", DType::kI32, {64, 64}, w_int)};
  CompressOptions o;
  o.min_dct_elements = 1024;
  EXPECT_THAT(Compress(base, ft, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1 tensor(s) refused (CompressOptions::"
                                       "allow_dtype_change stores tensors whose dtype changes "
                                       "raw): tensor 'w': base dtype F32 -> finetuned dtype "
                                       "I32 (it would be stored raw, and the merged model "
                                       "would get the finetuned dtype)"),
                             Not(HasSubstr("allow_nonfinite")))));
  EXPECT_FALSE(std::filesystem::exists(dds()));

  o.allow_dtype_change = true;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft, o));
  EXPECT_THAT(stats.warnings, Contains("tensor 'w': base dtype F32 -> finetuned dtype I32: "
                                       "stored raw; the merged model gets the finetuned dtype"));
  EXPECT_THAT(stats.warnings, Not(Contains(HasSubstr("'v'"))));  // a float cast: no word
  EXPECT_EQ(stats.raw_tensors, 1u);
  EXPECT_EQ(stats.dct_tensors, 1u);
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  ASSERT_THAT(DecompressModel(*base_, mc->reader(), {}, tmp_.File("m.safetensors")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
  ASSERT_OK_AND_ASSIGN(TensorView mw, merged->Get("w"));
  EXPECT_EQ(mw.info.dtype, DType::kI32);
  ASSERT_OK_AND_ASSIGN(TensorView mv, merged->Get("v"));
  EXPECT_EQ(mv.info.dtype, DType::kBF16);
}

// Reproduction 2: a renamed tensor and a base-only buffer were dropped silently; a
// bit-identical finetune made an all-unchanged container with no word.
TEST_F(CompressInputsTest, OneSidedNamesAreRefusedListedAndOptIn) {
  const std::vector<float> w = Gaussian(16 * 16, 1, 4), norm = Gaussian(16, 1, 5);
  const std::vector<OwnedTensor> base = {
      MakeTensor("model.layers.0.k_proj.weight", DType::kF32, {16, 16}, w),
      MakeTensor("model.layers.0.q_proj.weight", DType::kF32, {16, 16}, w),
      MakeTensor("model.norm.weight", DType::kF32, {16}, norm)};
  const std::vector<OwnedTensor> prefix_dropped = {
      MakeTensor("layers.0.k_proj.weight", DType::kF32, {16, 16}, Nudged(w, 6)),
      MakeTensor("layers.0.q_proj.weight", DType::kF32, {16, 16}, Nudged(w, 7)),
      MakeTensor("model.norm.weight", DType::kF32, {16}, Nudged(norm, 8))};
  EXPECT_THAT(
      Compress(base, prefix_dropped).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("2 only in the base ('model.layers.0.k_proj.weight', "
                               "'model.layers.0.q_proj.weight')"),
                     HasSubstr("2 only in the finetune ('layers.0.k_proj.weight', "
                               "'layers.0.q_proj.weight')"),
                     HasSubstr("hint: the finetune's names lack the base's prefix 'model.'"),
                     HasSubstr("--allow-missing"), HasSubstr("--allow-extra"))));

  std::vector<OwnedTensor> renamed = {
      MakeTensor("model.layers.0.key_proj.weight", DType::kF32, {16, 16}, Nudged(w, 6)),
      MakeTensor("model.layers.0.q_proj.weight", DType::kF32, {16, 16}, Nudged(w, 7)),
      MakeTensor("model.norm.weight", DType::kF32, {16}, Nudged(norm, 8))};
  CompressOptions allow_extra;
  allow_extra.allow_extra = true;
  EXPECT_THAT(Compress(base, renamed, allow_extra).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1 only in the base ('model.layers.0.k_proj.weight')"),
                             HasSubstr("--allow-missing"), Not(HasSubstr("--allow-extra")))));
  CompressOptions both = allow_extra;
  both.allow_missing = true;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, renamed, both));
  EXPECT_EQ(stats.base_only, std::vector<std::string>{"model.layers.0.k_proj.weight"});
  EXPECT_EQ(stats.finetune_only, std::vector<std::string>{"model.layers.0.key_proj.weight"});
  EXPECT_THAT(stats.warnings,
              Contains("tensor 'model.layers.0.k_proj.weight' is only in the base: left out of "
                       "the merged model"));
  EXPECT_THAT(stats.warnings, Contains(HasSubstr("tensor 'model.layers.0.key_proj.weight' is "
                                                 "only in the finetune: stored raw")));
  EXPECT_FALSE(stats.noop);

  // A bit-identical finetune: flagged as a no-op.
  ASSERT_OK_AND_ASSIGN(CompressStats same, Compress(base, base));
  EXPECT_TRUE(same.noop);
  EXPECT_THAT(same.warnings, Contains(HasSubstr("all 3 tensors are bit-identical to the base: "
                                                "this delta is a no-op")));
}

// Reproduction 3 with the tie rule off (--no-tie): lm_head.weight only in the finetune,
// with the shape of the base's embed_tokens: named as probable tied embeddings (stored
// raw only if allowed). The tie rule itself: tests/codec/tied_embeddings_test.cc.
TEST_F(CompressInputsTest, UntiedLmHeadIsNamed) {
  const std::vector<float> e = Gaussian(32 * 16, 1, 9);
  const std::vector<OwnedTensor> base = {
      MakeTensor("model.embed_tokens.weight", DType::kF32, {32, 16}, e)};
  const std::vector<OwnedTensor> ft = {
      MakeTensor("model.embed_tokens.weight", DType::kF32, {32, 16}, Nudged(e, 10)),
      MakeTensor("lm_head.weight", DType::kF32, {32, 16}, Nudged(e, 11))};
  CompressOptions o;
  o.tie_embeddings = false;
  EXPECT_THAT(Compress(base, ft, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("1 only in the finetune ('lm_head.weight')")));
  o.allow_extra = true;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft, o));
  EXPECT_THAT(stats.warnings,
              Contains(HasSubstr("tensor 'lm_head.weight' is only in the finetune: stored raw "
                                 "(lossless, 16-32 bits per weight) (it has the shape of the "
                                 "base's 'model.embed_tokens.weight': tied embeddings")));
}

// Reproduction 4: GPT-2 Conv1D matrices saved transposed. Rectangular ones: every one
// named with "transposed?"; a square one: refused by its delta norm.
TEST_F(CompressInputsTest, TransposedMatricesAreNamed) {
  std::vector<float> a = Gaussian(8 * 4, 1, 12), sq = Gaussian(16 * 16, 1, 13);
  std::vector<float> a_t(a.size()), sq_t(sq.size());
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 4; ++c) a_t[c * 8 + r] = a[r * 4 + c];
  }
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) sq_t[c * 16 + r] = sq[r * 16 + c];
  }
  const std::vector<OwnedTensor> base = {
      MakeTensor("h.0.attn.c_attn.weight", DType::kF32, {8, 4}, a),
      MakeTensor("h.0.mlp.c_fc.weight", DType::kF32, {8, 4}, a),
      MakeTensor("h.0.attn.c_proj.weight", DType::kF32, {16, 16}, sq)};
  const std::vector<OwnedTensor> ft = {
      MakeTensor("h.0.attn.c_attn.weight", DType::kF32, {4, 8}, a_t),
      MakeTensor("h.0.mlp.c_fc.weight", DType::kF32, {4, 8}, a_t),
      MakeTensor("h.0.attn.c_proj.weight", DType::kF32, {16, 16}, sq_t)};
  EXPECT_THAT(Compress(base, ft).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("2 finetuned tensor(s) cannot merge"),
                             HasSubstr("tensor 'h.0.attn.c_attn.weight' [4, 8] vs base [8, 4] "
                                       "(transposed?)"),
                             HasSubstr("tensor 'h.0.mlp.c_fc.weight' [4, 8] vs base [8, 4] "
                                       "(transposed?)"))));
  const std::vector<OwnedTensor> square_base = {base[2]};
  const std::vector<OwnedTensor> square_ft = {ft[2]};
  EXPECT_THAT(Compress(square_base, square_ft).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'h.0.attn.c_proj.weight': delta norm is 1.33"),
                             HasSubstr("x the base tensor's norm (limit 1)"),
                             HasSubstr("a transposed square matrix?"))));
  CompressOptions off;
  off.max_relative_delta = 0;
  EXPECT_THAT(Compress(square_base, square_ft, off).status(), IsOk());
}

// Reproduction 6: NaN/Inf in a finetune were stored raw and merged with no message.
TEST_F(CompressInputsTest, NonFiniteValuesAreRefusedWithCoordinates) {
  const std::vector<float> w = Gaussian(4 * 8, 1, 14);
  std::vector<float> bad = Nudged(w, 15);
  bad[1 * 8 + 2] = std::nanf("");
  bad[3 * 8 + 7] = INFINITY;
  const std::vector<OwnedTensor> base = {MakeTensor("w", DType::kF32, {4, 8}, w)};
  const std::vector<OwnedTensor> ft = {MakeTensor("w", DType::kF32, {4, 8}, bad)};
  EXPECT_THAT(
      Compress(base, ft).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'w': 2 non-finite values (NaN/Inf), the first at [1, 2]")));
  CompressOptions o;
  o.allow_nonfinite = true;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft, o));
  EXPECT_THAT(stats.warnings, Contains(HasSubstr("stored raw as they are")));
  EXPECT_EQ(stats.raw_tensors, 1u);
}

// Reproduction 6, second half: a large finite F16 delta decoded with overshoot became
// +Inf after the cast to F16. Merged values now saturate at +-65504.
TEST_F(CompressInputsTest, F16MergeSaturatesInsteadOfOverflowing) {
  const int64_t n = 128 * 128;
  std::vector<float> base_v(n, 0.0f), ft_v = Gaussian(n, 30000, 16);
  for (float& v : ft_v) v = std::clamp(v, -65504.0f, 65504.0f);
  for (int64_t i = 0; i < n; i += 7) ft_v[i] = 60000;
  CompressOptions o;
  o.max_relative_delta = 0;  // the base is all zeros: any delta is "infinitely" large
  ASSERT_THAT(Compress({MakeTensor("w", DType::kF16, {128, 128}, base_v)},
                       {MakeTensor("w", DType::kF16, {128, 128}, ft_v)}, o)
                  .status(),
              IsOk());
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  ASSERT_THAT(DecompressModel(*base_, mc->reader(), {}, tmp_.File("m.safetensors")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
  ASSERT_OK_AND_ASSIGN(TensorView m, merged->Get("w"));
  std::vector<float> out(n);
  ToFloat32(m.data.data(), DType::kF16, n, out.data());
  int64_t inf = 0, at_max = 0;
  for (float v : out) {
    inf += std::isinf(v);
    at_max += std::abs(v) == 65504.0f;
  }
  std::printf("F16 merge: %lld values at +-65504, %lld infinite\n", static_cast<long long>(at_max),
              static_cast<long long>(inf));
  EXPECT_EQ(inf, 0);
  EXPECT_GT(at_max, 0);

  // The fused row merge, directly: 65000 + 1000 saturates to 0x7BFF (65504), -inf does
  // not appear, NaN stays NaN.
  const uint16_t b16[9] = {0x7BEF, 0xFBEF, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x7BEF};
  const float delta[9] = {1000, -1000, 0, 0, 0, 0, 0, std::nanf(""), 1000};
  uint16_t o16[9];
  float scratch[9];
  EXPECT_EQ(internal::MergeRow(reinterpret_cast<const uint8_t*>(b16), DType::kF16, delta, 9,
                               DType::kF16, reinterpret_cast<uint8_t*>(o16), scratch),
            3);  // o16[0], o16[1] and o16[8]
  EXPECT_EQ(o16[0], 0x7BFF);
  EXPECT_EQ(o16[1], 0xFBFF);
  EXPECT_EQ(o16[2], 0x3C00);
  EXPECT_EQ(o16[7] & 0x7C00, 0x7C00);
  EXPECT_NE(o16[7] & 0x03FF, 0);  // NaN
  EXPECT_EQ(o16[8], 0x7BFF);      // the scalar tail too
}

// The raw-cast sibling of reproduction 6: a raw F32 tensor of 1e6 decoded as F16 became
// +Inf. Every cast now saturates like a merge: F16 +-65504, BF16 0x7F7F; the rule counts
// only finite values that would have become infinite (65519 rounds to 65504 anyway), and
// Inf stored raw (--allow-nonfinite) stays Inf.
TEST_F(CompressInputsTest, RawCastsSaturateAndAreCounted) {
  const float bf16_over = BitsFloatForTest(0x7F7F8000u);
  std::vector<float> base_v(8, 0.0f);
  std::vector<float> ft_v = {1e6f, -1e6f, 65519.0f, 65520.0f, 1.0f, bf16_over, INFINITY, -2.0f};
  CompressOptions o;
  o.max_relative_delta = 0;
  o.allow_nonfinite = true;
  ASSERT_THAT(Compress({MakeTensor("w", DType::kF32, {8}, base_v)},
                       {MakeTensor("w", DType::kF32, {8}, ft_v)}, o)
                  .status(),
              IsOk());
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  for (DType out : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(out));
    DecompressOptions d;
    d.out_dtype = out;
    DecompressStats stats;
    ASSERT_THAT(
        DecompressModel(*base_, mc->reader(), d, tmp_.File("m.safetensors"), nullptr, &stats),
        IsOk());
    ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
    ASSERT_OK_AND_ASSIGN(TensorView m, merged->Get("w"));
    uint16_t got[8];
    std::memcpy(got, m.data.data(), sizeof(got));
    if (out == DType::kF16) {
      EXPECT_EQ(stats.saturated_values, 4);  // 1e6, -1e6, 65520, bf16_over
      EXPECT_EQ(got[0], 0x7BFF);
      EXPECT_EQ(got[1], 0xFBFF);
      EXPECT_EQ(got[2], 0x7BFF);  // 65519 rounds to 65504: not counted
      EXPECT_EQ(got[3], 0x7BFF);
      EXPECT_EQ(got[5], 0x7BFF);
    } else {
      EXPECT_EQ(stats.saturated_values, 1);  // only bf16_over
      EXPECT_EQ(got[5], 0x7F7F);
    }
    EXPECT_EQ(got[6], 0x7C00 * (out == DType::kF16) + 0x7F80 * (out == DType::kBF16));  // Inf
  }
  // The rule itself, on float32.
  float v[5] = {65519.0f, 65520.0f, -1e30f, NAN, -INFINITY};
  EXPECT_EQ(internal::SaturateForCast(v, 5, DType::kF16), 2);
  EXPECT_EQ(v[0], 65519.0f);
  EXPECT_EQ(v[1], 65504.0f);
  EXPECT_EQ(v[2], -65504.0f);
  EXPECT_TRUE(std::isnan(v[3]));
  EXPECT_EQ(v[4], -INFINITY);
  EXPECT_EQ(internal::SaturateForCast(v, 5, DType::kF32), 0);
}

}  // namespace
}  // namespace deltaserve::codec
