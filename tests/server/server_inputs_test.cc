// deltaserved on the inputs of issue 11 that reach the daemon: a tied checkpoint (pull ==
// offline decompress), casts that would overflow the output dtype (saturated, counted in
// /metrics), and request text that is not UTF-8 (INVALID_ARGUMENT naming the field, not
// protobuf's UNIMPLEMENTED).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/delta_codec.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::Gaussian;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::MakeTensor;
using ::deltaserve::testing::Write;
using ::testing::HasSubstr;

// Opens a server stream with `open(ctx)`, reads it to its end; its status.
template <typename Response, typename Open>
grpc::Status FinishStream(Open open) {
  grpc::ClientContext ctx;
  auto reader = open(&ctx);
  Response msg;
  while (reader->Read(&msg)) {
  }
  return reader->Finish();
}

class ServerInputsTest : public ServerTest {
 protected:
  // Writes `base` as the server's base and `ft` as a finetune, compresses it (default
  // options) and returns the container path.
  std::string Compress(const std::vector<codec::OwnedTensor>& base,
                       const std::vector<codec::OwnedTensor>& ft,
                       const codec::CompressOptions& options = {}) {
    base_path_ = tmp_.File("inputs_base.safetensors");
    const std::string ft_path = tmp_.File("inputs_ft.safetensors");
    const std::string out = tmp_.File("inputs.dds");
    EXPECT_THAT(Write(base_path_, base), IsOk());
    EXPECT_THAT(Write(ft_path, ft), IsOk());
    auto b = codec::ModelReader::Open(base_path_);
    auto f = codec::ModelReader::Open(ft_path);
    EXPECT_TRUE(b.ok() && f.ok());
    EXPECT_THAT(codec::CompressModel(**b, **f, options, out).status(), IsOk());
    return out;
  }
};

// Reproduction 3 through the daemon: lm_head.weight coded against the base's
// model.embed_tokens.weight; StreamWeights merges it against that tensor, bit for bit
// what `deltactl decompress` writes.
TEST_F(ServerInputsTest, TiedHeadPullEqualsOfflineDecode) {
  const std::vector<float> e = Gaussian(256 * 64, 1, 51);
  std::vector<float> head = e;
  const std::vector<float> d = Gaussian(static_cast<int64_t>(e.size()), 0.01f, 52);
  for (size_t i = 0; i < head.size(); ++i) head[i] += d[i];
  const std::string path =
      Compress({MakeTensor("model.embed_tokens.weight", codec::DType::kF16, {256, 64}, e)},
               {MakeTensor("lm_head.weight", codec::DType::kF16, {256, 64}, head),
                MakeTensor("model.embed_tokens.weight", codec::DType::kF16, {256, 64}, e)});
  StartServer();
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->PushDeltaFile("tied", path));
  EXPECT_EQ(info.metadata().at(codec::kBaseAliasKey),
            R"({"lm_head.weight":"model.embed_tokens.weight"})");
  const std::string pulled = tmp_.File("tied.pulled.safetensors");
  ASSERT_THAT(client->PullWeights("tied", pulled).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(path)));
  // And the client's local decode of the container it fetches (StreamDelta).
  ASSERT_OK_AND_ASSIGN(client::PulledModel m, client->PullWeightsToMemory("tied"));
  ASSERT_EQ(m.tensors.size(), 2u);
  EXPECT_EQ(m.tensors[0].info.name, "lm_head.weight");
}

