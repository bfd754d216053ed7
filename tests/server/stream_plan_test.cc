#include "server/internal/stream_plan.h"

#include <xxhash.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;

storage::TaskInfo Info() {
  storage::TaskInfo info;
  info.tenant = "t";
  info.task = "task";
  info.tensors = {{"emb", codec::DType::kF16, {10, 4}, codec::Encoding::kDct, 0},
                  {"l0/w", codec::DType::kF32, {3, 2}, codec::Encoding::kRaw, 0},
                  {"l0/b", codec::DType::kF32, {3}, codec::Encoding::kRaw, 0},
                  {"l1/w", codec::DType::kF16, {0, 2}, codec::Encoding::kRaw, 0}};
  return info;
}

TEST(PlanStreamTest, EveryTensorInContainerOrderWithRecordedDtypes) {
  v1::StreamWeightsRequest req;
  ASSERT_OK_AND_ASSIGN(StreamPlan plan, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(plan.tensors, ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(plan.bytes, ElementsAre(80, 24, 12, 0));
  EXPECT_EQ(plan.total_bytes, 40u * 2 + 6 * 4 + 3 * 4 + 0);
}

TEST(PlanStreamTest, OutputDtypeSetsTheBytes) {
  v1::StreamWeightsRequest req;
  ASSERT_OK_AND_ASSIGN(StreamPlan plan, PlanStream(req, Info(), codec::DType::kF32));
  EXPECT_EQ(plan.total_bytes, (40u + 6 + 3) * 4);
}

TEST(PlanStreamTest, GlobsAnyAndRegexWholeNameBothApply) {
  v1::StreamWeightsRequest req;
  req.add_include("l0/*");
  req.add_include("emb");
  ASSERT_OK_AND_ASSIGN(StreamPlan globs, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(globs.tensors, ElementsAre(0, 1, 2));
  req.set_include_regex(".*/w");  // whole name: "l0/w" yes, "emb" no
  ASSERT_OK_AND_ASSIGN(StreamPlan both, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(both.tensors, ElementsAre(1));
  EXPECT_THAT(both.bytes, ElementsAre(24));
  EXPECT_EQ(both.total_bytes, 24u);
  req.set_include_regex("l0");  // a partial match is no match
  ASSERT_OK_AND_ASSIGN(StreamPlan none, PlanStream(req, Info(), std::nullopt));
  EXPECT_TRUE(none.tensors.empty());
  EXPECT_EQ(none.total_bytes, 0u);
}

TEST(PlanStreamTest, ResumeSkipsEarlierTensorsThenFilters) {
  v1::StreamWeightsRequest req;
  req.set_resume_from_name("l0/b");
  ASSERT_OK_AND_ASSIGN(StreamPlan by_name, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(by_name.tensors, ElementsAre(2, 3));
  req.set_resume_from_index(1);
  req.add_include("*/w");
  ASSERT_OK_AND_ASSIGN(StreamPlan by_index, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(by_index.tensors, ElementsAre(1, 3));
}

TEST(PlanStreamTest, EndIndexClosesATensorRange) {
  v1::StreamWeightsRequest req;
  req.set_resume_from_index(1);
  req.set_end_index(3);
  ASSERT_OK_AND_ASSIGN(StreamPlan range, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(range.tensors, ElementsAre(1, 2));
  EXPECT_EQ(range.total_bytes, 36u);
  req.clear_resume();
  req.set_end_index(1);
  ASSERT_OK_AND_ASSIGN(StreamPlan head, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(head.tensors, ElementsAre(0));
  req.set_end_index(4);  // == num_tensors: to the end
  req.add_include("l*");
  ASSERT_OK_AND_ASSIGN(StreamPlan filtered, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(filtered.tensors, ElementsAre(1, 2, 3));
  // Disjoint ranges cover the task exactly once.
  std::vector<uint32_t> all;
  for (auto [lo, hi] : {std::pair<uint32_t, uint32_t>{0, 2}, {2, 3}, {3, 4}}) {
    v1::StreamWeightsRequest r;
    r.set_resume_from_index(lo);
    r.set_end_index(hi);
    ASSERT_OK_AND_ASSIGN(StreamPlan p, PlanStream(r, Info(), std::nullopt));
    all.insert(all.end(), p.tensors.begin(), p.tensors.end());
  }
  EXPECT_THAT(all, ElementsAre(0, 1, 2, 3));
}

TEST(PlanStreamTest, BadRequestsAreSpecificErrors) {
  v1::StreamWeightsRequest req;
  req.set_include_regex("(");
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  req.clear_include_regex();
  req.set_resume_from_name("nope");
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kNotFound));
  req.set_resume_from_index(4);
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  req.set_resume_from_index(2);
  req.set_end_index(2);  // empty range
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  req.set_resume_from_index(0);
  req.set_end_index(5);  // past the last tensor
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(PlanStreamTest, BeginCarriesCountsAndDecompressMetadata) {
  StreamPlan plan{{1, 2}, {24, 12}, 36};
  storage::TaskInfo info = Info();
  info.base_hash[0] = 0xab;
  v1::StreamBegin begin;
  FillStreamBegin(plan, info, /*pinned=*/true, &begin);
  EXPECT_EQ(begin.num_tensors(), 2u);
  EXPECT_EQ(begin.total_bytes(), 36u);
  EXPECT_EQ(begin.task().name(), "task");
  EXPECT_TRUE(begin.task().pinned());
  EXPECT_EQ(begin.task().tensors_size(), 0);
  ASSERT_TRUE(begin.safetensors_metadata().contains("deltaserve.base_hash"));
  EXPECT_EQ(begin.safetensors_metadata().at("deltaserve.base_hash").substr(0, 2), "ab");
}

std::shared_ptr<MergedTensor> Tensor(uint32_t index, std::string name, size_t bytes) {
  auto t = std::make_shared<MergedTensor>();
  t->info = {std::move(name), codec::DType::kF16, {static_cast<int64_t>(bytes / 2)}};
  t->index = index;
  for (size_t i = 0; i < bytes; ++i) t->data.push_back(static_cast<uint8_t>(i));
  t->xxh3_64 = 0x1234 + index;
  return t;
}

// One line per message: "H name index bytes hash", "C offset size", "E tensors bytes".
std::vector<std::string> Walk(StreamCursor& cursor,
                              const std::vector<std::shared_ptr<MergedTensor>>& tensors) {
  std::vector<std::string> out;
  while (!cursor.done()) {
    const MergedTensor* t = cursor.needs_tensor() ? tensors[cursor.position()].get() : nullptr;
    v1::StreamWeightsResponse msg;
    size_t payload = cursor.Next(t, &msg);
    if (msg.has_header()) {
      const v1::TensorHeader& h = msg.header();
      EXPECT_EQ(payload, 0u);
      out.push_back(absl::StrCat("H ", h.name(), " ", h.index(), " ", h.byte_length(), " ",
                                 h.xxh3_64(), " ", h.shape(0)));
    } else if (msg.has_chunk()) {
      EXPECT_EQ(payload, msg.chunk().data().size());
      EXPECT_EQ(msg.chunk().data(),
                std::string(reinterpret_cast<const char*>(t->data.data()) + msg.chunk().offset(),
                            payload));
      out.push_back(absl::StrCat("C ", msg.chunk().offset(), " ", payload));
    } else {
      EXPECT_EQ(payload, 0u);
      out.push_back(absl::StrCat("E ", msg.end().num_tensors(), " ", msg.end().total_bytes()));
    }
  }
  return out;
}

TEST(StreamCursorTest, HeaderThenChunksPerTensorThenEnd) {
  std::vector<std::shared_ptr<MergedTensor>> ts = {Tensor(3, "a", 10), Tensor(7, "b", 0),
                                                   Tensor(9, "c", 4)};
  StreamCursor cursor(ts.size(), /*chunk_bytes=*/4);
  EXPECT_THAT(Walk(cursor, ts), ElementsAre("H a 3 10 4663 5", "C 0 4", "C 4 4", "C 8 2",
                                            "H b 7 0 4667 0", "H c 9 4 4669 2", "C 0 4", "E 3 14"));
  EXPECT_EQ(cursor.sent_bytes(), 14u);
  EXPECT_EQ(cursor.position(), 3u);
}

TEST(StreamCursorTest, PositionAdvancesAfterTheLastChunkOfATensor) {
  std::vector<std::shared_ptr<MergedTensor>> ts = {Tensor(0, "a", 5)};
  StreamCursor cursor(1, 4);
  v1::StreamWeightsResponse msg;
  cursor.Next(ts[0].get(), &msg);  // header
  EXPECT_EQ(cursor.position(), 0u);
  cursor.Next(ts[0].get(), &msg);  // 4 bytes
  EXPECT_EQ(cursor.position(), 0u);
  EXPECT_EQ(cursor.Next(ts[0].get(), &msg), 1u);
  EXPECT_EQ(cursor.position(), 1u);
  EXPECT_FALSE(cursor.needs_tensor());
  EXPECT_FALSE(cursor.done());
  cursor.Next(nullptr, &msg);
  EXPECT_TRUE(msg.has_end());
  EXPECT_TRUE(cursor.done());
}

// checksum_after_data: a tensor still filling gets checksum_follows, each chunk waits
// only for its own bytes, and the last chunk (which waits for the end) carries the
// checksum. An old-style cursor waits for the whole tensor before its header.
TEST(StreamCursorTest, AFillingTensorStreamsItsRowsAndItsChecksumFollows) {
  std::shared_ptr<MergedTensor> t = Tensor(5, "a", 10);
  t->fill = std::make_unique<TensorFill>(t->data.data(), t->data.size());
  StreamCursor legacy(1, /*chunk_bytes=*/4);
  EXPECT_EQ(legacy.NextNeeds(*t).bytes, 10u);
  EXPECT_TRUE(legacy.NextNeeds(*t).done);

  StreamCursor cursor(1, /*chunk_bytes=*/4, /*checksum_after_data=*/true);
  EXPECT_EQ(cursor.NextNeeds(*t).bytes, 0u);
  EXPECT_FALSE(cursor.NextNeeds(*t).done);
  v1::StreamWeightsResponse msg;
  cursor.Next(t.get(), &msg);
  ASSERT_TRUE(msg.has_header());
  EXPECT_TRUE(msg.header().checksum_follows());
  EXPECT_EQ(msg.header().xxh3_64(), 0u);
  EXPECT_EQ(cursor.NextNeeds(*t).bytes, 4u);
  EXPECT_FALSE(cursor.NextNeeds(*t).done);
  t->fill->Publish(0, 8);
  EXPECT_EQ(cursor.Next(t.get(), &msg), 4u);
  EXPECT_FALSE(msg.chunk().has_tensor_xxh3_64());
  EXPECT_EQ(cursor.Next(t.get(), &msg), 4u);
  EXPECT_FALSE(msg.chunk().has_tensor_xxh3_64());
  EXPECT_EQ(cursor.NextNeeds(*t).bytes, 10u);
  EXPECT_TRUE(cursor.NextNeeds(*t).done);  // the last chunk carries the checksum
  EXPECT_FALSE(msg.chunk().has_tensor_saturated_values());
  t->fill->Publish(8, 10);
  t->xxh3_64 = *t->fill->Digest();
  t->saturated_values = 3;  // known with the checksum, and sent with it
  t->fill->Finish(absl::OkStatus());
  EXPECT_EQ(cursor.Next(t.get(), &msg), 2u);
  ASSERT_TRUE(msg.chunk().has_tensor_xxh3_64());
  EXPECT_EQ(msg.chunk().tensor_xxh3_64(), XXH3_64bits(t->data.data(), 10));
  ASSERT_TRUE(msg.chunk().has_tensor_saturated_values());
  EXPECT_EQ(msg.chunk().tensor_saturated_values(), 3u);
  EXPECT_EQ(cursor.position(), 1u);
}

TEST(StreamCursorTest, CompleteAndEmptyTensorsKeepTheirChecksumInTheHeader) {
  std::vector<std::shared_ptr<MergedTensor>> ts = {Tensor(3, "a", 10), Tensor(7, "b", 0)};
  ts[1]->fill = std::make_unique<TensorFill>(ts[1]->data.data(), 0);
  StreamCursor cursor(ts.size(), /*chunk_bytes=*/4, /*checksum_after_data=*/true);
  EXPECT_EQ(cursor.NextNeeds(*ts[0]).bytes, 0u);
  v1::StreamWeightsResponse msg;
  ts[0]->saturated_values = 2;
  cursor.Next(ts[0].get(), &msg);  // complete (no fill): checksum in the header
  EXPECT_FALSE(msg.header().checksum_follows());
  EXPECT_EQ(msg.header().xxh3_64(), 0x1234u + 3);
  EXPECT_EQ(msg.header().saturated_values(), 2u);  // and the saturation count with it
  for (int i = 0; i < 3; ++i) {
    cursor.Next(ts[0].get(), &msg);
    EXPECT_FALSE(msg.chunk().has_tensor_xxh3_64());
    EXPECT_FALSE(msg.chunk().has_tensor_saturated_values());
  }
  // An empty tensor is all header, so it waits for its end even with the opt-in.
  EXPECT_EQ(cursor.NextNeeds(*ts[1]).bytes, 0u);
  EXPECT_TRUE(cursor.NextNeeds(*ts[1]).done);
}

// resume_from_offset: the first tensor starts at that byte; its header has the whole
// tensor's checksum even with checksum_after_data (its fill is waited for), the chunk
// offsets count from the tensor's start, and the totals are the bytes sent.
TEST(StreamCursorTest, AResumedTensorStartsAtItsOffsetWithTheWholeChecksum) {
  std::vector<std::shared_ptr<MergedTensor>> ts = {Tensor(3, "a", 10), Tensor(4, "b", 4)};
  ts[0]->fill = std::make_unique<TensorFill>(ts[0]->data.data(), ts[0]->data.size());
  StreamCursor cursor(ts.size(), /*chunk_bytes=*/4, /*checksum_after_data=*/true,
                      /*first_offset=*/3);
  EXPECT_EQ(cursor.NextNeeds(*ts[0]).bytes, 10u);
  EXPECT_TRUE(cursor.NextNeeds(*ts[0]).done);
  ts[0]->fill->Publish(0, 10);
  ts[0]->fill->Finish(absl::OkStatus());
  EXPECT_THAT(Walk(cursor, ts), ElementsAre("H a 3 10 4663 5", "C 3 4", "C 7 3",
                                            "H b 4 4 4664 2", "C 0 4", "E 2 11"));
  // At the very end: the header alone completes the tensor.
  StreamCursor at_end(1, 4, true, /*first_offset=*/10);
  EXPECT_THAT(Walk(at_end, {Tensor(3, "a", 10)}), ElementsAre("H a 3 10 4663 5", "E 1 0"));
}

TEST(PlanStreamTest, ResumeFromOffsetSkipsBytesOfTheFirstTensor) {
  v1::StreamWeightsRequest req;
  req.set_resume_from_index(1);
  req.set_resume_from_offset(10);
  ASSERT_OK_AND_ASSIGN(StreamPlan plan, PlanStream(req, Info(), std::nullopt));
  EXPECT_THAT(plan.tensors, ElementsAre(1, 2, 3));
  EXPECT_EQ(plan.first_offset, 10u);
  EXPECT_EQ(plan.total_bytes, 24u + 12 - 10);
  req.set_resume_from_offset(24);  // the whole tensor: allowed (header only)
  EXPECT_TRUE(PlanStream(req, Info(), std::nullopt).ok());
  req.set_resume_from_offset(25);
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  req.add_include("l0/b");  // the resume tensor "l0/w" is filtered out
  req.set_resume_from_offset(1);
  EXPECT_THAT(PlanStream(req, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::StreamWeightsRequest no_resume;
  no_resume.set_resume_from_offset(1);
  EXPECT_THAT(PlanStream(no_resume, Info(), std::nullopt).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StreamCursorTest, EmptyPlanIsJustTheEnd) {
  StreamCursor cursor(0, 1 << 20);
  EXPECT_THAT(Walk(cursor, {}), ElementsAre("E 0 0"));
}

}  // namespace
}  // namespace deltaserve::server::internal
