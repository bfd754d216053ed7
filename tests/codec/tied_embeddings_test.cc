// The tie rule (issue 11, reproduction 3; FORMAT.md "Tied tensors"): an output head the
// base lacks is coded against the base's input embedding, recorded in the header's
// kBaseAliasKey map, and merged against that tensor by every reader.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/delta_codec.h"
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
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

constexpr int64_t kVocab = 256, kDim = 64;  // 16384 weights: DCT-coded by default

double RelativeError(const std::vector<float>& want, const TensorView& got) {
  std::vector<float> g(want.size());
  ToFloat32(got.data.data(), got.info.dtype, static_cast<int64_t>(g.size()), g.data());
  double e = 0, w = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    e += (double{want[i]} - g[i]) * (double{want[i]} - g[i]);
    w += double{want[i]} * want[i];
  }
  return std::sqrt(e / w);
}

class TiedEmbeddingsTest : public ::testing::Test {
 protected:
  absl::StatusOr<CompressStats> Compress(const std::vector<OwnedTensor>& base,
                                         const std::vector<OwnedTensor>& ft,
                                         const CompressOptions& options = {}) {
    return ::deltaserve::testing::CompressPair(tmp_.path(), base, ft, options, dds(), &base_);
  }
  std::string dds() const { return tmp_.File("d.dds"); }
  // The record of `name` in the container at dds().
  TensorRecord Record(const ContainerReader& r, const std::string& name) {
    for (size_t i = 0; i < r.num_records(); ++i) {
      auto rec = r.record(i);
      if (rec.ok() && rec->info.name == name) return *rec;
    }
    ADD_FAILURE() << name << " not in the container";
    return {};
  }

  ScopedTempDir tmp_;
  std::unique_ptr<ModelReader> base_;
  const std::vector<float> embed_ = Gaussian(kVocab * kDim, 1, 21);
};

// lm_head.weight only in the finetune (a base with tied embeddings, a finetune that
// saved its head apart): coded against model.embed_tokens.weight at the DCT rate, not
// raw at 32 bits per weight; merged, decoded offline, bit for bit the same.
TEST_F(TiedEmbeddingsTest, LmHeadIsCodedAgainstTheEmbedding) {
  const std::vector<float> head = Nudged(embed_, 23);
  const std::vector<OwnedTensor> base = {
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
  const std::vector<OwnedTensor> ft = {
      MakeTensor("lm_head.weight", DType::kF32, {kVocab, kDim}, head),
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, Nudged(embed_, 22))};
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft));  // no allow_extra needed
  EXPECT_THAT(stats.ties, ElementsAre(Pair("lm_head.weight", "model.embed_tokens.weight")));
  EXPECT_THAT(stats.finetune_only, IsEmpty());
  EXPECT_THAT(stats.warnings,
              Contains("tensor 'lm_head.weight' is not in the base: coded against the base's "
                       "'model.embed_tokens.weight' (tied embeddings)"));
  EXPECT_EQ(stats.dct_tensors, 2u);

  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  const ContainerReader& reader = mc->reader();
  EXPECT_EQ(reader.header().metadata.at(kBaseAliasKey),
            R"({"lm_head.weight":"model.embed_tokens.weight"})");
  const TensorRecord head_rec = Record(reader, "lm_head.weight");
  EXPECT_EQ(head_rec.encoding, Encoding::kDct);
  EXPECT_EQ(head_rec.base_name, "model.embed_tokens.weight");
  // The record is the head's whole cost: 1.03 bits per weight of codes and parameters
  // plus its framing (name, shapes, lengths, checksum), against 32 stored raw.
  uint64_t head_bytes = 0;
  for (size_t i = 0; i < reader.num_records(); ++i) {
    if (reader.record(i)->info.name == "lm_head.weight") {
      head_bytes = reader.record_bytes(i).size();
    }
  }
  const double bpw = 8.0 * static_cast<double>(head_bytes) / (kVocab * kDim);
  EXPECT_GT(bpw, 1.03);
  EXPECT_LT(bpw, 1.10) << head_bytes << " bytes";

  DecompressOptions d;
  ASSERT_THAT(DecompressModel(*base_, reader, d, tmp_.File("m.safetensors")), IsOk());
  ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
  ASSERT_OK_AND_ASSIGN(TensorView got, merged->Get("lm_head.weight"));
  // The delta is 1% of the weights; 1-bit DCT keeps ~0.6 of its error.
  EXPECT_LT(RelativeError(head, got), 0.01);
  EXPECT_GT(RelativeError(head, got), 0.0);
  std::vector<uint8_t> direct(MergedBytes(head_rec, DType::kF32));
  ASSERT_THAT(MergeTensor(base_.get(), head_rec, DType::kF32, absl::MakeSpan(direct)), IsOk());
  EXPECT_TRUE(std::equal(direct.begin(), direct.end(), got.data.begin(), got.data.end()));
}

