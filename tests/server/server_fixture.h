// Shared set-up for the deltaserved integration tests: small synthetic models written as
// safetensors in a scratch directory, containers made with codec::CompressModel, a real
// Server started in-process on port 0, and clients talking to it over real gRPC.
#ifndef DELTASERVE_TESTS_SERVER_SERVER_FIXTURE_H_
#define DELTASERVE_TESTS_SERVER_SERVER_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "codec/delta_codec.h"
#include "codec/safetensors.h"
#include "deltaserve/v1/delta_service.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::server::testing {

// Shapes of the synthetic model: a few 2-D matrices (DCT coded), a 1-D bias (raw) and
// an embedding, F16 and F32 mixed. `scale` multiplies the model so that tests can make
// bigger ones (rows scale).
struct SyntheticModel {
  int layers = 3;
  int hidden = 128;
};

// Connects to 127.0.0.1:port ([::1]:port if `ipv6`), sends `request` (if any), reads
// until the peer closes; "" if the connection is refused. (The agent-check port answers
// one line this way.)
std::string TcpExchange(int port, const std::string& request = "", bool ipv6 = false);

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Writes the base (seed 1) once per test.
  const std::string& base_path() const { return base_path_; }
  // Writes a finetuned model (base + noise drawn from `seed`; with delta_rank > 0, each
  // 2-D tensor's delta is instead rank delta_rank plus a little noise) and compresses it
  // against the base into a container with `options`; returns the container path.
  std::string MakeContainer(const std::string& name, uint32_t seed,
                            const codec::CompressOptions& options = {}, int delta_rank = 0);
  // Container bytes of MakeContainer(name, seed).
  std::vector<uint8_t> ContainerBytes(const std::string& name, uint32_t seed);
  // Offline decode of a container (codec::DecompressModel) into a safetensors file;
  // returns its path.
  std::string OfflineDecode(const std::string& container_path);

  // Options for a server on port 0 with its DB under the scratch dir.
  ServerOptions DefaultOptions() const;
  // Starts (or restarts) the server.
  void StartServer(const ServerOptions& options);
  void StartServer() { StartServer(DefaultOptions()); }
  void StopServer();
  std::string target() const;

  std::unique_ptr<client::DeltaClient> Client(const std::string& token = "",
                                              const std::string& tenant = "");
  std::unique_ptr<v1::DeltaService::Stub> RawStub();
  // A stub whose HTTP/2 transport buffers at most 16 KiB per stream (no BDP probing):
  // a reader that stops reading holds the server's writes almost at once.
  std::unique_ptr<v1::DeltaService::Stub> SmallWindowStub();

  // Value of the first sample line of the exposition that starts with `prefix`
  // (e.g. "deltaserve_streams_in_flight "), or -1 if absent.
  static double MetricValue(const std::string& text, const std::string& prefix);
  // GET /metrics from the exposer over HTTP (this server's, or the one on `port`).
  std::string FetchMetricsHttp() const { return FetchMetricsHttp(server_->metrics_port()); }
  static std::string FetchMetricsHttp(int port);

  static std::string ReadFileBytes(const std::string& path);
  static absl::StatusCode Code(const grpc::Status& s) {
    return static_cast<absl::StatusCode>(s.error_code());
  }
  // Waits (up to 30 s: a gauge is published by the housekeeping thread once a second,
  // late on a loaded machine) until the sample line starting with `prefix` reads
  // `value`; false if it never did.
  bool WaitForMetric(const std::string& prefix, double value) const;
  // Waits (up to 30 s) until deltaserve_streams_in_flight is 0; returns the metrics text.
  std::string WaitForStreamsDone() const;

  // One unary call of `method` ("/pkg.Service/Method") with serialized `request` bytes
  // (for services without generated stubs here, e.g. grpc.health.v1.Health).
  static grpc::Status GenericCall(const std::string& target, const std::string& method,
                                  const std::string& request, std::string* response);
  // Serialized grpc.health.v1.HealthCheckRequest{service}.
  static std::string HealthRequest(const std::string& service);

  deltaserve::testing::ScopedTempDir tmp_;
  SyntheticModel shape_;
  std::string base_path_;
  std::unique_ptr<Server> server_;
};

}  // namespace deltaserve::server::testing

#endif  // DELTASERVE_TESTS_SERVER_SERVER_FIXTURE_H_
