#include "tests/server/server_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/time/clock.h"
#include "codec/container.h"
#include "codec/delta_codec.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/security/credentials.h"

namespace deltaserve::server::testing {
namespace {

// Tensors of the synthetic model, values from `rng` (base) or base + noise.
std::vector<codec::OwnedTensor> BuildModel(const SyntheticModel& m, uint32_t seed,
                                           const std::vector<codec::OwnedTensor>* base,
                                           int delta_rank = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<codec::OwnedTensor> out;
  auto add = [&](const std::string& name, codec::DType dtype, std::vector<int64_t> shape) {
    codec::OwnedTensor t;
    t.info = {name, dtype, shape};
    int64_t n = codec::NumElements(shape);
    std::vector<float> v(n);
    if (base) {
      const codec::OwnedTensor& b = (*base)[out.size()];
      codec::ToFloat32(b.data.data(), b.info.dtype, n, v.data());
      if (delta_rank > 0 && shape.size() == 2) {  // sum of rank-1 terms, then 1% noise
        std::vector<float> u(shape[0]), w(shape[1]);
        for (int k = 0; k < delta_rank; ++k) {
          for (float& x : u) x = dist(rng);
          for (float& x : w) x = dist(rng);
          for (int64_t r = 0; r < shape[0]; ++r) {
            for (int64_t c = 0; c < shape[1]; ++c) v[r * shape[1] + c] += 0.02f * u[r] * w[c];
          }
        }
        for (float& x : v) x += 0.0002f * dist(rng);
      } else {
        for (float& x : v) x += 0.02f * dist(rng);
      }
    } else {
      for (float& x : v) x = 0.1f * dist(rng);
    }
    t.data.resize(n * codec::DTypeSize(dtype));
    codec::FromFloat32(v.data(), n, dtype, t.data.data());
    out.push_back(std::move(t));
  };
  const int64_t h = m.hidden;
  add("embed.weight", codec::DType::kF16, {4 * h, h});
  for (int l = 0; l < m.layers; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attn.qkv.weight", codec::DType::kF16, {h, 3 * h});
    add(p + "mlp.up.weight", codec::DType::kF16, {h, 2 * h});
    add(p + "mlp.down.weight", codec::DType::kF32, {2 * h, h});
    add(p + "norm.bias", codec::DType::kF32, {h});
  }
  return out;
}

std::vector<codec::TensorView> Views(const std::vector<codec::OwnedTensor>& ts) {
  std::vector<codec::TensorView> v;
  for (const auto& t : ts) v.push_back(t.view());
  return v;
}

}  // namespace

void ServerTest::SetUp() {
  base_path_ = tmp_.File("base.safetensors");
  auto base = BuildModel(shape_, 1, nullptr);
  ASSERT_TRUE(codec::WriteSafetensors(base_path_, Views(base), {}).ok());
}

void ServerTest::TearDown() { StopServer(); }

std::string ServerTest::MakeContainer(const std::string& name, uint32_t seed,
                                      const codec::CompressOptions& options, int delta_rank) {
  std::string path = tmp_.File(name + ".dds");
  if (std::ifstream(path).good()) return path;
  auto base_tensors = BuildModel(shape_, 1, nullptr);
  auto ft = BuildModel(shape_, seed, &base_tensors, delta_rank);
  std::string ft_path = tmp_.File(name + ".ft.safetensors");
  EXPECT_TRUE(codec::WriteSafetensors(ft_path, Views(ft), {}).ok());
  auto base = codec::ModelReader::Open(base_path_);
  auto fin = codec::ModelReader::Open(ft_path);
  EXPECT_TRUE(base.ok() && fin.ok());
  auto stats = codec::CompressModel(**base, **fin, options, path);
  EXPECT_TRUE(stats.ok()) << stats.status();
  return path;
}

std::vector<uint8_t> ServerTest::ContainerBytes(const std::string& name, uint32_t seed) {
  std::string s = ReadFileBytes(MakeContainer(name, seed));
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string ServerTest::OfflineDecode(const std::string& container_path) {
  std::string out = container_path + ".offline.safetensors";
  std::string bytes = ReadFileBytes(container_path);
  auto container = codec::ContainerReader::Parse(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  EXPECT_TRUE(container.ok()) << container.status();
  auto base = codec::ModelReader::Open(base_path_);
  EXPECT_TRUE(base.ok());
  absl::Status s = codec::DecompressModel(**base, *container, {}, out);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

ServerOptions ServerTest::DefaultOptions() const {
  ServerOptions o;
  o.base_path = base_path_;
  o.db_path = tmp_.File("db");
  o.listen = "127.0.0.1:0";
  o.metrics_listen = "";  // no exposer: only the tests of /metrics need one
  o.workers = 2;
  o.cache_bytes = 64ull << 20;
  o.store.sync_writes = false;
  o.drain_timeout = absl::Seconds(5);
  return o;
}

void ServerTest::StartServer(const ServerOptions& options) {
  StopServer();
  auto server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(server).value();
}

void ServerTest::StopServer() {
  if (!server_) return;
  server_->Shutdown(absl::Seconds(5));
  server_->Wait();
  server_.reset();
}

std::string ServerTest::target() const {
  return "127.0.0.1:" + std::to_string(server_->port());
}

std::unique_ptr<client::DeltaClient> ServerTest::Client(const std::string& token,
                                                        const std::string& tenant) {
  client::ClientOptions o;
  o.target = target();
  o.token = token;
  o.tenant = tenant;
  auto c = client::DeltaClient::Open(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

std::unique_ptr<v1::DeltaService::Stub> ServerTest::RawStub() {
  return v1::DeltaService::NewStub(
      grpc::CreateChannel(target(), grpc::InsecureChannelCredentials()));
}

std::unique_ptr<v1::DeltaService::Stub> ServerTest::SmallWindowStub() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
  return v1::DeltaService::NewStub(
      grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(), args));
}

bool ServerTest::WaitForMetric(const std::string& prefix, double value) const {
  for (absl::Time end = absl::Now() + absl::Seconds(30); absl::Now() < end;) {
    if (MetricValue(server_->MetricsText(), prefix) == value) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

std::string ServerTest::WaitForStreamsDone() const {
  WaitForMetric("deltaserve_streams_in_flight ", 0);
  return server_->MetricsText();
}

double ServerTest::MetricValue(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size()));
  }
  return -1;
}

std::string TcpExchange(int port, const std::string& request, bool ipv6) {
  sockaddr_storage addr{};
  socklen_t len;
  if (ipv6) {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    a6->sin6_addr = in6addr_loopback;
    len = sizeof(sockaddr_in6);
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&addr);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a4->sin_addr);
    len = sizeof(sockaddr_in);
  }
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    close(fd);
    return "";
  }
  if (!request.empty()) (void)!write(fd, request.data(), request.size());
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, n);
  close(fd);
  return resp;
}

std::string ServerTest::FetchMetricsHttp(int port) {
  std::string resp = TcpExchange(port, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? resp : resp.substr(body + 4);
}

grpc::Status ServerTest::GenericCall(const std::string& target, const std::string& method,
                         const std::string& request, std::string* response) {
  grpc::GenericStub stub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  void* tag;
  bool ok;
  auto step = [&](int t) {
    cq.Next(&tag, &ok);
    EXPECT_EQ(tag, reinterpret_cast<void*>(t));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1);
  call->Write(req, reinterpret_cast<void*>(2));
  step(2);
  call->WritesDone(reinterpret_cast<void*>(3));
  step(3);
  grpc::ByteBuffer resp;
  call->Read(&resp, reinterpret_cast<void*>(4));
  if (step(4)) {
    std::vector<grpc::Slice> slices;
    if (resp.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) {
        response->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  return status;
}

// HealthCheckRequest{service = name}: field 1, length-delimited.
std::string ServerTest::HealthRequest(const std::string& service) {
  std::string r;
  if (!service.empty()) {
    r.push_back(0x0a);
    r.push_back(static_cast<char>(service.size()));
    r += service;
  }
  return r;
}

std::string ServerTest::ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace deltaserve::server::testing
