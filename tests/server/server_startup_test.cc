// deltaserved start-up errors a new user meets: a busy --listen or --metrics-listen port,
// a --db held by another process.
#include "server/server.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

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

}  // namespace
}  // namespace deltaserve::server::testing
