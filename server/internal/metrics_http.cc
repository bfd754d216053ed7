#include "server/internal/metrics_http.h"

#include <fcntl.h>
#include <microhttpd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/text_serializer.h"
#include "server/internal/listener.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {
namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kIndexBody[] = "deltaserved: Prometheus metrics are at /metrics\n";
constexpr char kNotFoundBody[] = "not found: deltaserved serves its metrics at /metrics\n";
constexpr char kNotAllowedBody[] = "method not allowed: use GET or HEAD\n";
constexpr int kStrictForClient = 1;  // MHD_OPTION_STRICT_FOR_CLIENT

// libmicrohttpd's error log (MHD_USE_ERROR_LOG: a bad request, a failed accept) into
// the daemon's log as warnings, at most one a second: a client sending garbage must not
// flood the log. The next logged line says how many were left out.
void LogFromMhd(void* /*cls*/, const char* format, va_list args) {
  static std::atomic<int64_t> last_ns{0};
  static std::atomic<uint64_t> suppressed{0};
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t last = last_ns.load();
  if (now - last < 1'000'000'000 || !last_ns.compare_exchange_strong(last, now)) {
    suppressed.fetch_add(1);
    return;
  }
  char line[512];
  std::vsnprintf(line, sizeof(line), format, args);
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  LogWarn("metrics http", {{"detail", std::move(text)},
                           {"suppressed_before", std::to_string(suppressed.exchange(0))}});
}

MHD_Result Reply(MHD_Connection* connection, unsigned status, std::string body,
                 const char* content_type) {
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;  // out of memory: MHD closes the connection
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  }
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

// The path of a request target (RFC 9112 section 3.2): origin-form ("/metrics") as it
// is; absolute-form ("http://host:9464/metrics", which a client sends through a forward
// proxy and which a server MUST accept, section 3.2.2) without its scheme and authority,
// an empty path being "/". libmicrohttpd 0.9.75 passes the target as it came (less the
// query).
absl::string_view RequestPath(absl::string_view url) {
  for (absl::string_view scheme : {"http://", "https://"}) {
    if (!absl::StartsWithIgnoreCase(url, scheme)) continue;
    const absl::string_view rest = url.substr(scheme.size());
    const size_t slash = rest.find('/');
    return slash == absl::string_view::npos ? "/" : rest.substr(slash);
  }
  return url;
}

// MHD_AccessHandlerCallback. Answers on the first call for the request: no route takes
// a body, and MHD closes the connection of a request whose body was not read.
MHD_Result HandleRequest(void* cls, MHD_Connection* connection, const char* url,
                         const char* method, const char* /*version*/,
                         const char* /*upload_data*/, size_t* /*upload_data_size*/,
                         void** /*request_state*/) {
  const auto* registry = static_cast<const prometheus::Collectable*>(cls);
  const bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
  const bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  if (!get && !head) {
    return Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, kNotAllowedBody, "text/plain");
  }
  // MHD sends no body for HEAD, only the headers (Content-Length included).
  const absl::string_view path = RequestPath(url);
  if (path == "/metrics") {
    return Reply(connection, MHD_HTTP_OK,
                 prometheus::TextSerializer().Serialize(registry->Collect()),
                 kMetricsContentType);
  }
  if (path == "/") return Reply(connection, MHD_HTTP_OK, kIndexBody, "text/plain");
  return Reply(connection, MHD_HTTP_NOT_FOUND, kNotFoundBody, "text/plain");
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Collectable> registry) {
  absl::StatusOr<std::unique_ptr<Listener>> bound = Listener::Bind(listen, "--metrics-listen");
  if (!bound.ok()) {
    // Listener::Bind's message, restated as the metrics endpoint's.
    std::string detail(bound.status().message());
    const std::string prefixes[] = {absl::StrCat("cannot listen on ", listen, ": "),
                                    "--metrics-listen: "};
    for (const std::string& prefix : prefixes) {
      if (absl::StartsWith(detail, prefix)) {
        detail.erase(0, prefix.size());
        break;
      }
    }
    const std::string hint = "(set --metrics-listen)";
    if (size_t at = detail.find(hint); at != std::string::npos) {
      detail.replace(at, hint.size(), "(set --metrics-listen, \"\" turns it off)");
    }
    return absl::Status(bound.status().code(),
                        absl::StrCat("cannot serve metrics on ", listen, ": ", detail));
  }
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->registry_ = std::move(registry);
  server->port_ = (*bound)->port();
  for (int fd : (*bound)->listen_fds()) {
    // The Listener closes its descriptors when it goes; the daemon gets its own.
    const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen,
                                                 ": dup: ", std::strerror(errno)));
    }
    // clang-format off: one option and its value a line
    MHD_Daemon* daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, nullptr, nullptr,
        &HandleRequest, server->registry_.get(), MHD_OPTION_EXTERNAL_LOGGER, &LogFromMhd,
        nullptr,  // first, or MHD complains
        MHD_OPTION_LISTEN_SOCKET, own, MHD_OPTION_THREAD_STACK_SIZE, kThreadStackBytes,
        MHD_OPTION_CONNECTION_LIMIT, kMaxConnections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        kMaxConnectionsPerAddress, MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds,
        // 1: an HTTP/1.1 request without Host is answered 400 (RFC 9112 section 3.2), not
        // served as with 0, the default (metrics_http.h lists what else it refuses).
        MHD_OPTION_STRICT_FOR_CLIENT, kStrictForClient, MHD_OPTION_END);
    // clang-format on
    if (daemon == nullptr) {
      close(own);
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on ", listen,
          ": the HTTP daemon (libmicrohttpd) did not start (see the log)"));
    }
    server->daemons_.push_back(daemon);
  }
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  for (MHD_Daemon* daemon : daemons_) MHD_stop_daemon(daemon);  // closes its socket
}

}  // namespace deltaserve::server::internal
