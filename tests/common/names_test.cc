#include "common/names.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(NamesTest, AcceptsTheNamesUsersGive) {
  for (const std::string& good : {std::string("chat"), std::string("Qwen2.5-0.5B_chat-v1.2"),
                                  std::string(kMaxNameLength, 'x'), std::string("a..b")}) {
    EXPECT_THAT(ValidateName("task", good), IsOk()) << good;
  }
}

TEST(NamesTest, RefusalsNameTheKindTheNameAndTheRule) {
  EXPECT_THAT(ValidateName("task", "a/b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "task name 'a/b' may only contain [A-Za-z0-9._-]"));
  EXPECT_THAT(ValidateName("tenant", "sp ace"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "tenant name 'sp ace' may only contain [A-Za-z0-9._-]"));
  EXPECT_THAT(ValidateName("task", ".."),
              StatusIs(absl::StatusCode::kInvalidArgument, "task name '..' must not start with '.'"));
  EXPECT_THAT(ValidateName("task", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "task name '' must have 1 to 128 characters (it has 0)"));
  EXPECT_THAT(ValidateName("task", std::string(129, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("...' must have 1 to 128 characters (it has 129)")));
  // Bytes that need escaping are shown escaped, never raw.
  EXPECT_THAT(ValidateName("task", std::string("nul\0x\xff", 6)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'nul\\x00x\\xff'")));
}

TEST(NamesTest, QuotedNameCutsLongNames) {
  EXPECT_EQ(QuotedName("chat"), "'chat'");
  EXPECT_EQ(QuotedName(std::string(70, 'a')), "'" + std::string(64, 'a') + "...'");
}

}  // namespace
}  // namespace deltaserve::common
