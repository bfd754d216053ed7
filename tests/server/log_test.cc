#include "server/internal/log.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deltaserve::server::internal {
namespace {

using ::testing::MatchesRegex;

// One binary, one order: the first event sets the daemon's text format by itself (a
// benchmark or test that starts a server never calls SetLogFormat), then JSON.
TEST(LogTest, TextFormatWithoutSetLogFormatThenJson) {
  ::testing::internal::CaptureStdout();
  LogInfo("hello world", {{"task", "t1"}, {"note", "a b"}});
  std::string text = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(text, MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z I hello world "
                                 "task=t1 note=\"a b\"\n"));

  SetLogFormat(LogFormat::kJson);
  ::testing::internal::CaptureStdout();
  LogWarn("slow", {{"ms", "12"}});
  std::string json = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(json, MatchesRegex("\\{\"ts\":\"[0-9T:.-]+Z\",\"level\":\"warning\","
                                 "\"msg\":\"slow\",\"ms\":\"12\"\\}\n"));
  SetLogFormat(LogFormat::kText);
}

}  // namespace
}  // namespace deltaserve::server::internal
