#include "codec/delta_codec.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::RelError;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::Write;
using ::testing::HasSubstr;

using TempDir = ::deltaserve::testing::ScopedTempDir;

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A finetune-like delta: smooth within patches, its energy concentrated in one corner
// (so that ranking patches by norm and dropping the weakest loses little).
std::vector<float> SmoothDelta(int64_t rows, int64_t cols, uint32_t seed) {
  const auto noise = Gaussian(rows * cols, 0.001f, seed);
  std::vector<float> d(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float amp = (r < rows / 2 && c < cols / 2) ? 0.05f : 0.002f;
      d[r * cols + c] =
          amp * std::sin(0.05f * r + 0.5f * seed) * std::cos(0.03f * c) + noise[r * cols + c];
    }
  }
  return d;
}

std::vector<float> Add(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

std::vector<float> AsFloats(const TensorView& t) {
  std::vector<float> f(static_cast<size_t>(t.info.num_elements()));
  ToFloat32(t.data.data(), t.info.dtype, t.info.num_elements(), f.data());
  return f;
}

// Base (F16) and finetuned (F32) models covering every policy branch.
struct Pair {
  TempDir dir;
  std::string base_path = dir.File("base.safetensors");
  std::string ft_path = dir.File("ft.safetensors");
  std::vector<OwnedTensor> base, ft;

  Pair() {
    const auto w_base = Gaussian(128 * 160, 0.05f, 1);
    const auto emb_base = Gaussian(150 * 96, 0.05f, 2);
    const auto emb_extra = Gaussian(5 * 96, 0.05f, 3);
    const auto same = Gaussian(64 * 64, 0.05f, 4);
    const auto bias = Gaussian(64, 0.1f, 5);
    const auto small = Gaussian(8 * 16, 0.1f, 6);
    base = {MakeTensor("layer/w", DType::kF16, {128, 160}, w_base),
            MakeTensor("emb", DType::kF16, {150, 96}, emb_base),
            MakeTensor("same", DType::kF16, {64, 64}, same),
            MakeTensor("layer/bias", DType::kF16, {64}, bias),
            MakeTensor("small", DType::kF16, {8, 16}, small),
            MakeTensor("only_base", DType::kF16, {4}, {1, 2, 3, 4})};
    auto w_ft = Add(AsFloats(base[0].view()), SmoothDelta(128, 160, 7));
    auto emb_ft = Add(AsFloats(base[1].view()), SmoothDelta(150, 96, 8));
    emb_ft.insert(emb_ft.end(), emb_extra.begin(), emb_extra.end());
    ft = {MakeTensor("layer/w", DType::kF32, {128, 160}, w_ft),
          MakeTensor("emb", DType::kF32, {155, 96}, emb_ft),
          base[2],  // bit-identical F16
          MakeTensor("layer/bias", DType::kF32, {64}, Add(bias, Gaussian(64, 0.01f, 9))),
          MakeTensor("small", DType::kF32, {8, 16}, Add(small, Gaussian(128, 0.01f, 10))),
          MakeTensor("only_ft", DType::kBF16, {3, 5}, Gaussian(15, 1.f, 11))};
    EXPECT_THAT(Write(base_path, base), IsOk());
    EXPECT_THAT(Write(ft_path, ft), IsOk());
  }
};

// The Pair has a base-only and a finetune-only tensor: both allowed.
CompressOptions SmallModelOptions() {
  CompressOptions o;
  o.min_dct_elements = 1024;
  o.allow_missing = true;
  o.allow_extra = true;
  return o;
}

TEST(ChooseEncodingTest, Policy) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(p.ft_path));
  const auto choose = [&](const std::string& name, const CompressOptions& o) {
    auto f = ft->Get(name);
    auto b = base->Get(name);
    EXPECT_THAT(f, IsOk());
    return ChooseEncoding(*f, b.ok() ? &*b : nullptr, o);
  };
  CompressOptions o = SmallModelOptions();
  EXPECT_EQ(*choose("layer/w", o), Encoding::kDct);
  EXPECT_EQ(*choose("emb", o), Encoding::kDct);  // added rows
  EXPECT_EQ(*choose("same", o), Encoding::kUnchanged);
  EXPECT_EQ(*choose("layer/bias", o), Encoding::kRaw);  // 1-D
  EXPECT_EQ(*choose("small", o), Encoding::kRaw);       // 128 < 1024 elements
  EXPECT_EQ(*choose("only_ft", o), Encoding::kRaw);     // not in base
  // Default threshold 16384: the 155x96 embedding is too small, the 128x160 matrix is not.
  EXPECT_EQ(*choose("emb", CompressOptions{}), Encoding::kRaw);
  EXPECT_EQ(*choose("layer/w", CompressOptions{}), Encoding::kDct);

  o.rules = {{"layer/*", Encoding::kRaw}, {"*", Encoding::kDct}};
  EXPECT_EQ(*choose("layer/w", o), Encoding::kRaw);  // first rule wins
  EXPECT_EQ(*choose("small", o), Encoding::kDct);    // forced despite its size
  EXPECT_EQ(*choose("only_ft", o), Encoding::kRaw);  // no base: always raw
  EXPECT_THAT(choose("same", o), IsOk());
  o.rules = {{"*", Encoding::kDct}};
  EXPECT_THAT(choose("layer/bias", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'layer/bias'")));
  o.rules = {{"emb", Encoding::kUnchanged}};
  EXPECT_THAT(choose("emb", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("differs from the base")));

  // Shapes that cannot merge.
  auto t = MakeTensor("x", DType::kF32, {4, 8}, Gaussian(32, 1, 1));
  auto b2 = MakeTensor("x", DType::kF32, {4, 9}, Gaussian(36, 1, 1));
  auto b3 = MakeTensor("x", DType::kF32, {5, 8}, Gaussian(40, 1, 1));
  auto b4 = MakeTensor("x", DType::kF32, {32}, Gaussian(32, 1, 1));
  for (const auto* b : {&b2, &b3, &b4}) {
    const TensorView bv = b->view();
    EXPECT_THAT(ChooseEncoding(t.view(), &bv, CompressOptions{}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'x'")));
  }
}

TEST(EncodingRuleTest, ParseAndValidate) {
  ASSERT_OK_AND_ASSIGN(auto r, EncodingRule::Parse("*embed*=raw"));
  EXPECT_EQ(r.pattern, "*embed*");
  EXPECT_EQ(r.encoding, Encoding::kRaw);
  ASSERT_OK_AND_ASSIGN(r, EncodingRule::Parse("a=b=dct"));
  EXPECT_EQ(r.pattern, "a=b");
  EXPECT_EQ(r.encoding, Encoding::kDct);
  EXPECT_EQ(r.ToString(), "a=b=dct");
  EXPECT_THAT(EncodingRule::Parse("*embed*"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EncodingRule::Parse("=raw"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseQuantizer("clipped"), IsOk());
  EXPECT_EQ(*ParseQuantizer("symmetric"), Quantizer::kSymmetric);
  EXPECT_EQ(QuantizerName(Quantizer::kMinMax), "minmax");
  EXPECT_THAT(ParseQuantizer("fancy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fancy'")));
  EXPECT_THAT(EncodingRule::Parse("x=zip"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'zip'")));
  CompressOptions o;
  EXPECT_THAT(o.Validate(), IsOk());
  o.min_dct_elements = -1;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  o = CompressOptions{};
  o.dct.patch_size = 1;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BaseHashTest, DependsOnTensorsOnly) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  const BaseHash h = ComputeBaseHash(*base);
  // Same tensors in another file order and with metadata: same hash.
  std::vector<TensorView> reversed;
  for (auto it = p.base.rbegin(); it != p.base.rend(); ++it) reversed.push_back(it->view());
  ASSERT_THAT(WriteSafetensors(p.dir.File("rev.safetensors"), reversed, {{"k", "v"}}), IsOk());
  ASSERT_OK_AND_ASSIGN(auto rev, ModelReader::Open(p.dir.File("rev.safetensors")));
  EXPECT_EQ(ComputeBaseHash(*rev), h);
  // One element changed: another hash.
  auto changed = p.base;
  changed[2].data[17] ^= 1;
  ASSERT_THAT(Write(p.dir.File("chg.safetensors"), changed), IsOk());
  ASSERT_OK_AND_ASSIGN(auto chg, ModelReader::Open(p.dir.File("chg.safetensors")));
  EXPECT_NE(ComputeBaseHash(*chg), h);
}

TEST(BaseHashTest, MatchCheckNamesBothHashes) {
  BaseHash a{}, b{};
  b[15] = 1;
  EXPECT_THAT(CheckBaseHashMatch(a, a, "task 't'", "the resident base"), IsOk());
  EXPECT_THAT(CheckBaseHashMatch(a, b, "task 't'", "the resident base"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("task 't' was compressed against base ", BaseHashHex(a),
                                    ", not the resident base ", BaseHashHex(b))));
}

TEST(DeltaCodecTest, CompressDecompressRoundTrip) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(p.ft_path));
  const std::string dds = p.dir.File("d.dds");
  std::vector<std::string> seen;
  ASSERT_OK_AND_ASSIGN(auto stats,
                       CompressModel(*base, *ft, SmallModelOptions(), dds,
                                     [&](size_t done, size_t total, const std::string& name) {
                                       EXPECT_EQ(total, 6u);
                                       EXPECT_EQ(done, seen.size() + 1);
                                       seen.push_back(name);
                                     }));
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(stats.dct_tensors, 2u);
  EXPECT_EQ(stats.raw_tensors, 3u);
  EXPECT_EQ(stats.unchanged_tensors, 1u);
  EXPECT_EQ(stats.dct_weights, 128u * 160 + 155 * 96);
  EXPECT_EQ(stats.total_weights, 128u * 160 + 155 * 96 + 64 * 64 + 64 + 128 + 15);
  EXPECT_EQ(stats.container_bytes, std::filesystem::file_size(dds));

  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds));
  const ContainerReader& reader = mc->reader();
  EXPECT_EQ(reader.header().base_hash, ComputeBaseHash(*base));
  EXPECT_EQ(reader.header().metadata.at("codec.patch_size"),
            std::to_string(CompressOptions{}.dct.patch_size));
  EXPECT_EQ(reader.header().metadata.at("codec.min_dct_elements"), "1024");
  EXPECT_EQ(reader.header().metadata.at("tool"), kToolName);
  ASSERT_EQ(reader.num_records(), 6u);

  // Compression is deterministic: the same inputs give the same container bytes.
  ASSERT_OK_AND_ASSIGN(auto stats2,
                       CompressModel(*base, *ft, SmallModelOptions(), p.dir.File("d2.dds")));
  EXPECT_EQ(ReadFile(dds), ReadFile(p.dir.File("d2.dds")));
  EXPECT_EQ(stats2.container_bytes, stats.container_bytes);

  const std::string merged_path = p.dir.File("merged.safetensors");
  ASSERT_THAT(DecompressModel(*base, reader, {}, merged_path), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(merged_path));
  ASSERT_EQ(merged->tensors().size(), 6u);

  for (size_t i = 0; i < reader.num_records(); ++i) {
    ASSERT_OK_AND_ASSIGN(auto rec, reader.record(i));
    const std::string& name = rec.info.name;
    ASSERT_OK_AND_ASSIGN(auto m, merged->Get(name));
    ASSERT_OK_AND_ASSIGN(auto f, ft->Get(name));
    EXPECT_EQ(m.info.shape, f.info.shape) << name;
    EXPECT_EQ(m.info.dtype, f.info.dtype) << name;
    // The merged file holds exactly MergeTensor's output.
    std::vector<uint8_t> out(MergedBytes(rec, rec.info.dtype));
    ASSERT_THAT(MergeTensor(base.get(), rec, rec.info.dtype, absl::MakeSpan(out)), IsOk());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), m.data.begin(), m.data.end())) << name;
    // Any number of parts, merged in any order, gives MergeTensor's bytes.
    for (int parts : {2, 3, 7}) {
      std::vector<uint8_t> pieces(out.size(), 0xcd);
      // on_bytes reports each part's bytes as consecutive final pieces, in order.
      std::vector<uint8_t> reported;
      for (int part = parts - 1; part >= 0; --part) {
        std::vector<uint8_t> part_bytes;
        const uint8_t* next = nullptr;
        ASSERT_THAT(
            MergeTensorPart(base.get(), rec, rec.info.dtype, part, parts, absl::MakeSpan(pieces),
                            [&](absl::Span<const uint8_t> piece) {
                              if (next != nullptr) {
                                EXPECT_EQ(piece.data(), next) << name;
                              }
                              next = piece.data() + piece.size();
                              part_bytes.insert(part_bytes.end(), piece.begin(), piece.end());
                            }),
            IsOk());
        reported.insert(reported.begin(), part_bytes.begin(), part_bytes.end());
      }
      EXPECT_EQ(pieces, out) << name << " in " << parts << " parts";
      EXPECT_EQ(reported, out) << name << " in " << parts << " parts, as reported";
    }
    EXPECT_THAT(MergeTensorPart(base.get(), rec, rec.info.dtype, 2, 2, absl::MakeSpan(out)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("part 2 of 2")));
    EXPECT_GE(MergeTensorParts(rec, 1000, 4), 1);
    EXPECT_LE(MergeTensorParts(rec, 1000, 4), 4);
    EXPECT_EQ(MergeTensorParts(rec, 1000, 1), 1);
    if (rec.encoding != Encoding::kDct) {
      // Raw and unchanged tensors come back bit for bit.
      EXPECT_TRUE(std::equal(m.data.begin(), m.data.end(), f.data.begin(), f.data.end())) << name;
    }
  }
  ASSERT_OK_AND_ASSIGN(auto same_rec, reader.record(4));
  EXPECT_EQ(same_rec.info.name, "same");
  EXPECT_EQ(same_rec.encoding, Encoding::kUnchanged);

  // The DCT-coded matrix: merged = base + DecodeDctMatrix(payload), error well below 1.
  ASSERT_OK_AND_ASSIGN(auto w_rec, reader.record(2));
  ASSERT_EQ(w_rec.info.name, "layer/w");
  ASSERT_EQ(w_rec.encoding, Encoding::kDct);
  std::vector<float> d_hat(128 * 160);
  ASSERT_THAT(DecodeDctMatrix(w_rec.payload, w_rec.rows, w_rec.cols, d_hat.data()), IsOk());
  ASSERT_OK_AND_ASSIGN(auto wb, base->Get("layer/w"));
  ASSERT_OK_AND_ASSIGN(auto wf, ft->Get("layer/w"));
  ASSERT_OK_AND_ASSIGN(auto wm, merged->Get("layer/w"));
  const auto fb = AsFloats(wb), ff = AsFloats(wf), fm = AsFloats(wm);
  std::vector<float> d(fb.size()), d_merged(fb.size());
  for (size_t i = 0; i < fb.size(); ++i) {
    d[i] = ff[i] - fb[i];
    ASSERT_EQ(fm[i], fb[i] + d_hat[i]) << i;
  }
  const double delta_err = RelError(d, d_hat);
  std::printf("layer/w: relative delta error %.4f, weight error %.5f (base alone %.5f)\n",
              delta_err, RelError(ff, fm), RelError(ff, fb));
  EXPECT_TRUE(std::isfinite(delta_err));  // quality at ~1 bit: delta_dct_test, faceres test

  // Added vocabulary: the 5 extra rows are exact, the base-shaped rows decoded.
  ASSERT_OK_AND_ASSIGN(auto emb_rec, reader.record(0));
  ASSERT_EQ(emb_rec.info.name, "emb");
  EXPECT_EQ(emb_rec.base_shape, (std::vector<int64_t>{150, 96}));
  EXPECT_EQ(emb_rec.extra_rows.size(), 5u * 96 * 4);
  ASSERT_OK_AND_ASSIGN(auto em, merged->Get("emb"));
  ASSERT_OK_AND_ASSIGN(auto ef, ft->Get("emb"));
  const size_t base_bytes = 150 * 96 * 4;
  EXPECT_TRUE(std::equal(em.data.begin() + base_bytes, em.data.end(), ef.data.begin() + base_bytes,
                         ef.data.end()));

  // Decoding twice gives identical bytes.
  ASSERT_THAT(DecompressModel(*base, reader, {}, p.dir.File("merged2.safetensors")), IsOk());
  EXPECT_EQ(ReadFile(merged_path), ReadFile(p.dir.File("merged2.safetensors")));
}

