// Listener: deltaserved's own accept loop for its TCP listen address. Accepted sockets
// are handed to gRPC through an ExternalConnectionAcceptor (grpcpp/server_builder.h),
// which runs gRPC's usual handshake (TLS included) and HTTP/2 transport on them.
//
// Why not gRPC's listener: in gRPC 1.51 (tcp_server_posix.cc, on_read) any accept4()
// error other than EAGAIN/EINTR/ECONNABORTED drops the listening port for good, so one
// EMFILE left the daemon unreachable until a restart. Here:
//   - EMFILE/ENFILE/ENOBUFS/ENOMEM from accept4() are retried after a backoff (10 ms
//     doubling to 250 ms). A spare descriptor (/dev/null) is released to accept the
//     waiting connection and close it at once, so that its client fails fast instead
//     of hanging in the backlog, and is reopened afterwards.
//   - At most `max_connections` accepted sockets are open at once (gRPC 1.51 has no
//     such limit); one more is accepted and closed at once (the client sees the
//     connection closed: UNAVAILABLE). Counted in
//     deltaserve_connections_refused_total{reason="limit"|"descriptors"}.
// gRPC closes a connection's socket itself; the Listener notices by fstat(): a
// tracked descriptor that is closed, or now names another socket (another inode), is
// no longer counted (Sweep, on demand and once a second).
//
// Thread safety: Bind, Start and Stop from one thread, in that order (Stop may come
// without Start); Sweep and connections() from any thread.
#ifndef DELTASERVE_SERVER_INTERNAL_LISTENER_H_
#define DELTASERVE_SERVER_INTERNAL_LISTENER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_builder.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace deltaserve::server::internal {

// True if deltaserved accepts on `listen` itself ("host:port", "[v6]:port"); false for
// gRPC URIs such as "unix:/path", which gRPC's own listener serves.
bool IsTcpListenAddress(const std::string& listen);

class Listener {
 public:
  struct Counters {
    prometheus::Gauge* open = nullptr;               // deltaserve_connections
    prometheus::Counter* refused_limit = nullptr;    // ..._refused_total{reason="limit"}
    prometheus::Counter* refused_no_fds = nullptr;   // {reason="descriptors"}
  };

  // Binds and listens on every address `listen` ("host:port"; port 0 = a free port,
  // the same one for all addresses of the host) resolves to, SO_REUSEADDR, no
  // SO_REUSEPORT. Unavailable "cannot listen on ...: address already in use? (set <flag>)"
  // if none can be bound (e.g. the port is busy), Unavailable "cannot listen on ...: host
  // not found? (set <flag>) [<getaddrinfo's error>]" if the host does not resolve,
  // InvalidArgument "<flag>: ..." if `listen`
  // is not host:port; `flag` is the option that set `listen` ("--listen",
  // "--agent-listen").
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& listen,
                                                        const std::string& flag);
  ~Listener();  // Stop()

  int port() const { return port_; }
  // The bound sockets (non-blocking), for a caller that accepts on them itself instead
  // of Start() (HealthMonitor's agent port). Closed by Stop() and the destructor.
  const std::vector<int>& listen_fds() const { return listen_fds_; }

  // Starts the accept thread. `acceptor` must be started (its server built) and
  // outlive Stop(). REQUIRES: max_connections >= 1.
  void Start(grpc::experimental::ExternalConnectionAcceptor* acceptor, int max_connections,
             Counters counters);
  // Stops accepting and closes the listening sockets (clients then get "connection
  // refused"); accepted connections stay with gRPC. Idempotent.
  void Stop();

  // Forgets the connections gRPC has closed; updates the gauge. Returns the count.
  int Sweep();

 private:
  Listener() = default;
  void Loop();
  // Accepts what waits on `fd`; returns the backoff to wait before the next accept
  // (zero when the queue was emptied normally).
  int AcceptAll(int fd);
  void Track(int fd);

  struct Tracked {
    int fd;
    ino_t inode;
  };

  std::vector<int> listen_fds_;
  int port_ = 0;
  int wake_[2] = {-1, -1};  // pipe: Stop() wakes the accept thread
  int spare_fd_ = -1;       // released on EMFILE (accept thread only)
  grpc::experimental::ExternalConnectionAcceptor* acceptor_ = nullptr;
  int max_connections_ = 0;
  Counters counters_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  int backoff_ms_ = 0;  // accept thread only

  absl::Mutex mu_;
  std::vector<Tracked> tracked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_LISTENER_H_
