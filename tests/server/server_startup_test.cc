// deltaserved start-up errors a new user meets: a busy --listen or --metrics-listen port,
// a --db held by another process, a --base other than the database's tasks were made
// against.
#include "server/server.h"

#include <unistd.h>

#include <cstdio>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/internal/base_check.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(ServerTest, SecondServerOnABusyListenPortFailsToStart) {
  StartServer();
  ServerOptions second = DefaultOptions();
  second.db_path = tmp_.File("db2");
  second.listen = absl::StrCat("127.0.0.1:", server_->port());
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(second);
  EXPECT_THAT(s.status(), StatusIs(absl::StatusCode::kUnavailable,
                                   HasSubstr(absl::StrCat("cannot listen on ", second.listen,
                                                          ": address already in use? (set "
                                                          "--listen)"))));
  // The first one still serves.
  EXPECT_THAT(Client()->ListTasks().status(), IsOk());
}

TEST_F(ServerTest, SecondServerOnABusyMetricsPortFailsToStart) {
  ServerOptions first = DefaultOptions();
  first.metrics_listen = "127.0.0.1:0";
  StartServer(first);
  ASSERT_GT(server_->metrics_port(), 0);
  ServerOptions second = DefaultOptions();
  second.db_path = tmp_.File("db2");
  second.metrics_listen = absl::StrCat("127.0.0.1:", server_->metrics_port());
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(second);
  EXPECT_THAT(s.status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr(absl::StrCat("cannot serve metrics on ", second.metrics_listen,
                                              ": address already in use? (set "
                                              "--metrics-listen"))));
}

TEST_F(ServerTest, SecondServerOnTheSameDbIsFailedPrecondition) {
  StartServer();
  ServerOptions second = DefaultOptions();  // same db_path
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(second);
  EXPECT_THAT(s.status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(absl::StrCat("database ", second.db_path,
                                              " is in use by another process (another "
                                              "deltaserved?)"))));
}

// A database filled against one base, served with another: the start says so (count and
// names), and a pull is refused with FAILED_PRECONDITION rather than merged into it.
TEST_F(ServerTest, StartOnTheTasksOfAnotherBaseWarnsAndPullsAreRefused) {
  StartServer();
  ASSERT_THAT(Client()->PushDeltaFile("a", MakeContainer("a", 12)).status(), IsOk());
  ASSERT_THAT(Client()->PushDeltaFile("b", MakeContainer("b", 13)).status(), IsOk());
  StopServer();

  ServerOptions wrong = DefaultOptions();
  wrong.base_path = tmp_.File("a.ft.safetensors");  // same names and shapes, other values
  ::testing::internal::CaptureStdout();
  StartServer(wrong);
  std::string log = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(log, HasSubstr("BASE MISMATCH: 2 stored tasks were compressed against another "
                             "base than --base (default/a, default/b); pulls of them fail "
                             "with FAILED_PRECONDITION"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat("base=", wrong.base_path)));
  EXPECT_THAT(log, HasSubstr("tasks=2"));
  EXPECT_THAT(Client()->PullWeights("a", tmp_.File("a.out.safetensors")).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("task 'a' was compressed against base ")));
  EXPECT_THAT(Client()->PinTask("b").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("deltaserved serves one base (--base)")));
  // New-user trial: `deltactl list` and `info` did not show which tasks these are.
  absl::StatusOr<v1::ListTasksResponse> listed = Client()->ListTasks(std::nullopt);
  ASSERT_THAT(listed.status(), IsOk());
  ASSERT_EQ(listed->tasks_size(), 2);
  EXPECT_TRUE(listed->tasks(0).other_base());
  EXPECT_TRUE(listed->tasks(1).other_base());
  absl::StatusOr<v1::TaskInfo> info = Client()->GetTask("a", /*include_tensors=*/false);
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_TRUE(info->other_base());
  StopServer();

  ::testing::internal::CaptureStdout();
  StartServer();  // the right base: no warning, pulls work
  log = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(log, Not(HasSubstr("BASE MISMATCH")));
  EXPECT_THAT(Client()->PullWeights("a", tmp_.File("a.out.safetensors")).status(), IsOk());
  listed = Client()->ListTasks(std::nullopt);
  ASSERT_THAT(listed.status(), IsOk());
  ASSERT_EQ(listed->tasks_size(), 2);
  EXPECT_FALSE(listed->tasks(0).other_base());
  EXPECT_FALSE(listed->tasks(1).other_base());
  info = Client()->GetTask("a", /*include_tensors=*/false);
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_FALSE(info->other_base());
}

TEST(BaseCheckTest, WarningNamesTheFirstTasksAndCountsTheRest) {
  internal::OtherBaseTasks found;
  found.count = 1;
  found.examples = {"t/x"};
  found.first_base_hex = "00ff";
  ::testing::internal::CaptureStdout();
  internal::WarnTasksOfAnotherBase(found, "/m/base.safetensors", "abcd");
  std::string one = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(one, HasSubstr("BASE MISMATCH: 1 stored task was compressed against another "
                             "base than --base (t/x);"));
  EXPECT_THAT(one, HasSubstr("first_task_base_hash=00ff"));
  found.count = 12;
  ::testing::internal::CaptureStdout();
  internal::WarnTasksOfAnotherBase(found, "/m/base.safetensors", "abcd");
  EXPECT_THAT(::testing::internal::GetCapturedStdout(),
              HasSubstr("12 stored tasks were compressed against another base than --base "
                        "(t/x and 11 more)"));
  found.count = 0;
  ::testing::internal::CaptureStdout();
  internal::WarnTasksOfAnotherBase(found, "/m/base.safetensors", "abcd");
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
}

// New-user trial: the base file rewritten in place while deltaserved ran changed the
// weights served ("every tensor checksum verified", wrong bytes), and a truncation killed
// the daemon (SIGBUS). The base is read into memory at start (ServerOptions::base_path):
// neither changes what it serves.
TEST_F(ServerTest, BaseFileRewrittenOrTruncatedWhileServingChangesNothing) {
  ServerOptions o = DefaultOptions();
  o.cache_bytes = 0;  // every pull merges from the base again
  StartServer(o);
  const std::string container = MakeContainer("t", 3);
  const std::string expected = ReadFileBytes(OfflineDecode(container));
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo pushed, client->PushDeltaFile("t", container));
  // Rewrite every byte after the header in place, then cut the file to 4 KiB.
  {
    std::string bytes = ReadFileBytes(base_path());
    for (size_t i = 4096; i < bytes.size(); ++i) bytes[i] = static_cast<char>(~bytes[i]);
    std::FILE* f = std::fopen(base_path().c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    ASSERT_EQ(std::fclose(f), 0);
  }
  const std::string rewritten = tmp_.File("rewritten.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats1, client->PullWeights("t", rewritten));
  EXPECT_EQ(ReadFileBytes(rewritten), expected);
  ASSERT_EQ(::truncate(base_path().c_str(), 4096), 0);
  const std::string truncated = tmp_.File("truncated.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats2, client->PullWeights("t", truncated));
  EXPECT_EQ(ReadFileBytes(truncated), expected);
  EXPECT_EQ(stats2.tensors, stats1.tensors);
}

}  // namespace
}  // namespace deltaserve::server::testing
