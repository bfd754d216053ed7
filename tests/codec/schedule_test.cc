#include "codec/delta_dct.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"

// BitSchedule: text form, validation and patch counts (declared in codec/delta_dct.h).
namespace deltaserve::codec {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(BitScheduleTest, ParsesAndPrints) {
  ASSERT_OK_AND_ASSIGN(BitSchedule s, BitSchedule::Parse("4:0.125, 2:0.25,1:0.25,0:0.375"));
  EXPECT_THAT(s.levels, ElementsAre(Pair(4, 0.125), Pair(2, 0.25), Pair(1, 0.25),
                                    Pair(0, 0.375)));
  EXPECT_EQ(s.ToString(), "4:0.125,2:0.25,1:0.25,0:0.375");
  EXPECT_DOUBLE_EQ(s.MeanBits(), 1.25);
}

TEST(BitScheduleTest, RejectsBadText) {
  EXPECT_THAT(BitSchedule::Parse(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0.5,0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"0\"")));
  EXPECT_THAT(BitSchedule::Parse("2:0.5,0:0.4"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sum")));
  EXPECT_THAT(BitSchedule::Parse("9:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("-1:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0,0:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("a:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BitSchedule::Parse("2:0.5:1"), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string many;
  for (int i = 0; i < 17; ++i) absl::StrAppend(&many, i ? "," : "", "1:", std::to_string(1.0 / 17));
  EXPECT_THAT(BitSchedule::Parse(many), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BitScheduleTest, CountsSumAndFloorBoundaries) {
  ASSERT_OK_AND_ASSIGN(BitSchedule s, BitSchedule::Parse("2:0.5,0:0.5"));
  EXPECT_THAT(s.Counts(10), ElementsAre(5, 5));
  EXPECT_THAT(s.Counts(7), ElementsAre(3, 4));
  EXPECT_THAT(s.Counts(1), ElementsAre(0, 1));
  EXPECT_THAT(s.Counts(0), ElementsAre(0, 0));
  ASSERT_OK_AND_ASSIGN(BitSchedule t, BitSchedule::Parse("4:0.125,2:0.25,1:0.25,0:0.375"));
  EXPECT_THAT(t.Counts(16), ElementsAre(2, 4, 4, 6));
  EXPECT_THAT(t.Counts(13), ElementsAre(1, 3, 4, 5));  // floors of 1.625, 4.875, 8.125
  for (int64_t n : {1, 2, 3, 17, 1000, 65536, 123457}) {
    const auto c = t.Counts(n);
    EXPECT_EQ(c[0] + c[1] + c[2] + c[3], n);
  }
}

TEST(BitScheduleTest, ValidateChecksLevels) {
  BitSchedule s;
  EXPECT_THAT(s.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  s.levels = {{1, 1.0}};
  EXPECT_THAT(s.Validate(), IsOk());
  EXPECT_THAT(s.Counts(5), ElementsAre(5));
  EXPECT_DOUBLE_EQ(s.MeanBits(), 1.0);
  s.levels = {{8, 0.5}, {0, 0.5000001}};  // within 1e-6
  EXPECT_THAT(s.Validate(), IsOk());
  s.levels = {{8, 0.5}, {0, 0.51}};
  EXPECT_THAT(s.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BitScheduleTest, RoundTripsThroughText) {
  for (const char* text : {"2:0.5,0:0.5", "1:1", "8:0.125,0:0.875", "3:0.2,1:0.4,0:0.4"}) {
    ASSERT_OK_AND_ASSIGN(BitSchedule s, BitSchedule::Parse(text));
    EXPECT_EQ(s.ToString(), text);
    ASSERT_OK_AND_ASSIGN(BitSchedule t, BitSchedule::Parse(s.ToString()));
    EXPECT_EQ(t.levels, s.levels);
  }
}

}  // namespace
}  // namespace deltaserve::codec