// With 8-bit patches and nothing dropped the decoded delta is close to the true one:
// CompressModel fed the codec the right delta (ft - base) in the right 2-D view.
TEST(DeltaCodecTest, EightBitScheduleReconstructsTheDelta) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(p.ft_path));
  CompressOptions o = SmallModelOptions();
  ASSERT_OK_AND_ASSIGN(o.dct.schedule, BitSchedule::Parse("8:1"));
  ASSERT_THAT(CompressModel(*base, *ft, o, p.dir.File("d.dds")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(p.dir.File("d.dds")));
  EXPECT_EQ(mc->reader().header().metadata.at("codec.schedule"), "8:1");
  for (const char* name : {"layer/w", "emb"}) {
    ASSERT_OK_AND_ASSIGN(auto b, base->Get(name));
    ASSERT_OK_AND_ASSIGN(auto f, ft->Get(name));
    const auto fb = AsFloats(b), ff = AsFloats(f);
    std::vector<float> d(fb.size()), w_hat(ff.size());
    for (size_t i = 0; i < fb.size(); ++i) d[i] = ff[i] - fb[i];
    ASSERT_OK_AND_ASSIGN(auto rec, mc->reader().record(name == std::string("emb") ? 0 : 2));
    ASSERT_EQ(rec.info.name, name);
    std::vector<uint8_t> out(MergedBytes(rec, DType::kF32));
    ASSERT_THAT(MergeTensor(base.get(), rec, DType::kF32, absl::MakeSpan(out)), IsOk());
    std::memcpy(w_hat.data(), out.data(), out.size());
    std::vector<float> d_hat(fb.size());
    for (size_t i = 0; i < fb.size(); ++i) d_hat[i] = w_hat[i] - fb[i];
    const double err = RelError(d, d_hat);
    std::printf("%s at 8 bits: relative delta error %.4f\n", name, err);
    EXPECT_LT(err, 0.1) << name;
  }
}

