// deltaserved with --base-mapped (ServerOptions::base_mapped): a base file rewritten in
// place under the running server turns health NOT_SERVING, sets deltaserve_base_changed
// and fails the next pull and pin with FAILED_PRECONDITION naming the file, rather than
// serving merged bytes of the new file; the server's own reads report nothing. Waits
// are for conditions (checks counted after the action, the health answer), never fixed
// times.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::WaitUntil;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kServing("\x08\x01", 2);
const std::string kNotServing("\x08\x02", 2);

TEST_F(ServerTest, MappedBaseRewrittenInPlaceFailsPullsAndTurnsHealthNotServing) {
  // mtime back to 2020: the rewrite below moves it whatever the clock's tick, so the
  // periodic check finds it even where inotify is missing.
  const timespec old_times[2] = {{1577836800, 0}, {1577836800, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, base_path().c_str(), old_times, 0), 0);
  ServerOptions options = DefaultOptions();
  options.base_mapped = true;
  options.health_interval = absl::Milliseconds(10);
  StartServer(options);
  // grpc.health.v1 Check for service "": the serialized response, or the error.
  auto health = [&] {
    std::string response;
    grpc::Status s = GenericCall(target(), "/grpc.health.v1.Health/Check", HealthRequest(""),
                                 &response);
    return s.ok() ? response : "error: " + s.error_message();
  };
  auto checks = [&] {
    return MetricValue(server_->MetricsText(), "deltaserve_base_checks_total ");
  };
  auto two_more_checks = [&] {
    const double from = checks();
    return WaitUntil([&] { return checks() >= from + 2; });
  };

  const std::string container = MakeContainer("t", 3);
  const std::string expected = ReadFileBytes(OfflineDecode(container));
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("t", container).status(), IsOk());
  const std::string pulled = tmp_.File("t.pulled.safetensors");
  ASSERT_THAT(client->PullWeights("t", pulled).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(pulled), expected);
  ASSERT_THAT(client->PinTask("t").status(), IsOk());
  // The server's own reads of the mapping (the merge, the pin) are no change.
  ASSERT_TRUE(two_more_checks());
  std::string text = server_->MetricsText();
  EXPECT_EQ(MetricValue(text, "deltaserve_base_changed "), 0);
  EXPECT_EQ(MetricValue(text, "deltaserve_base_replaced_files "), 0);
  EXPECT_EQ(MetricValue(text, "deltaserve_serving "), 1);
  EXPECT_EQ(health(), kServing);

  // Rewrite the last KiB (tensor bytes) in place with other bytes of the same size.
  const std::string base = ReadFileBytes(base_path());
  ASSERT_GT(base.size(), 1024u);
  std::string tail = base.substr(base.size() - 1024);
  for (char& c : tail) c = static_cast<char>(c ^ 0x5a);
  const int fd = ::open(base_path().c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, tail.data(), tail.size(), static_cast<off_t>(base.size() - 1024)),
            1024);
  ASSERT_EQ(::close(fd), 0);

  ASSERT_TRUE(WaitUntil([&] { return health() == kNotServing; }));
  text = server_->MetricsText();
  EXPECT_EQ(MetricValue(text, "deltaserve_base_changed "), 1);  // set before the change shows
  // HealthMonitor::Publish sets the gauge just after gRPC's answer.
  EXPECT_TRUE(WaitForMetric("deltaserve_serving ", 0));
  // The task is cached and pinned, yet nothing more is served: not even tensors merged
  // before the change (the server cannot tell which merges read the new bytes).
  const auto failed = StatusIs(
      absl::StatusCode::kFailedPrecondition,
      AllOf(HasSubstr(base_path()), HasSubstr("changed while mapped (--base-mapped)")));
  EXPECT_THAT(client->PullWeights("t", tmp_.File("t.after.safetensors")).status(), failed);
  EXPECT_THAT(client->PinTask("t").status(), failed);
  // A change is final: the health probe (every 10 ms) keeps answering NOT_SERVING.
  EXPECT_EQ(health(), kNotServing);
}

// The default holds a private copy of the base: there is nothing to watch and no
// deltaserve_base_* watch metrics are exported.
TEST_F(ServerTest, CopiedBaseExportsNoBaseWatchMetrics) {
  StartServer();
  const std::string text = server_->MetricsText();
  EXPECT_EQ(MetricValue(text, "deltaserve_base_changed "), -1);
  EXPECT_EQ(MetricValue(text, "deltaserve_base_checks_total "), -1);
  EXPECT_GT(MetricValue(text, "deltaserve_base_bytes "), 0);
}

}  // namespace
}  // namespace deltaserve::server::testing
