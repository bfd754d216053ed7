// MetricsHttpServer: deltaserved's Prometheus scrape endpoint (--metrics-listen), an
// HTTP/1.1 server (GNU libmicrohttpd) that serves a prometheus-cpp registry in the text
// exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Routes (the target in origin-form "/metrics" or absolute-form "http://host:port/metrics",
// RFC 9112 section 3.2):
//   GET or HEAD /metrics  200, Content-Type "text/plain; version=0.0.4; charset=utf-8"
//   GET or HEAD /         200, a one-line pointer to /metrics
//   any other path        404
//   any other method      405 with "Allow: GET, HEAD"
// Malformed requests are libmicrohttpd's (0.9.75, Debian 12) to answer, in its strict
// mode (MHD_OPTION_STRICT_FOR_CLIENT 1, as Go's net/http, Prometheus' own exporters):
// 400 for a request line with two words ("GET /metrics") or four, a version that is not
// HTTP/x.y, a header line without ':', a folded header, a bad Content-Length, an HTTP/1.1
// request without Host; 505 for a version above 1.1; 414 for a target past its memory
// pool. A request line without any space ("GARBAGE", binary bytes) or with two spaces
// between its words is closed without an answer: libmicrohttpd 0.9.75 has no hook that
// could answer it (and does not log it).
//
// Why not prometheus::Exposer (prometheus-cpp-pull on civetweb): Debian 12's civetweb
// 1.15 runs its workers on 100 KiB stacks, and once libquadmath (loaded with OpenBLAS)
// has registered its printf hooks, glibc formats every printf through its positional
// path, whose buffers overflow that stack: any request civetweb answers with an error
// page (GET /, /favicon.ico, POST /metrics) killed deltaserved with SIGSEGV. Here the
// worker thread has a stack of kThreadStackBytes, and every answer is a fixed
// string or the serialised registry.
//
// Bound with Listener::Bind (listener.h), so every address form --listen takes works
// here too, IPv6 ("[::1]:9464") included; one daemon thread per bound address.
// Connections: at most kMaxConnections at once and kMaxConnectionsPerAddress from one
// client address (more are closed at accept); idle ones are closed after
// kIdleTimeoutSeconds. A client that sends a byte now and then is not idle: clients
// holding every connection keep scrapes out while they last (new-user trial: 64 of
// them). The endpoint is for scrapers, not for untrusted networks.
//
// Thread safety: Start and the destructor from one thread; port() from any.
#ifndef DELTASERVE_SERVER_INTERNAL_METRICS_HTTP_H_
#define DELTASERVE_SERVER_INTERNAL_METRICS_HTTP_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

struct MHD_Daemon;

namespace deltaserve::server::internal {

class MetricsHttpServer {
 public:
  static constexpr size_t kThreadStackBytes = size_t{1} << 20;
  static constexpr unsigned kMaxConnections = 64;
  static constexpr unsigned kMaxConnectionsPerAddress = 16;
  static constexpr unsigned kIdleTimeoutSeconds = 15;

  // Binds `listen` ("host:port", "[v6]:port"; port 0 = a free port) and starts serving
  // `registry` (kept alive by the server). Errors: InvalidArgument if `listen` is not
  // host:port; Unavailable if it cannot be bound (busy port) or the HTTP daemon does
  // not start. Messages start "cannot serve metrics on <listen>: ".
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Collectable> registry);

  // Stops serving: closes the listening sockets and open connections; a scrape in
  // progress finishes first. Returns within milliseconds.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port (the same on every address).
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;

  std::shared_ptr<prometheus::Collectable> registry_;
  std::vector<MHD_Daemon*> daemons_;
  int port_ = 0;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_METRICS_HTTP_H_
