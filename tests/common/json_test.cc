#include "common/json.h"

#include <string>

#include "absl/strings/str_cat.h"
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

TEST(JsonTest, DuplicateKeysAreRefusedAtTheTopAndNested) {
  EXPECT_THAT(ParseJson(R"({"a": 1, "b": 2, "a": 3})", "h.json", "tensor name"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "h.json: duplicate tensor name 'a'"));
  EXPECT_THAT(ParseJson(R"({"a": {"x": 1, "x": 2}})", "h.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, "h.json: duplicate key 'x' in 'a'"));
  // The same key in sibling objects, and in an array of objects, is no duplicate.
  ASSERT_OK_AND_ASSIGN(nlohmann::json j,
                       ParseJson(R"({"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 3}, {"x": 4}]})",
                                 "h.json"));
  EXPECT_EQ(j["c"][1]["x"], 4);
  // A number beyond double's range is malformed, without a position.
  EXPECT_THAT(ParseJson("[1e999]", "h.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("h.json: malformed JSON: ")));
}

// A safetensors header of 60,000 tensors, each an object: nlohmann's callback parser
// rescanned the whole top-level object at the end of every entry (40,000 entries took
// 58 s of CPU); the check is linear now. The entries, and a duplicate as the very last
// key, are all seen.
TEST(JsonTest, AHeaderOfManyObjectsParsesWhole) {
  std::string text = "{";
  constexpr int kTensors = 60000;
  for (int i = 0; i < kTensors; ++i) {
    absl::StrAppend(&text, i == 0 ? "" : ",", "\"layer.", i,
                    ".weight\":{\"dtype\":\"F16\",\"shape\":[4,4],\"data_offsets\":[",
                    32 * i, ",", 32 * (i + 1), "]}");
  }
  ASSERT_OK_AND_ASSIGN(nlohmann::json j, ParseJson(text + "}", "big.safetensors: header"));
  EXPECT_EQ(j.size(), static_cast<size_t>(kTensors));
  EXPECT_EQ(j["layer.59999.weight"]["data_offsets"][1], 32 * kTensors);
  EXPECT_THAT(ParseJson(text + R"(,"layer.7.weight":{}})", "big.safetensors: header",
                        "tensor name"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "big.safetensors: header: duplicate tensor name 'layer.7.weight'"));
}

}  // namespace
}  // namespace deltaserve::common