// A reader that ignores the tie map (one written before it existed) looks for a base
// tensor named 'lm_head.weight' and fails with NotFound: never a wrong model.
TEST_F(TiedEmbeddingsTest, AReaderWithoutTheTieMapFailsClearly) {
  const std::vector<OwnedTensor> base = {
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
  const std::vector<OwnedTensor> ft = {
      MakeTensor("lm_head.weight", DType::kF32, {kVocab, kDim}, Nudged(embed_, 24)),
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
  ASSERT_THAT(Compress(base, ft).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  ASSERT_OK_AND_ASSIGN(TensorRecord old_view, ParseRecord(mc->reader().record_bytes(0)));
  ASSERT_EQ(old_view.info.name, "lm_head.weight");
  EXPECT_EQ(old_view.base_name, "");
  std::vector<uint8_t> out(MergedBytes(old_view, DType::kF32));
  EXPECT_THAT(MergeTensor(base_.get(), old_view, DType::kF32, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("tensor 'lm_head.weight': not in the base model")));
  // A base without the tied tensor: the error names it.
  old_view.base_name = "model.embed_tokens.weight";
  const std::vector<OwnedTensor> other = {MakeTensor("w", DType::kF32, {kVocab, kDim}, embed_)};
  ASSERT_THAT(Write(tmp_.File("o.safetensors"), other), IsOk());
  ASSERT_OK_AND_ASSIGN(auto other_base, ModelReader::Open(tmp_.File("o.safetensors")));
  EXPECT_THAT(MergeTensor(other_base.get(), old_view, DType::kF32, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("tensor 'lm_head.weight': its tied base tensor "
                                 "'model.embed_tokens.weight' is not in the base model")));
}

// Siblings: a head saved as an exact copy of the embedding (unchanged, no payload), a
// head with added vocabulary (extra rows raw), GPT-2 names, and T5's several
// embeddings (the preferred suffix, then the shorter name, then bytewise order).
TEST_F(TiedEmbeddingsTest, CopiesAddedVocabularyAndOtherNames) {
  {
    const std::vector<OwnedTensor> base = {
        MakeTensor("transformer.wte.weight", DType::kF16, {kVocab, kDim}, embed_)};
    const std::vector<OwnedTensor> ft = {
        MakeTensor("lm_head.weight", DType::kF16, {kVocab, kDim}, embed_),
        MakeTensor("transformer.wte.weight", DType::kF16, {kVocab, kDim}, embed_)};
    ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft));
    EXPECT_THAT(stats.ties, ElementsAre(Pair("lm_head.weight", "transformer.wte.weight")));
    ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
    EXPECT_EQ(Record(mc->reader(), "lm_head.weight").encoding, Encoding::kUnchanged);
    ASSERT_THAT(DecompressModel(*base_, mc->reader(), {}, tmp_.File("m.safetensors")), IsOk());
    ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
    ASSERT_OK_AND_ASSIGN(TensorView head, merged->Get("lm_head.weight"));
    ASSERT_OK_AND_ASSIGN(TensorView wte, base_->Get("transformer.wte.weight"));
    EXPECT_TRUE(std::equal(head.data.begin(), head.data.end(), wte.data.begin(), wte.data.end()));
  }
  {
    std::vector<float> grown = Nudged(embed_, 25);
    const std::vector<float> added = Gaussian(4 * kDim, 1, 26);
    grown.insert(grown.end(), added.begin(), added.end());
    const std::vector<OwnedTensor> base = {
        MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
    const std::vector<OwnedTensor> ft = {
        MakeTensor("lm_head.weight", DType::kF32, {kVocab + 4, kDim}, grown),
        MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
    ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft));
    EXPECT_THAT(stats.ties, ElementsAre(Pair("lm_head.weight", "model.embed_tokens.weight")));
    ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
    const TensorRecord rec = Record(mc->reader(), "lm_head.weight");
    EXPECT_EQ(rec.encoding, Encoding::kDct);
    EXPECT_EQ(rec.extra_rows.size(), 4u * kDim * 4);
    ASSERT_THAT(DecompressModel(*base_, mc->reader(), {}, tmp_.File("m.safetensors")), IsOk());
    ASSERT_OK_AND_ASSIGN(auto merged, ModelReader::Open(tmp_.File("m.safetensors")));
    ASSERT_OK_AND_ASSIGN(TensorView head, merged->Get("lm_head.weight"));
    EXPECT_LT(RelativeError(grown, head), 0.01);
    float last;
    std::memcpy(&last, head.data.data() + head.data.size() - 4, 4);
    EXPECT_EQ(last, added.back());  // extra rows are exact
  }
  {
    const std::vector<OwnedTensor> base = {
        MakeTensor("shared.weight", DType::kF32, {kVocab, kDim}, embed_),
        MakeTensor("encoder.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_),
        MakeTensor("decoder.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
    std::vector<OwnedTensor> ft = base;
    ft.push_back(MakeTensor("lm_head.weight", DType::kF32, {kVocab, kDim}, Nudged(embed_, 27)));
    ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft));
    EXPECT_THAT(stats.ties, ElementsAre(Pair("lm_head.weight", "decoder.embed_tokens.weight")));
  }
}

// A head that is not a copy of the embedding (trained apart: delta norm ~1.4 x) is not
// tied; it is then finetune-only, refused unless allowed, and stored raw. Names that
// only end like a head ("my_lm_head.weight") are not heads.
TEST_F(TiedEmbeddingsTest, UnrelatedHeadIsNotTied) {
  const std::vector<OwnedTensor> base = {
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_)};
  const std::vector<OwnedTensor> ft = {
      MakeTensor("lm_head.weight", DType::kF32, {kVocab, kDim}, Gaussian(kVocab * kDim, 1, 28)),
      MakeTensor("model.embed_tokens.weight", DType::kF32, {kVocab, kDim}, embed_),
      MakeTensor("my_lm_head.weight", DType::kF32, {kVocab, kDim}, embed_)};
  EXPECT_THAT(Compress(base, ft).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("2 only in the finetune ('lm_head.weight', "
                                 "'my_lm_head.weight')")));
  CompressOptions o;
  o.allow_extra = true;
  ASSERT_OK_AND_ASSIGN(CompressStats stats, Compress(base, ft, o));
  EXPECT_THAT(stats.ties, IsEmpty());
  EXPECT_THAT(stats.warnings,
              Contains(HasSubstr("tensor 'lm_head.weight' is not tied to the base's "
                                 "'model.embed_tokens.weight': its delta norm is 1.4")));
  ASSERT_OK_AND_ASSIGN(auto mc, MappedContainer::Open(dds()));
  EXPECT_EQ(mc->reader().header().metadata.count(kBaseAliasKey), 0u);
  EXPECT_EQ(Record(mc->reader(), "lm_head.weight").encoding, Encoding::kRaw);
}

