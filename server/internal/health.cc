#include "server/internal/health.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {
namespace {

constexpr char kServiceName[] = "deltaserve.v1.DeltaService";

}  // namespace

const char* HealthStateName(HealthMonitor::State state) {
  switch (state) {
    case HealthMonitor::State::kServing:
      return "serving";
    case HealthMonitor::State::kUnreachable:
      return "unreachable";
    case HealthMonitor::State::kDraining:
      return "draining";
  }
  return "?";
}

HealthMonitor::HealthMonitor(Options options, grpc::HealthCheckServiceInterface* grpc_health)
    : options_(std::move(options)), grpc_health_(grpc_health) {}

absl::StatusOr<std::unique_ptr<HealthMonitor>> HealthMonitor::Start(
    Options options, grpc::HealthCheckServiceInterface* grpc_health) {
  std::unique_ptr<HealthMonitor> m(new HealthMonitor(std::move(options), grpc_health));
  if (!m->options_.agent_listen.empty()) {
    absl::StatusOr<std::unique_ptr<Listener>> agent =
        Listener::Bind(m->options_.agent_listen, "--agent-listen");
    if (!agent.ok()) return agent.status();
    m->agent_ = std::move(*agent);
    if (pipe2(m->wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      return absl::UnavailableError(absl::StrCat("health: pipe2: ", std::strerror(errno)));
    }
  }
  {
    absl::MutexLock lock(&m->mu_);
    m->Publish(State::kServing);
  }
  if (m->options_.probe) m->prober_ = std::thread([p = m.get()] { p->ProbeLoop(); });
  if (m->agent_) m->agent_thread_ = std::thread([p = m.get()] { p->AgentLoop(); });
  return m;
}

HealthMonitor::~HealthMonitor() {
  stop_.Notify();
  if (wake_[1] >= 0) {
    const char c = 0;
    (void)!write(wake_[1], &c, 1);
  }
  if (prober_.joinable()) prober_.join();
  if (agent_thread_.joinable()) agent_thread_.join();
  agent_.reset();
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

void HealthMonitor::StartDrain() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kDraining) return;
  state_ = State::kDraining;
  reason_ = "shutting down";
  Publish(state_);
}

HealthMonitor::State HealthMonitor::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::string HealthMonitor::AgentReply() const {
  absl::MutexLock lock(&mu_);
  switch (state_) {
    case State::kServing:
      return "up ready\n";
    case State::kUnreachable:
      // One line: the reason is the check's description in HAProxy's logs.
      return absl::StrCat("down #", absl::StrReplaceAll(reason_, {{"\n", " "}, {"\r", " "}}),
                          "\n");
    case State::kDraining:
      return "drain #shutting down\n";
  }
  return "down\n";
}

void HealthMonitor::Publish(State state) {
  const bool serving = state == State::kServing;
  // The gauge first: a client that has seen gRPC health change reads the gauge changed
  // too (the other order let ServerTest.AgentPortAnswersUpThenDrain read 1 after a
  // NOT_SERVING answer).
  if (options_.serving != nullptr) options_.serving->Set(serving ? 1 : 0);
  if (grpc_health_ != nullptr) {
    grpc_health_->SetServingStatus(serving);
    grpc_health_->SetServingStatus(kServiceName, serving);
  }
}

void HealthMonitor::Update(const absl::Status& probe_status) {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kDraining) return;
  const State next = probe_status.ok() ? State::kServing : State::kUnreachable;
  reason_ = probe_status.ok() ? "" : std::string(probe_status.message());
  if (next == state_) return;
  state_ = next;
  Publish(state_);
  if (next == State::kServing) {
    LogInfo("health: serving again", {});
  } else {
    LogWarn("health: NOT_SERVING (agent: down)", {{"reason", reason_}});
  }
}

void HealthMonitor::ProbeLoop() {
  do {
    Update(options_.probe());
  } while (!stop_.WaitForNotificationWithTimeout(options_.interval));
}

void HealthMonitor::AgentLoop() {
  std::vector<pollfd> fds;
  for (int fd : agent_->listen_fds()) fds.push_back({fd, POLLIN, 0});
  fds.push_back({wake_[0], POLLIN, 0});
  while (!stop_.HasBeenNotified()) {
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
    for (size_t i = 0; i + 1 < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      const int conn = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) {
        // EAGAIN (another address took it); out of descriptors: the agent tries again,
        // and this loop does not spin meanwhile.
        if (errno != EAGAIN && errno != EINTR) absl::SleepFor(absl::Milliseconds(50));
        continue;
      }
      // One short line into an empty socket buffer: never blocks.
      const std::string reply = AgentReply();
      (void)!send(conn, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(conn);
    }
  }
}

}  // namespace deltaserve::server::internal
