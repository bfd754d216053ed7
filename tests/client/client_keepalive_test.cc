// ClientOptions::keepalive_time / keepalive_timeout: a pull from a server that stops
// answering (its connection frozen by a TCP forwarder: open, passing no bytes) fails
// UNAVAILABLE and resumes over a new connection; a server that is only slow (it stalls,
// but its connection answers pings) is not cut. Before, a frozen server held a pull
// until it came back (deltactl pull made no progress for 277 s under `kill -STOP`).
#include "client/client.h"

#include <atomic>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/fake_delta_service.h"
#include "tests/client/tcp_forwarder.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::client {
namespace {

using ::deltaserve::client::testing::FakeService;
using ::deltaserve::client::testing::TcpForwarder;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

class ClientKeepaliveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_.tensors = testing::FourTensors();
    int port = 0;
    // The server takes pings every 100 ms (deltaserved: --min-client-ping-seconds).
    server_ = testing::StartFakeServer(&service_, &port, absl::Milliseconds(100));
    ASSERT_NE(server_, nullptr);
    forwarder_ = std::make_unique<TcpForwarder>(port);
    ASSERT_NE(forwarder_->port(), 0);
    options_.target = "127.0.0.1:" + std::to_string(forwarder_->port());
    options_.deadline = absl::Seconds(60);
  }
  void TearDown() override {
    // The frozen connection's handler may still be writing: the forwarder goes first.
    forwarder_.reset();
    server_->Shutdown(std::chrono::system_clock::now());
  }

  FakeService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<TcpForwarder> forwarder_;
  ClientOptions options_;
};

// The ping timeout of the frozen-connection tests: above what a loaded machine takes to
// answer a ping on a live connection (a timeout that fires there spends the retries).
constexpr absl::Duration kFrozenAfter = absl::Seconds(4);

// The frozen connection: a ping unanswered for keepalive_timeout fails the pull
// UNAVAILABLE, saying the server stopped answering (no retries), instead of hanging.
TEST_F(ClientKeepaliveTest, FrozenServerFailsTheCallUnavailable) {
  options_.keepalive_time = absl::Seconds(1);
  options_.keepalive_timeout = kFrozenAfter;
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options_));
  ASSERT_THAT(client->ListTasks().status(), IsOk());  // the connection is up
  forwarder_->Freeze();
  PullOptions pull;
  pull.range_retries = 0;
  EXPECT_THAT(client->PullWeightsToMemory("chat", pull).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("the server stopped answering")));
  EXPECT_GT(forwarder_->frozen_bytes(), 0u);  // the request (and pings) were held back
}

// Frozen in the middle of the stream (before the third tensor): the pull fails over to
// a new connection and resumes after its last verified tensor; every tensor arrives.
TEST_F(ClientKeepaliveTest, FrozenMidStreamResumesOverANewConnection) {
  options_.keepalive_time = absl::Seconds(1);
  options_.keepalive_timeout = kFrozenAfter;
  std::atomic<bool> frozen{false};
  service_.before_tensor = [&](size_t index) {
    if (index == 2 && !frozen.exchange(true)) forwarder_->Freeze();
  };
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options_));
  PullOptions pull;
  pull.range_retries = 3;
  ASSERT_OK_AND_ASSIGN(PulledModel model, client->PullWeightsToMemory("chat", pull));
  ASSERT_EQ(model.tensors.size(), service_.tensors.size());
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    EXPECT_EQ(model.tensors[i].info.name, service_.tensors[i].info.name);
    EXPECT_EQ(model.tensors[i].data, service_.tensors[i].data);
  }
  EXPECT_TRUE(frozen.load());
  EXPECT_GE(model.stats.resumed, 1u);
}

// A slow server is not cut: the stream stalls for three keepalive periods (pings go out
// and are answered, with a timeout far above an answer's time on a loaded machine) and
// then completes on its first connection.
TEST_F(ClientKeepaliveTest, SlowServerThatAnswersPingsIsNotCut) {
  options_.keepalive_time = absl::Seconds(1);
  options_.keepalive_timeout = absl::Seconds(20);
  service_.before_tensor = [](size_t index) {
    if (index == 1) absl::SleepFor(absl::Seconds(3));  // the stall, not a deadline
  };
  ASSERT_OK_AND_ASSIGN(auto client, DeltaClient::Open(options_));
  PullOptions pull;
  pull.range_retries = 0;  // a cut stream would fail the pull
  ASSERT_OK_AND_ASSIGN(PulledModel model, client->PullWeightsToMemory("chat", pull));
  EXPECT_EQ(model.tensors.size(), service_.tensors.size());
  EXPECT_EQ(model.stats.resumed, 0u);
}

TEST(ClientKeepaliveOptionsTest, Validate) {
  ClientOptions options;
  options.target = "127.0.0.1:1";
  EXPECT_EQ(options.keepalive_time, absl::Seconds(30));
  EXPECT_EQ(options.keepalive_timeout, absl::Seconds(20));
  options.keepalive_time = absl::ZeroDuration();  // no pings
  EXPECT_THAT(options.Validate(), IsOk());
  options.keepalive_time = -absl::Seconds(1);
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keepalive_time")));
  options.keepalive_time = absl::Microseconds(10);
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keepalive_time")));
  options.keepalive_time = absl::Seconds(1);
  options.keepalive_timeout = absl::ZeroDuration();
  EXPECT_THAT(options.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keepalive_timeout")));
}

}  // namespace
}  // namespace deltaserve::client
