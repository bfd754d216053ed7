// HealthMonitor (server/internal/health.h): state transitions with a scripted probe, what
// gRPC's health service is told, the agent-check lines HAProxy reads, and the agent
// port of a real server through its drain.
#include "server/internal/health.h"


#include <map>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// Records what gRPC's health service would answer per service name.
class FakeGrpcHealth : public grpc::HealthCheckServiceInterface {
 public:
  void SetServingStatus(const std::string& service, bool serving) override {
    absl::MutexLock lock(&mu_);
    status_[service] = serving;
  }
  void SetServingStatus(bool serving) override {
    absl::MutexLock lock(&mu_);
    for (auto& [name, s] : status_) s = serving;
    status_[""] = serving;
  }
  std::map<std::string, bool> status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, bool> status_;
};

std::string AgentLine(int port) { return testing::TcpExchange(port); }

// Waits (up to 30 s: the probe thread may run late on a loaded machine) until the
// monitor is in `state`.
bool WaitForState(const HealthMonitor& m, HealthMonitor::State state) {
  for (absl::Time end = absl::Now() + absl::Seconds(30); absl::Now() < end;) {
    if (m.state() == state) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return m.state() == state;
}

TEST(HealthMonitorTest, ProbeFailureTurnsNotServingAndAgentDownUntilItRecovers) {
  absl::Mutex mu;
  absl::Status next = absl::OkStatus();
  FakeGrpcHealth grpc_health;
  prometheus::Registry registry;
  prometheus::Gauge& serving =
      prometheus::BuildGauge().Name("serving").Register(registry).Add({});
  HealthMonitor::Options options;
  options.probe = [&] {
    absl::MutexLock lock(&mu);
    return next;
  };
  options.interval = absl::Milliseconds(10);
  options.agent_listen = "127.0.0.1:0";
  options.serving = &serving;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HealthMonitor> m,
                       HealthMonitor::Start(options, &grpc_health));
  ASSERT_GT(m->agent_port(), 0);
  EXPECT_EQ(m->state(), HealthMonitor::State::kServing);
  EXPECT_EQ(AgentLine(m->agent_port()), "up ready\n");
  EXPECT_EQ(grpc_health.status(),
            (std::map<std::string, bool>{{"", true}, {"deltaserve.v1.DeltaService", true}}));
  EXPECT_EQ(serving.Value(), 1);

  {
    absl::MutexLock lock(&mu);
    next = absl::UnavailableError("etcd http://127.0.0.1:1: connection refused");
  }
  ASSERT_TRUE(WaitForState(*m, HealthMonitor::State::kUnreachable));
  EXPECT_EQ(AgentLine(m->agent_port()), "down #etcd http://127.0.0.1:1: connection refused\n");
  EXPECT_EQ(grpc_health.status(),
            (std::map<std::string, bool>{{"", false}, {"deltaserve.v1.DeltaService", false}}));
  EXPECT_EQ(serving.Value(), 0);

  {
    absl::MutexLock lock(&mu);
    next = absl::OkStatus();
  }
  ASSERT_TRUE(WaitForState(*m, HealthMonitor::State::kServing));
  EXPECT_EQ(AgentLine(m->agent_port()), "up ready\n");
  EXPECT_EQ(grpc_health.status().at("deltaserve.v1.DeltaService"), true);
  EXPECT_EQ(serving.Value(), 1);

  // Draining is for good: a probe that succeeds does not undo it.
  m->StartDrain();
  EXPECT_EQ(m->state(), HealthMonitor::State::kDraining);
  absl::SleepFor(absl::Milliseconds(50));  // several probes
  EXPECT_EQ(m->state(), HealthMonitor::State::kDraining);
  EXPECT_EQ(AgentLine(m->agent_port()), "drain #shutting down\n");
  EXPECT_EQ(grpc_health.status().at(""), false);
  EXPECT_EQ(serving.Value(), 0);
}

TEST(HealthMonitorTest, ReasonWithNewlinesStaysOneAgentLine) {
  HealthMonitor::Options options;
  options.probe = [] { return absl::UnavailableError("line one\nline two"); };
  options.interval = absl::Milliseconds(10);
  options.agent_listen = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<HealthMonitor> m, HealthMonitor::Start(options, nullptr));
  ASSERT_TRUE(WaitForState(*m, HealthMonitor::State::kUnreachable));
  EXPECT_EQ(m->AgentReply(), "down #line one line two\n");
}

TEST(HealthMonitorTest, BadAgentAddressIsInvalidArgument) {
  HealthMonitor::Options options;
  options.agent_listen = "no-port";
  EXPECT_THAT(HealthMonitor::Start(options, nullptr).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--agent-listen")));
}

}  // namespace
}  // namespace deltaserve::server::internal

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

// The real server: its agent port answers "up ready" while it serves and "drain" once
// Shutdown begins (a running call holds the drain open), as gRPC health turns
// NOT_SERVING; the serving gauge follows.
TEST_F(ServerTest, AgentPortAnswersUpThenDrain) {
  ServerOptions options = DefaultOptions();
  options.agent_listen = "127.0.0.1:0";
  StartServer(options);
  const int agent = server_->agent_port();
  ASSERT_GT(agent, 0);
  EXPECT_EQ(TcpExchange(agent), "up ready\n");
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_serving "), 1);

  // A stream that stays open (its reader never reads) holds the drain.
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 3)).status(), IsOk());
  auto stub = SmallWindowStub();
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task("t");
  auto reader = stub->StreamWeights(&ctx, req);
  v1::StreamWeightsResponse first;
  ASSERT_TRUE(reader->Read(&first));
  // A drain deadline far beyond the checks below (a loaded machine may take seconds over
  // them): the stream, cancelled at the end, is what ends the drain.
  std::thread stopper([&] { server_->Shutdown(absl::Seconds(60)); });
  for (absl::Time end = absl::Now() + absl::Seconds(30);
       TcpExchange(agent) == "up ready\n" && absl::Now() < end;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(TcpExchange(agent), "drain #shutting down\n");
  std::string health;
  ASSERT_TRUE(GenericCall(target(), "/grpc.health.v1.Health/Check",
                          HealthRequest("deltaserve.v1.DeltaService"), &health)
                  .ok());
  EXPECT_EQ(health, std::string("\x08\x02", 2));  // NOT_SERVING
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_serving "), 0);
  ctx.TryCancel();
  stopper.join();
}

}  // namespace
}  // namespace deltaserve::server::testing