// The Pair compressed with SmallModelOptions(), opened.
class CompressedPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(base, ModelReader::Open(p.base_path));
    ASSERT_OK_AND_ASSIGN(ft, ModelReader::Open(p.ft_path));
    ASSERT_THAT(CompressModel(*base, *ft, SmallModelOptions(), dds), IsOk());
    ASSERT_OK_AND_ASSIGN(mc, MappedContainer::Open(dds));
  }

  Pair p;
  std::string dds = p.dir.File("d.dds");
  std::unique_ptr<ModelReader> base, ft;
  std::unique_ptr<MappedContainer> mc;
};

TEST_F(CompressedPairTest, OutputDtypeOverride) {
  DecompressOptions o;
  o.out_dtype = DType::kBF16;
  ASSERT_THAT(DecompressModel(*base, mc->reader(), o, p.dir.File("m.safetensors")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(p.dir.File("m.safetensors")));
  for (const auto& t : merged->tensors()) EXPECT_EQ(t.dtype, DType::kBF16) << t.name;
  // A raw F32 tensor cast to BF16 is the round-to-nearest of the original.
  ASSERT_OK_AND_ASSIGN(auto mb, merged->Get("layer/bias"));
  ASSERT_OK_AND_ASSIGN(auto fb, ft->Get("layer/bias"));
  const auto orig = AsFloats(fb);
  std::vector<uint8_t> want(orig.size() * 2);
  FromFloat32(orig.data(), orig.size(), DType::kBF16, want.data());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), mb.data.begin(), mb.data.end()));
}

