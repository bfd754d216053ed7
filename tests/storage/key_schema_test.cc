#include "storage/key_schema.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::storage {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TaskInfo SampleInfo() {
  TaskInfo info;
  info.created_unix = 1764370000;
  info.base_hash.fill(0xab);
  info.header_bytes = 100;
  info.total_bytes = 100 + 40 + 60 + 24;
  info.weights = 12 + 7;
  info.metadata = {{"codec", "delta-dct"}, {"patch", "16"}};
  info.tensors = {{"layer.0.w", codec::DType::kBF16, {3, 4}, codec::Encoding::kDct, 40},
                  {"bias", codec::DType::kF16, {7}, codec::Encoding::kRaw, 60}};
  return info;
}

TEST(KeySchemaTest, Keys) {
  EXPECT_EQ(TaskMetaKey("acme", "chat"), "t/acme/chat");
  EXPECT_EQ(TaskMetaPrefix("acme"), "t/acme/");
  EXPECT_EQ(UsageKey("acme"), "u/acme");
  EXPECT_EQ(HeaderKey("acme", "chat"), "h/acme/chat");
  EXPECT_EQ(RecordKey("acme", "chat", 0x0102), std::string("r/acme/chat/\0\0\0\0\0\0\x01\x02", 20));
  EXPECT_LT(RecordKey("a", "t", 255), RecordKey("a", "t", 256));  // big-endian sorts
  EXPECT_EQ(PrefixEnd("t/acme/"), "t/acme0");
  // Another tenant's keys fall outside [prefix, PrefixEnd(prefix)).
  const std::string prefix = TaskMetaPrefix("a"), end = PrefixEnd(prefix);
  for (const std::string& other : {TaskMetaKey("ab", "x"), TaskMetaKey("a-", "x"),
                                   TaskMetaKey("a.b", "x"), TaskMetaKey("A", "x")}) {
    EXPECT_FALSE(other >= prefix && other < end) << other;
  }
  EXPECT_TRUE(TaskMetaKey("a", "x") >= prefix && TaskMetaKey("a", "x") < end);
}

TEST(KeySchemaTest, TaskMetaRoundTrip) {
  const TaskInfo info = SampleInfo();
  ASSERT_OK_AND_ASSIGN(TaskInfo got, DecodeTaskMeta(EncodeTaskMeta(info), "acme", "chat"));
  EXPECT_EQ(got.tenant, "acme");
  EXPECT_EQ(got.task, "chat");
  EXPECT_EQ(got.created_unix, info.created_unix);
  EXPECT_EQ(got.base_hash, info.base_hash);
  EXPECT_EQ(got.header_bytes, 100u);
  EXPECT_EQ(got.total_bytes, 224u);
  EXPECT_EQ(got.weights, 19u);
  EXPECT_EQ(got.metadata, info.metadata);
  EXPECT_EQ(got.tensors, info.tensors);
  EXPECT_DOUBLE_EQ(got.bits_per_weight, 8.0 * 224 / 19);
  EXPECT_EQ(got.FindTensor("bias"), 1u);
  EXPECT_EQ(got.FindTensor("nope"), std::nullopt);
}

TEST(KeySchemaTest, TaskMetaDamageIsDataLoss) {
  const std::string value = EncodeTaskMeta(SampleInfo());
  EXPECT_THAT(DecodeTaskMeta("", "acme", "chat"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("task 'chat'")));
  // Every truncation and every single-bit flip is caught.
  for (size_t n = 0; n < value.size(); ++n) {
    EXPECT_THAT(DecodeTaskMeta(value.substr(0, n), "acme", "chat"),
                StatusIs(absl::StatusCode::kDataLoss))
        << n;
  }
  for (size_t i = 0; i < value.size(); ++i) {
    std::string bad = value;
    bad[i] ^= 0x10;
    EXPECT_THAT(DecodeTaskMeta(bad, "acme", "chat"), StatusIs(absl::StatusCode::kDataLoss)) << i;
  }
}

TEST(KeySchemaTest, UsageRoundTripAndDamage) {
  const std::string value = EncodeUsage({12345, 6});
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, DecodeUsage(value, "acme"));
  EXPECT_EQ(usage.bytes, 12345u);
  EXPECT_EQ(usage.tasks, 6u);
  std::string bad = value;
  bad[8] ^= 1;
  EXPECT_THAT(DecodeUsage(bad, "acme"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tenant 'acme'")));
  EXPECT_THAT(DecodeUsage(value + "x", "acme"), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace deltaserve::storage