// The tie map's text: what a reader accepts, and what it refuses (InvalidArgument
// naming the key) in ParseBaseAlias, ContainerWriter::Open and ContainerReader::Parse.
TEST(BaseAliasTest, ParseAndRefuse) {
  std::map<std::string, std::string> alias = {{"lm_head.weight", "model.embed_tokens.weight"},
                                              {"a", "b"}};
  ASSERT_OK_AND_ASSIGN(std::string text, SerializeBaseAlias(alias));
  EXPECT_EQ(text, R"({"a":"b","lm_head.weight":"model.embed_tokens.weight"})");
  ASSERT_OK_AND_ASSIGN(auto parsed, ParseBaseAlias({{kBaseAliasKey, text}}));
  EXPECT_EQ(parsed, alias);
  ASSERT_OK_AND_ASSIGN(auto none, ParseBaseAlias({{"tool", "x"}}));
  EXPECT_THAT(none, IsEmpty());
  for (const char* bad : {R"(["a"])", R"({"a":1})", R"({"a":"a"})", R"({"":"b"})",
                          R"({"a":"b","a":"c"})", R"({"a":)"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(ParseBaseAlias({{kBaseAliasKey, bad}}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("header metadata 'deltaserve.base_alias'")));
    ContainerHeader h;
    h.metadata[kBaseAliasKey] = bad;
    ScopedTempDir tmp;
    EXPECT_THAT(ContainerWriter::Open(tmp.File("x.dds"), h).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("base_alias")));
    const std::vector<uint8_t> bytes = AssembleContainer(SerializeHeader(h), {});
    EXPECT_THAT(ContainerReader::Parse(bytes).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("base_alias")));
  }
}

}  // namespace
}  // namespace deltaserve::codec
