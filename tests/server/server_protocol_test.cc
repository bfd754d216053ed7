// deltaserved's standard gRPC services (health, reflection) and TLS, over real gRPC.
#include "server/server.h"

#include <cstdlib>
#include <fstream>

#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::testing::HasSubstr;

// One request message, one response message, with hand-encoded protobuf bytes (the
// health and reflection protos are not in our tree). Works for unary and streaming
// methods alike (they are the same on the wire).
TEST_F(ServerTest, HealthCheckingAndReflection) {
  StartServer();
  const std::string kServing("\x08\x01", 2);  // HealthCheckResponse{status: SERVING}
  for (const std::string& service : {std::string(), std::string("deltaserve.v1.DeltaService")}) {
    std::string resp;
    grpc::Status s =
        GenericCall(target(), "/grpc.health.v1.Health/Check", HealthRequest(service), &resp);
    ASSERT_TRUE(s.ok()) << service << ": " << s.error_message();
    EXPECT_EQ(resp, kServing) << service;
  }
  std::string resp;
  grpc::Status s = GenericCall(target(), "/grpc.health.v1.Health/Check",
                               HealthRequest("no.such.Service"), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  // ServerReflectionRequest{list_services: ""} (field 7) lists our service.
  resp.clear();
  s = GenericCall(target(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                  std::string("\x3a\x00", 2), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(resp, HasSubstr("deltaserve.v1.DeltaService"));
  EXPECT_THAT(resp, HasSubstr("grpc.health.v1.Health"));
}

// New-user trial: `curl localhost:9464/healthz` (or /, /favicon.ico, POST /metrics)
// killed deltaserved (SIGSEGV in civetweb's error page; metrics_http.h says why).
TEST_F(ServerTest, MetricsPortAnswersOtherRequestsAndTheServerLives) {
  ServerOptions o = DefaultOptions();
  o.metrics_listen = "127.0.0.1:0";
  StartServer(o);
  const int port = server_->metrics_port();
  ASSERT_GT(port, 0);
  for (const char* request :
       {"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /favicon.ico HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"}) {
    EXPECT_THAT(TcpExchange(port, request), ::testing::StartsWith("HTTP/1.1 40")) << request;
  }
  EXPECT_THAT(TcpExchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 200"));
  const std::string text = FetchMetricsHttp();
  EXPECT_THAT(text, HasSubstr("\ndeltaserve_serving 1\n"));
  // The standard process metrics come after the deltaserve_* ones.
  EXPECT_THAT(text, HasSubstr("\n# TYPE process_resident_memory_bytes gauge\n"));
  EXPECT_THAT(text, HasSubstr("\n# TYPE process_open_fds gauge\n"));
  EXPECT_THAT(Client()->ListTasks().status(), IsOk());
}

TEST_F(ServerTest, ServesOverTls) {
  const std::string cert = tmp_.File("cert.pem"), key = tmp_.File("key.pem");
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert +
      " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl could not make a certificate";
  ServerOptions o = DefaultOptions();
  o.tls_cert_path = cert;
  o.tls_key_path = key;
  StartServer(o);
  client::ClientOptions co;
  co.target = "localhost:" + std::to_string(server_->port());
  co.tls_root_cert_path = cert;
  ASSERT_OK_AND_ASSIGN(auto tls_client, client::DeltaClient::Open(co));
  ASSERT_OK_AND_ASSIGN(v1::BaseInfo base, tls_client->GetBase());
  EXPECT_EQ(base.hash(), server_->base_hash_hex());
  // A plaintext client cannot talk to it.
  EXPECT_FALSE(Client()->GetBase().ok());
}

// New-user trial: deltaserved's messages named ServerOptions fields ("ServerOptions.
// workers must be in [0, 1024]"); they now name the flag the user set, with the value.
TEST(ServerOptionsTest, ValidateNamesTheFlag) {
  using ::deltaserve::testing::StatusIs;
  ServerOptions o;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, "--base is required"));
  o.base_path = "/x";
  o.chunk_bytes = 10;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("--chunk-bytes must be in [")));
  o.chunk_bytes = 1 << 20;
  o.tls_cert_path = "c.pem";
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     "set both --tls-cert and --tls-key, or neither"));
  o.tls_key_path = "k.pem";
  o.preload = {"no-slash"};
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     "--preload: 'no-slash' is not tenant/task"));
  o.preload = {"a/b"};
  EXPECT_THAT(o.Validate(), IsOk());
  o.workers = 5000;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     "--workers must be in [0, 1024], got 5000"));
  o.workers = 0;
  o.stall_after = absl::ZeroDuration();
  EXPECT_THAT(o.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--stall-seconds must be > 0, got 0"));
  o.stall_after = absl::Seconds(10);
  o.listen = "notaport";
  EXPECT_THAT(o.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--listen: no port (want host:port, [v6]:port, unix:PATH), got 'notaport'"));
  o.listen = "127.0.0.1:0";
  o.metrics_listen = "9464";
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("--metrics-listen: no port")));
  o.metrics_listen = "[::1]:9464";  // IPv6 is served (metrics_http.h)
  EXPECT_THAT(o.Validate(), IsOk());
  o.metrics_listen = "";  // off
  EXPECT_THAT(o.Validate(), IsOk());
}

