#include "common/json.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(JsonTest, ParsesValidJson) {
  absl::StatusOr<nlohmann::json> j = ParseJson(R"({"a": [1, 2], "b": "x"})", "t.json");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["a"][1], 2);
}

TEST(JsonTest, SyntaxErrorNamesLineAndColumn) {
  EXPECT_THAT(ParseJson("{\n  \"a\": 1,\n  ]\n}", "cfg.json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("cfg.json: malformed JSON at line 3, column 3"))));
  EXPECT_THAT(ParseJson("", "empty").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty: malformed JSON")));
}

TEST(JsonTest, DumpRefusesInvalidUtf8InsteadOfThrowing) {
  nlohmann::json j = {{"k", std::string("\xff")}};
  EXPECT_THAT(DumpJson(j, "meta").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("meta: cannot serialize")));
  nlohmann::json ok = {{"k", 1}};
  EXPECT_EQ(*DumpJson(ok, "meta"), R"({"k":1})");
  EXPECT_EQ(*DumpJson(ok, "meta", 1), "{\n \"k\": 1\n}");
}

TEST(JsonTest, TypedGetters) {
  EXPECT_EQ(*JsonToNonNegativeInt(nlohmann::json(5), "n"), 5);
  EXPECT_THAT(JsonToNonNegativeInt(nlohmann::json(-1), "n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n: -1 is negative")));
  EXPECT_THAT(JsonToNonNegativeInt(nlohmann::json(18446744073709551615ull), "n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
  EXPECT_THAT(JsonToNonNegativeInt(nlohmann::json(1.5), "n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-negative integer")));
  EXPECT_EQ(*JsonToString(nlohmann::json("s"), "s"), "s");
  EXPECT_THAT(JsonToString(nlohmann::json(1), "field").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("field: expected a string")));
  EXPECT_DOUBLE_EQ(*JsonToDouble(nlohmann::json(0.25), "d"), 0.25);
  EXPECT_THAT(JsonToDouble(nlohmann::json("x"), "d").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(*JsonToBool(nlohmann::json(true), "b"), true);
  EXPECT_THAT(JsonToBool(nlohmann::json(1), "b").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected true or false")));
}

}  // namespace
}  // namespace deltaserve::common
