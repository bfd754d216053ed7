#include "codec/record_checks.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codec/delta_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/forged_container.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::CompressPair;
using ::deltaserve::testing::ForgedContainer;
using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::ResealedRecord;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::UnchangedAs;
using ::testing::AllOf;
using ::testing::HasSubstr;

OwnedTensor U8Tensor(const std::string& name, std::vector<uint8_t> bytes) {
  OwnedTensor t;
  t.info = {name, DType::kU8, {static_cast<int64_t>(bytes.size())}};
  t.data = std::move(bytes);
  return t;
}

// A real container of four records: "w.f32" F32 [64, 128] DCT-coded, "same" F32
// [32, 32] and "u8" U8 [5] unchanged, "bias" F32 [64] raw; and the trial's forgeries
// of it (the container checks and base hash hold, only the base can tell).
class RecordChecksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto w = Gaussian(64 * 128, 0.05f, 1);
    auto w_ft = w;
    for (size_t i = 0; i < w_ft.size(); ++i) w_ft[i] += 0.001f * static_cast<float>(i % 7);
    const auto same = Gaussian(32 * 32, 0.05f, 2);
    const auto bias = Gaussian(64, 0.1f, 3);
    auto bias_ft = bias;
    for (float& b : bias_ft) b += 0.01f;
    const std::vector<OwnedTensor> base = {
        MakeTensor("w.f32", DType::kF32, {64, 128}, w),
        MakeTensor("same", DType::kF32, {32, 32}, same),
        U8Tensor("u8", {1, 2, 3, 4, 5}), MakeTensor("bias", DType::kF32, {64}, bias)};
    const std::vector<OwnedTensor> ft = {
        MakeTensor("w.f32", DType::kF32, {64, 128}, w_ft),
        MakeTensor("same", DType::kF32, {32, 32}, same),
        U8Tensor("u8", {1, 2, 3, 4, 5}), MakeTensor("bias", DType::kF32, {64}, bias_ft)};
    CompressOptions o;
    o.min_dct_elements = 1024;
    o.threads = 1;
    ASSERT_THAT(CompressPair(dir_.path().string(), base, ft, o, dds_, &base_).status(), IsOk());
    ASSERT_OK_AND_ASSIGN(mc_, MappedContainer::Open(dds_));
    for (size_t i = 0; i < mc_->reader().num_records(); ++i) {
      ASSERT_OK_AND_ASSIGN(TensorRecord r, mc_->reader().record(i));
      encodings_.push_back(r.encoding);
    }
  }

  // CheckContainerFitsBase over `bytes`.
  absl::Status Check(const std::vector<uint8_t>& bytes) {
    absl::StatusOr<ContainerReader> reader = ContainerReader::Parse(bytes);
    if (!reader.ok()) return reader.status();
    return CheckContainerFitsBase(*reader, *base_);
  }

  // MergeTensor of record `i` of `bytes` into a buffer of MergedBytes filled with 0xAB:
  // the status, and whether the buffer is untouched.
  absl::Status Merge(const std::vector<uint8_t>& bytes, size_t i, bool* untouched) {
    absl::StatusOr<ContainerReader> reader = ContainerReader::Parse(bytes);
    if (!reader.ok()) return reader.status();
    absl::StatusOr<TensorRecord> rec = reader->record(i);
    if (!rec.ok()) return rec.status();
    std::vector<uint8_t> out(MergedBytes(*rec, rec->info.dtype), 0xAB);
    absl::Status s = MergeTensor(base_.get(), *rec, rec->info.dtype, absl::MakeSpan(out));
    *untouched = std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xAB; });
    return s;
  }

  deltaserve::testing::ScopedTempDir dir_;
  std::string dds_ = dir_.File("d.dds");
  std::unique_ptr<ModelReader> base_;
  std::unique_ptr<MappedContainer> mc_;
  std::vector<Encoding> encodings_;
};

TEST_F(RecordChecksTest, TheRealContainerFits) {
  ASSERT_EQ(encodings_, (std::vector<Encoding>{Encoding::kRaw, Encoding::kUnchanged,
                                               Encoding::kUnchanged, Encoding::kDct}))
      << "records in name order: bias, same, u8, w.f32";
  EXPECT_THAT(CheckContainerFitsBase(mc_->reader(), *base_), IsOk());
}