// New-user trial: deltaserved started with deploy/secrets.example/tenants.json copied as
// is and said nothing: its tokens, published in the repository, opened every tenant.
// The owners of such tokens are named (the server logs them as a warning at start).
TEST(AuthConfigTest, PlaceholderTokensOfTheExampleConfigAreFound) {
  ASSERT_OK_AND_ASSIGN(AuthConfig example,
                       LoadAuthConfig(std::string(DELTASERVE_SOURCE_DIR) +
                                      "/deploy/secrets.example/tenants.json"));
  EXPECT_THAT(example.PlaceholderTokenOwners(),
              ::testing::ElementsAre("tenant 'acme'", "tenant 'globex'", "admin_tokens"));
  ASSERT_OK_AND_ASSIGN(AuthConfig mixed,
                       ParseAuthConfig(R"({"tenants":[{"name":"acme","tokens":["s3cret"]},
                                       {"name":"globex","tokens":["x","CHANGE-ME-g"]}],
                                       "admin_tokens":["adm"]})",
                                       ""));
  EXPECT_THAT(mixed.PlaceholderTokenOwners(), ::testing::ElementsAre("tenant 'globex'"));
}

TEST(AuthConfigTest, ParsesTokensFilesAndRejectsBadConfigs) {
  deltaserve::testing::ScopedTempDir tmp;
  {
    std::ofstream(tmp.File("acme.token")) << "  tok-file-acme\n";
    std::ofstream(tmp.File("tokens")) << "# comment\nglobex:tok-g2\n@admin:tok-adm2\n";
  }
  ASSERT_OK_AND_ASSIGN(
      AuthConfig c,
      ParseAuthConfig(R"({"tenants":[{"name":"acme","tokens":["a1",{"token_file":"acme.token"}],
                          "quota_bytes":100},{"name":"globex","tokens":[]}],
                          "admin_tokens":["adm"],"tokens_files":["tokens"]})",
                      tmp.path().string()));
  ASSERT_EQ(c.tenants.size(), 2u);
  EXPECT_THAT(c.tenants[0].tokens, ::testing::ElementsAre("a1", "tok-file-acme"));
  EXPECT_EQ(c.tenants[0].quota_bytes, 100u);
  EXPECT_THAT(c.tenants[1].tokens, ::testing::ElementsAre("tok-g2"));
  EXPECT_THAT(c.admin_tokens, ::testing::ElementsAre("adm", "tok-adm2"));

  using ::deltaserve::testing::StatusIs;
  EXPECT_THAT(ParseAuthConfig("{", ""), StatusIs(absl::StatusCode::kInvalidArgument));
  // Found by tests/fuzz/tenants_config_fuzz: a number that overflows a double made
  // nlohmann throw out_of_range, which escaped and aborted the daemon.
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a","quota_bytes":10E737418240}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("number overflow")));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a","tokens":["x"]},
                                            {"name":"b","tokens":["x"]}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a/b","tokens":["x"]}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a"}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tokens")));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a","tokens":[{"token_file":"nope"}]}]})",
                              tmp.path().string()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a","tokens":["x"],"quota_bytes":-1}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quota")));
  EXPECT_THAT(LoadAuthConfig(tmp.File("missing.json")), StatusIs(absl::StatusCode::kNotFound));
}

TEST(AuthConfigTest, UnknownKeysEmptyConfigsAndJsonErrorsAreNamed) {
  using ::deltaserve::testing::StatusIs;
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[{"name":"a","tokens":["x"],"quota":5}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tenant 'a': unknown key \"quota\" (allowed: name, tokens, "
                                 "quota_bytes)")));
  EXPECT_THAT(ParseAuthConfig(R"({"tenant":[{"name":"a","tokens":["x"]}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("top level: unknown key \"tenant\" (allowed: tenants, "
                                 "admin_tokens, tokens_files)")));
  EXPECT_THAT(ParseAuthConfig(R"({"admin_token":["x"]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"admin_token\"")));
  EXPECT_THAT(ParseAuthConfig(R"({"tenants":[]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no tenants and no admin_tokens")));
  EXPECT_THAT(ParseAuthConfig("{}", ""), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("no tenants and no admin_tokens")));
  EXPECT_THAT(ParseAuthConfig(R"({"admin_tokens":["x"]})", ""), IsOk());
  // Line 3, column 3: the stray "x".
  EXPECT_THAT(ParseAuthConfig("{\n  \"tenants\": [],\n  x\n}", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("malformed JSON at line 3, column 3")));
}

}  // namespace
}  // namespace deltaserve::server::testing
