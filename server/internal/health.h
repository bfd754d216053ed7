// HealthMonitor: whether this deltaserved should get new calls, told to load balancers
// two ways (server/CONFIG.md "Health"; deploy/README.md "Scaling out"):
//   - grpc.health.v1.Health: SERVING / NOT_SERVING for service "" and
//     "deltaserve.v1.DeltaService" (Kubernetes gRPC probes, docker/healthcheck.sh);
//   - an HAProxy agent-check port (HAProxy 2.6 has no gRPC health check): every TCP
//     connection gets one line and is closed (HAProxy's agent protocol, "agent-check"):
//       "up ready\n"              serving (ready cancels an earlier drain)
//       "down #<reason>\n"        a dependency is unreachable (cluster mode: etcd or S3)
//       "drain #shutting down\n"  the server drains: no new calls, running ones finish
//
// States: kServing after start (the port opens only once the base is loaded, so a
// loading server fails the TCP check); kUnreachable while the last `probe` failed
// (cluster mode probes etcd and S3 every `interval`; with --base-mapped the probe also
// fails, for good, once a mapped base file changed (base_watch.h); a single node with a
// copied base has no probe); kDraining from StartDrain() on, for good.
//
// Thread safety: thread-safe. The probe runs on the monitor's own thread (it may block
// up to its own timeouts); the agent port is served by a second thread.
#ifndef DELTASERVE_SERVER_INTERNAL_HEALTH_H_
#define DELTASERVE_SERVER_INTERNAL_HEALTH_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/gauge.h"
#include "server/internal/listener.h"

namespace deltaserve::server::internal {

class HealthMonitor {
 public:
  enum class State { kServing, kUnreachable, kDraining };
  // OK when the server's dependencies answer; else the reason (kept for the agent reply
  // and the log).
  using Probe = std::function<absl::Status()>;

  struct Options {
    // Checked every `interval`; null = nothing to check (single node).
    Probe probe;
    absl::Duration interval = absl::Seconds(1);
    // Agent-check address "host:port" (port 0 = a free one, agent_port()); "" = none.
    std::string agent_listen;
    // Set to 1 while serving, 0 otherwise (deltaserve_serving). May be null.
    prometheus::Gauge* serving = nullptr;
  };

  // Binds the agent port (Unavailable / InvalidArgument as Listener::Bind) and starts
  // the threads. `grpc_health` (may be null) gets every state change, starting now
  // with SERVING; it must outlive the monitor.
  static absl::StatusOr<std::unique_ptr<HealthMonitor>> Start(
      Options options, grpc::HealthCheckServiceInterface* grpc_health);
  ~HealthMonitor();  // stops the threads, closes the agent port

  // NOT_SERVING and "drain" from now on (a later probe does not undo it).
  void StartDrain();

  State state() const;
  // The agent's line for the current state, with its "\n".
  std::string AgentReply() const;
  int agent_port() const { return agent_ ? agent_->port() : 0; }

 private:
  HealthMonitor(Options options, grpc::HealthCheckServiceInterface* grpc_health);
  void ProbeLoop();
  void AgentLoop();
  // Records the probe's result; tells gRPC and the gauge when the state changed.
  void Update(const absl::Status& probe_status);
  void Publish(State state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Options options_;
  grpc::HealthCheckServiceInterface* grpc_health_;
  std::unique_ptr<Listener> agent_;
  int wake_[2] = {-1, -1};  // pipe: the destructor wakes the agent thread

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kServing;
  std::string reason_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread prober_, agent_thread_;
};

const char* HealthStateName(HealthMonitor::State state);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_HEALTH_H_