TEST_F(CompressedPairTest, WrongBaseIsRefusedUnlessForced) {
  auto other = p.base;
  other[0].data[3] ^= 0x40;  // same names and shapes, one weight differs
  ASSERT_THAT(Write(p.dir.File("other.safetensors"), other), IsOk());
  ASSERT_OK_AND_ASSIGN(auto other_base, ModelReader::Open(p.dir.File("other.safetensors")));
  EXPECT_THAT(DecompressModel(*other_base, mc->reader(), {}, p.dir.File("m.safetensors")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(BaseHashHex(mc->reader().header().base_hash))));
  EXPECT_FALSE(std::filesystem::exists(p.dir.File("m.safetensors")));
  DecompressOptions force;
  force.force = true;
  EXPECT_THAT(DecompressModel(*other_base, mc->reader(), force, p.dir.File("m.safetensors")),
              IsOk());

  // A base missing a tensor the delta needs: NotFound naming it, even when forced.
  std::vector<OwnedTensor> partial(p.base.begin() + 1, p.base.end());
  ASSERT_THAT(Write(p.dir.File("partial.safetensors"), partial), IsOk());
  ASSERT_OK_AND_ASSIGN(auto partial_base, ModelReader::Open(p.dir.File("partial.safetensors")));
  EXPECT_THAT(DecompressModel(*partial_base, mc->reader(), force, p.dir.File("x.safetensors")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'layer/w'")));
}

TEST_F(CompressedPairTest, MergeTensorErrors) {
  ASSERT_OK_AND_ASSIGN(auto w, mc->reader().record(2));
  std::vector<uint8_t> out(MergedBytes(w, DType::kF32));
  EXPECT_EQ(out.size(), 128u * 160 * 4);
  EXPECT_THAT(MergeTensor(base.get(), w, DType::kF32, absl::MakeSpan(out).subspan(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'layer/w'")));
  EXPECT_THAT(MergeTensor(nullptr, w, DType::kF32, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs the base")));
  TensorRecord wrong = w;
  wrong.base_shape = {160, 128};
  EXPECT_THAT(MergeTensor(base.get(), wrong, DType::kF32, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[160, 128]")));
  // Raw records need no base.
  ASSERT_OK_AND_ASSIGN(auto only, mc->reader().record(3));
  ASSERT_EQ(only.info.name, "only_ft");
  std::vector<uint8_t> o(MergedBytes(only, DType::kBF16));
  EXPECT_THAT(MergeTensor(nullptr, only, DType::kBF16, absl::MakeSpan(o)), IsOk());
}

TEST(DeltaCodecTest, CompressRefusesUnmergeableShapes) {
  TempDir dir;
  ASSERT_THAT(
      Write(dir.File("b.safetensors"), {MakeTensor("x", DType::kF32, {4, 8}, Gaussian(32, 1, 1))}),
      IsOk());
  ASSERT_THAT(
      Write(dir.File("f.safetensors"), {MakeTensor("x", DType::kF32, {4, 9}, Gaussian(36, 1, 1))}),
      IsOk());
  ASSERT_OK_AND_ASSIGN(auto b, ModelReader::Open(dir.File("b.safetensors")));
  ASSERT_OK_AND_ASSIGN(auto f, ModelReader::Open(dir.File("f.safetensors")));
  EXPECT_THAT(CompressModel(*b, *f, {}, dir.File("d.dds")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'x'")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("d.dds")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("d.dds.tmp")));
}

TEST(DeltaCodecTest, CompressRefusesABaseWithNoSharedTensor) {
  TempDir dir;
  ASSERT_THAT(
      Write(dir.File("b.safetensors"), {MakeTensor("y", DType::kF32, {4, 8}, Gaussian(32, 1, 1))}),
      IsOk());
  ASSERT_THAT(
      Write(dir.File("f.safetensors"), {MakeTensor("x", DType::kF32, {4, 8}, Gaussian(32, 1, 2))}),
      IsOk());
  ASSERT_OK_AND_ASSIGN(auto b, ModelReader::Open(dir.File("b.safetensors")));
  ASSERT_OK_AND_ASSIGN(auto f, ModelReader::Open(dir.File("f.safetensors")));
  EXPECT_THAT(CompressModel(*b, *f, {}, dir.File("d.dds")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("wrong base model")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("d.dds")));
}

// Codec v2: every lossy tensor becomes an ecq record; the lossy bits per weight, counted
// as `deltactl inspect` counts them, meet the target within 2%; merges in parts equal
// the whole merge; the extra rows stay exact.
TEST(DeltaCodecTest, EcqCompressMeetsBitsTarget) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(p.ft_path));
  EXPECT_EQ(CompressOptions{}.codec, LossyCodec::kDct);  // v1 stays the default
  for (double bits : {1.0, 2.0, 4.0}) {  // the 5 raw extra rows alone take 0.44 bits/w
    CompressOptions o = SmallModelOptions();
    o.codec = LossyCodec::kEcq;
    o.ecq_target = {bits, 0.0};
    const std::string dds = p.dir.File("e.dds");
    std::vector<std::string> seen;
    ASSERT_OK_AND_ASSIGN(auto stats,
                         CompressModel(*base, *ft, o, dds,
                                       [&](size_t, size_t, const std::string& n) {
                                         seen.push_back(n);
                                       }));
    EXPECT_EQ(seen.size(), 6u);
    EXPECT_EQ(stats.dct_tensors, 2u);
    ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds));
    const ContainerReader& reader = mc->reader();
    EXPECT_EQ(reader.header().metadata.at("codec.lossy"), "ecq");
    EXPECT_EQ(reader.header().metadata.at("codec.ecq_target"), absl::StrCat("bits=", bits));
    uint64_t record_bytes = 0;
    for (size_t i = 0; i < reader.num_records(); ++i) {
      ASSERT_OK_AND_ASSIGN(auto rec, reader.record(i));
      record_bytes += SerializedRecordSize(rec);
      EXPECT_EQ(IsLossyEncoding(rec.encoding), rec.encoding == Encoding::kEcq);
      std::vector<uint8_t> whole(MergedBytes(rec, rec.info.dtype));
      ASSERT_THAT(MergeTensor(base.get(), rec, rec.info.dtype, absl::MakeSpan(whole)), IsOk());
      std::vector<uint8_t> pieces(whole.size(), 0xcd);
      for (int part = 0; part < 3; ++part) {
        ASSERT_THAT(MergeTensorPart(base.get(), rec, rec.info.dtype, part, 3,
                                    absl::MakeSpan(pieces)),
                    IsOk());
      }
      EXPECT_EQ(pieces, whole) << rec.info.name;
      if (rec.info.name == "emb") {  // the 5 added rows, exact
        ASSERT_OK_AND_ASSIGN(auto ef, ft->Get("emb"));
        EXPECT_TRUE(std::equal(whole.begin() + 150 * 96 * 4, whole.end(),
                               ef.data.begin() + 150 * 96 * 4, ef.data.end()));
      }
    }
    const double framing = static_cast<double>(stats.container_bytes - record_bytes);
    const double got = 8.0 *
                       (stats.dct_bytes + framing * stats.dct_weights / stats.total_weights) /
                       stats.dct_weights;
    EXPECT_NEAR(got, bits, 0.02 * bits);
  }
}

TEST(DeltaCodecTest, EcqCompressMeetsMaxError) {
  Pair p;
  ASSERT_OK_AND_ASSIGN(auto base, ModelReader::Open(p.base_path));
  ASSERT_OK_AND_ASSIGN(auto ft, ModelReader::Open(p.ft_path));
  CompressOptions o = SmallModelOptions();
  o.codec = LossyCodec::kEcq;
  o.ecq_target = {0.0, 0.1};
  const std::string dds = p.dir.File("e.dds");
  ASSERT_THAT(CompressModel(*base, *ft, o, dds).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds));
  double num = 0, den = 0;
  for (const char* name : {"layer/w", "emb"}) {
    ASSERT_OK_AND_ASSIGN(auto rec, mc->reader().record(name == std::string("emb") ? 0 : 2));
    ASSERT_EQ(rec.info.name, name);
    ASSERT_EQ(rec.encoding, Encoding::kEcq);
    std::vector<float> d_hat(rec.rows * rec.cols);
    ASSERT_THAT(DecodeEcqMatrix(rec.payload, rec.rows, rec.cols, d_hat.data()), IsOk());
    ASSERT_OK_AND_ASSIGN(auto b, base->Get(name));
    ASSERT_OK_AND_ASSIGN(auto f, ft->Get(name));
    const auto fb = AsFloats(b), ff = AsFloats(f);
    for (size_t i = 0; i < fb.size(); ++i) {
      const double d = double{ff[i]} - fb[i];
      num += (d - d_hat[i]) * (d - d_hat[i]);
      den += d * d;
    }
  }
  const double err = std::sqrt(num / den);
  EXPECT_LE(err, 0.1);
  EXPECT_GT(err, 0.07);  // the smallest container meeting it, not a far larger one
  o.ecq_target = {0.0, 0.0};
  EXPECT_THAT(CompressModel(*base, *ft, o, dds).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ecq target")));
}

}  // namespace
}  // namespace deltaserve::codec
