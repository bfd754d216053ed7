// The metrics endpoint (server/internal/metrics_http.h). New-user trial: with
// prometheus-cpp's civetweb exposer, `curl host:9464/healthz` (or /, /favicon.ico,
// POST /metrics) killed deltaserved with SIGSEGV: civetweb's 100 KiB worker stacks
// overflowed in glibc's printf once libquadmath (linked through OpenBLAS, as in this
// test binary) had registered its printf hooks.
#include "server/internal/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Exchange(int port, const std::string& request, bool v6 = false) {
  return server::testing::TcpExchange(port, request, v6);
}

// A connection to 127.0.0.1:port that sends nothing yet; -1 if refused.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string Get(int port, const std::string& path, bool v6 = false) {
  return Exchange(port, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                  v6);
}

class MetricsHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter().Name("test_scrapes_total").Help("h").Register(*registry_).Add({}).Increment(7);
  }
  std::shared_ptr<prometheus::Registry> registry_;
};

TEST_F(MetricsHttpTest, ServesTheRegistryInTheTextFormat) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  ASSERT_GT((*http)->port(), 0);
  const std::string resp = Get((*http)->port(), "/metrics");
  EXPECT_THAT(resp, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(resp, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  EXPECT_THAT(resp, HasSubstr("\n# TYPE test_scrapes_total counter\ntest_scrapes_total 7\n"));
  // HEAD: the same headers (Content-Length of the GET body), no body.
  const std::string head = Exchange(
      (*http)->port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string body = resp.substr(resp.find("\r\n\r\n") + 4);
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(head, HasSubstr(absl::StrCat("Content-Length: ", body.size(), "\r\n")));
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "");
}

TEST_F(MetricsHttpTest, AnswersEveryOtherRequestWithAnErrorAndKeepsServing) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  struct Case {
    std::string request;
    std::string status_line;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200"},
      {"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404"},
      {"GET /favicon.ico HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404"},
      {"GET /metrics/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404"},
      {"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
       "HTTP/1.1 405"},
      {"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 405"},
      // Malformed (new-user trial: closed without an answer): 400, as RFC 9112 asks.
      {"GET /metrics\r\n\r\n", "HTTP/1.1 400"},
      {"GET /metrics HTTP/1.1 extra\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 400"},
      {"GET /metrics FOO/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 400"},
      {"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon\r\nConnection: close\r\n\r\n", "HTTP/1.1 400"},
      {"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 400"},  // no Host
      {"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "HTTP/1.1 400"},
      {"GET /metrics HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 505"},
      // HTTP/1.0 needs no Host.
      {"GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 200"},
      // A request line without a space: libmicrohttpd 0.9.75 closes the connection
      // without an answer, whatever it is configured to do (metrics_http.h).
      {"\x01\x02garbage\r\n\r\n", ""},
      {"GARBAGE\r\n\r\n", ""},
      {"GET  /metrics  HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ""},  // 2 spaces
      {absl::StrCat("GET /", std::string(100000, 'a'), " HTTP/1.1\r\nHost: x\r\n\r\n"),
       "HTTP/1.1 414"},
  };
  for (const Case& c : cases) {
    const std::string resp = Exchange(port, c.request);
    EXPECT_THAT(resp, StartsWith(c.status_line)) << c.request.substr(0, 40);
    EXPECT_THAT(Get(port, "/metrics"), HasSubstr("\ntest_scrapes_total 7\n"))
        << "after " << c.request.substr(0, 40);
  }
  EXPECT_THAT(Exchange(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
              HasSubstr("Allow: GET, HEAD\r\n"));
}

// New-user trial: `GET http://host:port/metrics HTTP/1.1` (absolute-form, RFC 9112
// section 3.2.2, what a client sends through a forward proxy) got 404.
TEST_F(MetricsHttpTest, ServesTheAbsoluteFormOfTheTarget) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  const std::string authority = absl::StrCat("127.0.0.1:", port);
  for (const std::string& target :
       std::vector<std::string>{absl::StrCat("http://", authority, "/metrics"),
                                absl::StrCat("HTTP://", authority, "/metrics"),
                                absl::StrCat("http://", authority, "/metrics?name[]=x"),
                                "http://other.host/metrics", "https://x/metrics"}) {
    const std::string resp = Get(port, target);
    EXPECT_THAT(resp, StartsWith("HTTP/1.1 200")) << target;
    EXPECT_THAT(resp, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        << target;
    EXPECT_THAT(resp, HasSubstr("\ntest_scrapes_total 7\n")) << target;
  }
  EXPECT_THAT(Get(port, absl::StrCat("http://", authority)),
              AllOf(StartsWith("HTTP/1.1 200"),
                    HasSubstr("deltaserved: Prometheus metrics are at /metrics\n")));
  EXPECT_THAT(Get(port, absl::StrCat("http://", authority, "/")), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(Get(port, absl::StrCat("http://", authority, "/healthz")),
              StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Get(port, "ftp://x/metrics"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Get(port, "http:/metrics"), StartsWith("HTTP/1.1 404"));
}

// New-user trial: 64 clients trickling header bytes held every connection and kept
// scrapes out. One client address may hold at most kMaxConnectionsPerAddress.
TEST_F(MetricsHttpTest, OneAddressHoldsAtMostItsShareOfConnections) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  std::vector<int> held;
  for (unsigned i = 0; i < MetricsHttpServer::kMaxConnectionsPerAddress; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    (void)!write(fd, "GET /metrics HTTP/1.1\r\n", 24);  // a request still arriving
    held.push_back(fd);
  }
  EXPECT_EQ(Get(port, "/metrics"), "");  // one more from the same address: closed
  for (int fd : held) close(fd);
  std::string resp;
  // Until the server has seen the closes (30 s: its thread may run late on a loaded
  // machine; 2 s was the limit).
  for (int i = 0; i < 3000 && resp.empty(); ++i) {
    resp = Get(port, "/metrics");
    if (resp.empty()) usleep(10000);
  }
  EXPECT_THAT(resp, HasSubstr("\ntest_scrapes_total 7\n"));
}

TEST_F(MetricsHttpTest, ServesAnIpv6Address) {
  int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool has_v6 =
      probe >= 0 && bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (probe >= 0) close(probe);
  if (!has_v6) GTEST_SKIP() << "no IPv6 loopback on this machine";
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("[::1]:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  EXPECT_THAT(Get((*http)->port(), "/metrics", /*v6=*/true),
              HasSubstr("\ntest_scrapes_total 7\n"));
}

TEST_F(MetricsHttpTest, BusyPortIsUnavailableNamingTheFlag) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> first =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string busy = absl::StrCat("127.0.0.1:", (*first)->port());
  EXPECT_THAT(MetricsHttpServer::Start(busy, registry_).status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       absl::StrCat("cannot serve metrics on ", busy,
                                    ": address already in use? (set --metrics-listen, \"\" "
                                    "turns it off) [Address already in use]")));
  // New-user trial: a host that does not resolve said only "Name or service not known".
  EXPECT_THAT(MetricsHttpServer::Start("no-such-host.invalid:1", registry_).status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       StartsWith("cannot serve metrics on no-such-host.invalid:1: host not "
                                  "found? (set --metrics-listen, \"\" turns it off) [")));
  EXPECT_THAT(MetricsHttpServer::Start("9464", registry_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot serve metrics on 9464: no port")));
}

TEST_F(MetricsHttpTest, StopsWithAnIdleConnectionOpen) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start("127.0.0.1:0", registry_);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  const int fd = Connect(port);
  ASSERT_GE(fd, 0);
  http->reset();  // must not wait for the idle client (kIdleTimeoutSeconds)
  char c;
  EXPECT_LE(read(fd, &c, 1), 0);  // closed (or reset) by the server
  close(fd);
  EXPECT_EQ(Get(port, "/metrics"), "");  // nothing listens any more
}

}  // namespace
}  // namespace deltaserve::server::internal
