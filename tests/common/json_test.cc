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

// New-user trial: the message said the position twice ("malformed JSON at line 1,
// column 9 (byte 9): [json.exception.parse_error.101] parse error at line 1, column 9:
// ...") and carried the raw bytes of the token read, not UTF-8 (garbage on a terminal,
// refused by anything that wants UTF-8, e.g. a gRPC status or --json output).
TEST(JsonTest, SyntaxErrorSaysThePositionOnceAndEscapesBadBytes) {
  const absl::Status s = ParseJson("{\"a\": tr\xff\xfe}", "config.json").status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "config.json: malformed JSON at line 1, column 9 (byte 9): syntax "
                          "error while parsing value - invalid literal; last read: "
                          "'\"a\": tr\\xff'"));
  // Valid UTF-8 in the token stays as it is.
  EXPECT_THAT(ParseJson("[\"caf\xc3\xa9\" x]", "m.json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("m.json: malformed JSON at line 1, column 10 (byte 10): ")));
  EXPECT_THAT(DumpJson(nlohmann::json{{"k", std::string("\xff")}}, "meta").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "meta: cannot serialize: invalid UTF-8 byte at index 0: 0xFF"));
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