// Reproductions 6 (daemon counter) and the raw-cast sibling: F32 values of 1e6 stored
// raw, and 7e4 in an unchanged tensor, served as F16 saturate to 65504 (never Inf),
// counted in deltaserve_merge_saturated_values_total{dtype="F16"}; the pull equals
// `deltactl decompress --dtype f16`.
TEST_F(ServerInputsTest, CastsToF16SaturateAndAreCounted) {
  std::vector<float> a(16, 1.0f), a_ft(16, 1.0f), b(8, 0.5f);
  a_ft[0] = a_ft[3] = a_ft[5] = a_ft[9] = 1e6f;
  a_ft[12] = -1e6f;
  b[1] = 7e4f;
  b[6] = -7e4f;
  codec::CompressOptions options;
  options.max_relative_delta = 0;  // the change of 'a' is far above its norm, on purpose
  const std::string path = Compress(
      {MakeTensor("a", codec::DType::kF32, {16}, a), MakeTensor("b", codec::DType::kF32, {8}, b)},
      {MakeTensor("a", codec::DType::kF32, {16}, a_ft),
       MakeTensor("b", codec::DType::kF32, {8}, b)},
      options);
  ServerOptions o = DefaultOptions();
  o.metrics_listen = "127.0.0.1:0";
  StartServer(o);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("big", path).status(), IsOk());
  client::PullOptions f16;
  f16.out_dtype = codec::DType::kF16;
  ASSERT_OK_AND_ASSIGN(client::PulledModel m, client->PullWeightsToMemory("big", f16));
  ASSERT_EQ(m.tensors.size(), 2u);
  // The pull reports them too (5 in 'a', 2 in 'b'), decoded now or from the cache.
  EXPECT_EQ(m.stats.saturated_values, 7u);
  EXPECT_EQ(m.stats.saturated_tensors, 2u);
  EXPECT_EQ(m.stats.first_saturated_tensor, "a");
  std::vector<float> got(16);
  codec::ToFloat32(m.tensors[0].data.data(), codec::DType::kF16, 16, got.data());
  EXPECT_EQ(got[0], 65504.0f);
  EXPECT_EQ(got[12], -65504.0f);
  EXPECT_EQ(got[1], 1.0f);
  codec::ToFloat32(m.tensors[1].data.data(), codec::DType::kF16, 8, got.data());
  EXPECT_EQ(got[1], 65504.0f);
  EXPECT_EQ(got[6], -65504.0f);
  // BF16 holds 1e6: nothing saturates.
  client::PullOptions bf16;
  bf16.out_dtype = codec::DType::kBF16;
  ASSERT_OK_AND_ASSIGN(client::PulledModel m_bf16, client->PullWeightsToMemory("big", bf16));
  EXPECT_EQ(m_bf16.stats.saturated_values, 0u);
  EXPECT_EQ(m_bf16.stats.saturated_tensors, 0u);
  EXPECT_EQ(m_bf16.stats.first_saturated_tensor, "");
  WaitForStreamsDone();
  const std::string text = FetchMetricsHttp();
  EXPECT_EQ(MetricValue(text, "deltaserve_merge_saturated_values_total{dtype=\"F16\"} "), 7)
      << text;
  // BF16's series is there from the start, at 0 (it appeared only at the first
  // saturation once: -1 here).
  EXPECT_EQ(MetricValue(text, "deltaserve_merge_saturated_values_total{dtype=\"BF16\"} "), 0);

  // Offline: the same bytes, and the same count.
  const std::string pulled = tmp_.File("big.f16.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats cached, client->PullWeights("big", pulled, f16));
  EXPECT_EQ(cached.saturated_values, 7u);  // the cached tensors keep their count
  EXPECT_EQ(cached.saturated_tensors, 2u);
  // Two streams: each range counts its own tensors.
  client::PullOptions two = f16;
  two.streams = 2;
  ASSERT_OK_AND_ASSIGN(client::PulledModel m2, client->PullWeightsToMemory("big", two));
  EXPECT_EQ(m2.stats.saturated_values, 7u);
  EXPECT_EQ(m2.stats.saturated_tensors, 2u);
  EXPECT_EQ(m2.stats.first_saturated_tensor, "a");
  std::string bytes = ReadFileBytes(path);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader,
                       codec::ContainerReader::Parse(absl::MakeConstSpan(
                           reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  ASSERT_OK_AND_ASSIGN(auto base, codec::ModelReader::Open(base_path_));
  codec::DecompressOptions d;
  d.out_dtype = codec::DType::kF16;
  codec::DecompressStats stats;
  const std::string offline = tmp_.File("big.offline.safetensors");
  ASSERT_THAT(codec::DecompressModel(*base, reader, d, offline, nullptr, &stats), IsOk());
  EXPECT_EQ(stats.saturated_values, 7);
  ASSERT_EQ(stats.saturated_tensors.size(), 2u);
  EXPECT_EQ(stats.saturated_tensors[0], std::make_pair(std::string("a"), int64_t{5}));
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(offline));
}

// Reproduction 8, raw requests: a request text field holding byte 0xff got UNIMPLEMENTED
// with an empty message from protobuf's parser. The fields are `bytes` on the wire now;
// the server answers INVALID_ARGUMENT naming the method, the field and the bytes.
TEST_F(ServerInputsTest, NonUtf8RequestFieldsAreInvalidArgumentNamingTheField) {
  StartServer();
  auto stub = RawStub();
  auto expect_invalid = [](const grpc::Status& s, const std::string& message) {
    EXPECT_EQ(Code(s), absl::StatusCode::kInvalidArgument) << s.error_message();
    EXPECT_EQ(s.error_message(), message);
  };
  {
    grpc::ClientContext ctx;
    v1::GetTaskRequest req;
    req.set_task("t\xff");
    v1::TaskInfo resp;
    expect_invalid(stub->GetTask(&ctx, req, &resp), "GetTask: task 't\\xff' is not valid UTF-8");
  }
  {
    grpc::ClientContext ctx;
    v1::ListTasksRequest req;
    req.set_tenant("\xc3(");
    v1::ListTasksResponse resp;
    expect_invalid(stub->ListTasks(&ctx, req, &resp),
                   "ListTasks: tenant '\\xc3(' is not valid UTF-8");
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteTaskRequest req;
    req.set_task("ok");
    req.set_tenant("\xed\xa0\x80");  // a UTF-16 surrogate, encoded: not UTF-8
    v1::DeleteTaskResponse resp;
    expect_invalid(stub->DeleteTask(&ctx, req, &resp),
                   "DeleteTask: tenant '\\xed\\xa0\\x80' is not valid UTF-8");
  }
  {
    v1::StreamWeightsRequest req;
    req.set_task("t");
    req.add_include("*");
    req.add_include("w\xfe*");
    expect_invalid(FinishStream<v1::StreamWeightsResponse>(
                       [&](grpc::ClientContext* c) { return stub->StreamWeights(c, req); }),
                   "StreamWeights: include[1] 'w\\xfe*' is not valid UTF-8");
    req.clear_include();
    req.set_resume_from_name("\xff");
    expect_invalid(FinishStream<v1::StreamWeightsResponse>(
                       [&](grpc::ClientContext* c) { return stub->StreamWeights(c, req); }),
                   "StreamWeights: resume_from_name '\\xff' is not valid UTF-8");
  }
  {
    v1::StreamDeltaRequest req;
    req.set_task("\xff");
    expect_invalid(FinishStream<v1::StreamDeltaResponse>(
                       [&](grpc::ClientContext* c) { return stub->StreamDelta(c, req); }),
                   "StreamDelta: task '\\xff' is not valid UTF-8");
  }
  {
    grpc::ClientContext ctx;
    v1::PutDeltaResponse resp;
    auto writer = stub->PutDelta(&ctx, &resp);
    v1::PutDeltaRequest req;
    req.mutable_metadata()->set_task("t\xff");
    req.mutable_metadata()->set_total_bytes(100);
    writer->Write(req);
    writer->WritesDone();
    expect_invalid(writer->Finish(), "PutDelta: task 't\\xff' is not valid UTF-8");
  }
  {
    grpc::ClientContext ctx;
    v1::PinTaskRequest req;
    req.set_task("\x80");
    v1::PinTaskResponse resp;
    expect_invalid(stub->PinTask(&ctx, req, &resp), "PinTask: task '\\x80' is not valid UTF-8");
  }
  // The server still answers well-formed requests on the same channel.
  grpc::ClientContext ctx;
  v1::GetTaskRequest req;
  req.set_task("missing");
  v1::TaskInfo resp;
  EXPECT_EQ(Code(stub->GetTask(&ctx, req, &resp)), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace deltaserve::server::testing