// The trial's leak: "w.f32" (F32) relabelled unchanged I32, empty payload. The merge
// used to write nothing and report success.
TEST_F(RecordChecksTest, UnchangedInAnotherDtypeIsRefusedAndMergesNothing) {
  ASSERT_OK_AND_ASSIGN(auto bytes, ForgedContainer(mc_->reader(), "w.f32", UnchangedAs(DType::kI32)));
  EXPECT_THAT(Check(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("record 3: tensor 'w.f32'"),
                                           HasSubstr("dtype I32, its base tensor is F32"))));
  bool untouched = false;
  EXPECT_THAT(Merge(bytes, 3, &untouched),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'w.f32'")));
  EXPECT_TRUE(untouched);
  // A castable pair is no exception: an unchanged record is its base bit for bit.
  ASSERT_OK_AND_ASSIGN(bytes, ForgedContainer(mc_->reader(), "same", UnchangedAs(DType::kF16)));
  EXPECT_THAT(Check(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("tensor 'same': unchanged record has dtype F16")));
}

// A 5-byte U8 tensor relabelled F64: 40 bytes out, 5 in base; it used to return heap.
TEST_F(RecordChecksTest, SmallTensorRelabelledWiderIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto bytes, ForgedContainer(mc_->reader(), "u8", UnchangedAs(DType::kF64)));
  EXPECT_THAT(Check(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("record 2: tensor 'u8'"),
                                           HasSubstr("dtype F64, its base tensor is U8"))));
  bool untouched = false;
  EXPECT_THAT(Merge(bytes, 2, &untouched), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(untouched);
}

TEST_F(RecordChecksTest, RecordTheBaseLacksIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto bytes, ForgedContainer(mc_->reader(), "same", [](TensorRecord* r) {
                         r->info.name = "ghost";
                       }));
  EXPECT_THAT(Check(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("record 1: tensor 'ghost': not in the base model")));
  bool untouched = false;
  EXPECT_THAT(Merge(bytes, 1, &untouched), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(untouched);
}

TEST_F(RecordChecksTest, TransposedShapeIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto bytes, ForgedContainer(mc_->reader(), "w.f32", [](TensorRecord* r) {
                         UnchangedAs(DType::kF32)(r);
                         r->info.shape = r->base_shape = {128, 64};
                       }));
  EXPECT_THAT(Check(bytes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'w.f32': base tensor has shape [64, 128], the "
                                       "delta was made against [128, 64] (transposed?)"))));
  bool untouched = false;
  EXPECT_THAT(Merge(bytes, 3, &untouched), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(untouched);
}

TEST_F(RecordChecksTest, ShortPayloadsAreRefused) {
  // A DCT payload one byte short: its header says how many bytes it needs.
  ASSERT_OK_AND_ASSIGN(auto bytes, ForgedContainer(mc_->reader(), "w.f32", [](TensorRecord* r) {
                         r->payload = r->payload.subspan(0, r->payload.size() - 1);
                       }));
  EXPECT_THAT(Check(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("record 3: tensor 'w.f32'"),
                                           HasSubstr("truncated"))));
  // A raw record whose shape says 65 elements over 64 elements' bytes (the record
  // itself refuses it: ParseRecord).
  std::vector<std::vector<uint8_t>> recs;
  std::vector<absl::Span<const uint8_t>> spans;
  for (size_t i = 0; i < mc_->reader().num_records(); ++i) {
    auto b = mc_->reader().record_bytes(i);
    recs.emplace_back(b.begin(), b.end());
  }
  // "bias": magic 4, length 8, name_len 2, name 4, dtype/enc/rank/base_rank 4: shape @22.
  recs[0] = ResealedRecord(recs[0], 22, 65);
  for (const auto& r : recs) spans.push_back(r);
  const auto raw_short = AssembleContainer(mc_->reader().header_bytes(), spans);
  EXPECT_THAT(Check(raw_short),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'bias'"), HasSubstr("raw payload is 256 bytes"))));
}

// A lossy record over a base tensor no float can be read from (the decoder would add
// its delta to nothing).
TEST_F(RecordChecksTest, LossyRecordOverAnIntegerBaseIsRefused) {
  const TensorInfo ints{"w.f32", DType::kI32, {64, 128}};
  ASSERT_OK_AND_ASSIGN(TensorRecord w, mc_->reader().record(3));
  EXPECT_THAT(CheckRecordFitsBase(w, &ints),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w.f32': dct record over a base tensor of dtype I32")));
  const TensorInfo floats{"w.f32", DType::kBF16, {64, 128}};
  EXPECT_THAT(CheckRecordFitsBase(w, &floats), IsOk());
  EXPECT_THAT(CheckRecordFitsBase(w, static_cast<const TensorInfo*>(nullptr)),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace deltaserve::codec
