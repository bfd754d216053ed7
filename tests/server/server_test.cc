// Integration tests of deltaserved: the real Server in-process on port 0, over real gRPC.
#include "server/server.h"

#include <atomic>
#include <thread>

#include "codec/container.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

AuthConfig TwoTenants() {
  AuthConfig c;
  c.tenants.push_back({"acme", {"tok-acme"}, 0});
  c.tenants.push_back({"globex", {"tok-globex"}, 0});
  c.admin_tokens = {"tok-admin"};
  return c;
}

// Codec v2 (ecq, encoding 3) containers are stored and streamed like Delta-DCT ones.
TEST_F(ServerTest, EcqContainerPullIsBitIdenticalToOfflineDecode) {
  StartServer();
  codec::CompressOptions options;
  options.codec = codec::LossyCodec::kEcq;
  options.ecq_target = {2.0, 0.0};
  std::string container = MakeContainer("v2", 7, options);
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo pushed, client->PushDeltaFile("v2", container));
  EXPECT_EQ(pushed.name(), "v2");
  std::string pulled = tmp_.File("v2.pulled.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeights("v2", pulled));
  EXPECT_EQ(stats.tensors, 1u + 4u * shape_.layers);
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(container)));
}

// Low-rank deltas: the encoder codes them as low-rank factors + residual (ecq flag
// bit 0), and the server's merge gives the offline decoder's bytes.
TEST_F(ServerTest, EcqLowRankContainerPullIsBitIdenticalToOfflineDecode) {
  StartServer();
  codec::CompressOptions options;
  options.codec = codec::LossyCodec::kEcq;
  options.ecq_target = {1.0, 0.0};
  std::string container = MakeContainer("v2lr", 7, options, /*delta_rank=*/3);
  const std::string bytes = ReadFileBytes(container);
  ASSERT_OK_AND_ASSIGN(codec::ContainerReader reader,
                       codec::ContainerReader::Parse(absl::MakeConstSpan(
                           reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  int with_factors = 0;
  for (size_t i = 0; i < reader.num_records(); ++i) {
    ASSERT_OK_AND_ASSIGN(codec::TensorRecord r, reader.record(i));
    if (r.encoding == codec::Encoding::kEcq && (r.payload[7] & 1)) ++with_factors;
  }
  EXPECT_GT(with_factors, 0);
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo pushed, client->PushDeltaFile("v2lr", container));
  std::string pulled = tmp_.File("v2lr.pulled.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeights("v2lr", pulled));
  EXPECT_EQ(stats.tensors, 1u + 4u * shape_.layers);
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(container)));
}

TEST_F(ServerTest, PushPullRoundTripIsBitIdenticalToOfflineDecode) {
  StartServer();
  std::string container = MakeContainer("t1", 7);
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo pushed, client->PushDeltaFile("t1", container));
  EXPECT_EQ(pushed.tenant(), "default");
  EXPECT_EQ(pushed.name(), "t1");
  EXPECT_EQ(pushed.container_bytes(), ReadFileBytes(container).size());
  EXPECT_EQ(pushed.base_hash(), server_->base_hash_hex());

  std::string pulled = tmp_.File("t1.pulled.safetensors");
  ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeights("t1", pulled));
  EXPECT_EQ(stats.tensors, 1u + 4u * shape_.layers);
  EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(container)));

  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->GetTask("t1", true));
  EXPECT_THAT(info.tensors(), SizeIs(static_cast<int>(stats.tensors)));
  EXPECT_EQ(info.tensors(0).name(), "embed.weight");
  EXPECT_EQ(info.tensors(0).encoding(), "dct");
  EXPECT_GT(info.bits_per_weight(), 0.5);
  EXPECT_LT(info.bits_per_weight(), 8.0);
  EXPECT_GT(info.created_unix(), 1700000000);

  ASSERT_OK_AND_ASSIGN(v1::BaseInfo base, client->GetBase());
  EXPECT_EQ(base.hash(), server_->base_hash_hex());
  EXPECT_EQ(base.num_tensors(), 1u + 4u * shape_.layers);
  EXPECT_THAT(base.dtypes(), ElementsAre(v1::DTYPE_F32, v1::DTYPE_F16));

  // StreamDelta returns the container as uploaded.
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> delta, client->FetchDelta("t1"));
  std::string want = ReadFileBytes(container);
  EXPECT_EQ(std::string(delta.begin(), delta.end()), want);

  // Cached second pull: same bytes.
  std::string pulled2 = tmp_.File("t1.pulled2.safetensors");
  ASSERT_THAT(client->PullWeights("t1", pulled2).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(pulled2), ReadFileBytes(pulled));
}

TEST_F(ServerTest, FilterResumeAndOutputDtype) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("t", MakeContainer("t", 3)).status(), IsOk());
  client::PullOptions only_mlp;
  only_mlp.include = {"*.mlp.*"};
  ASSERT_OK_AND_ASSIGN(client::PulledModel m, client->PullWeightsToMemory("t", only_mlp));
  ASSERT_THAT(m.tensors, SizeIs(2 * shape_.layers));
  EXPECT_EQ(m.tensors[0].info.name, "layers.0.mlp.down.weight");

  client::PullOptions regex;
  regex.include_regex = R"(layers\.[12]\.norm\.bias)";
  regex.out_dtype = codec::DType::kBF16;
  ASSERT_OK_AND_ASSIGN(m, client->PullWeightsToMemory("t", regex));
  ASSERT_THAT(m.tensors, SizeIs(2));
  EXPECT_EQ(m.tensors[1].info.name, "layers.2.norm.bias");
  EXPECT_EQ(m.tensors[1].info.dtype, codec::DType::kBF16);

  client::PullOptions resume;
  resume.resume_from = "layers.2.attn.qkv.weight";
  ASSERT_OK_AND_ASSIGN(m, client->PullWeightsToMemory("t", resume));
  ASSERT_THAT(m.tensors, SizeIs(4));

  client::PullOptions bad;
  bad.include_regex = "(";
  EXPECT_THAT(client->PullWeightsToMemory("t", bad).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  bad = {};
  bad.resume_from = "nope";
  EXPECT_THAT(client->PullWeightsToMemory("t", bad).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServerTest, TwoTenantsCannotSeeEachOther) {
  ServerOptions o = DefaultOptions();
  o.auth = TwoTenants();
  StartServer(o);
  auto acme = Client("tok-acme");
  auto globex = Client("tok-globex");
  ASSERT_THAT(acme->PushDeltaFile("secret", MakeContainer("secret", 5)).status(), IsOk());

  EXPECT_THAT(globex->GetTask("secret").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(globex->PullWeightsToMemory("secret").status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(globex->FetchDelta("secret").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(globex->DeleteTask("secret").status(), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, globex->ListTasks());
  EXPECT_THAT(list.tasks(), SizeIs(0));
  // Naming the other tenant explicitly is NOT_FOUND too (not PERMISSION_DENIED).
  auto globex_as_acme = Client("tok-globex", "acme");
  EXPECT_THAT(globex_as_acme->GetTask("secret").status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(globex_as_acme->ListTasks().status(), StatusIs(absl::StatusCode::kNotFound));

  // The admin sees every tenant; acme sees its own.
  auto admin = Client("tok-admin");
  ASSERT_OK_AND_ASSIGN(list, admin->ListTasks(std::string()));
  ASSERT_THAT(list.tasks(), SizeIs(1));
  EXPECT_EQ(list.tasks(0).tenant(), "acme");
  auto admin_acme = Client("tok-admin", "acme");
  EXPECT_THAT(admin_acme->GetTask("secret").status(), IsOk());
  ASSERT_OK_AND_ASSIGN(list, acme->ListTasks());
  EXPECT_THAT(list.tasks(), SizeIs(1));

  // No or unknown token.
  EXPECT_THAT(Client("")->ListTasks().status(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(Client("tok-wrong")->GetBase().status(),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(ServerTest, SixteenConcurrentPullsOfDifferentTasks) {
  StartServer();
  auto client = Client();
  constexpr int kTasks = 16;
  std::vector<std::string> offline(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    std::string name = "task" + std::to_string(i);
    std::string path = MakeContainer(name, 100 + i);
    ASSERT_THAT(client->PushDeltaFile(name, path).status(), IsOk());
    offline[i] = ReadFileBytes(OfflineDecode(path));
  }
  std::vector<std::string> pulled(kTasks);
  std::vector<absl::Status> status(kTasks);
  std::vector<std::thread> threads;
  for (int i = 0; i < kTasks; ++i) {
    threads.emplace_back([&, i] {
      std::string out = tmp_.File("pull" + std::to_string(i) + ".safetensors");
      status[i] = client->PullWeights("task" + std::to_string(i), out).status();
      pulled[i] = ReadFileBytes(out);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kTasks; ++i) {
    EXPECT_THAT(status[i], IsOk()) << i;
    EXPECT_EQ(pulled[i], offline[i]) << "task" << i;
  }
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_streams_in_flight "), 0);
}

TEST_F(ServerTest, ConcurrentPullsOfOneTaskDecodeEachTensorOnce) {
  StartServer();
  auto client = Client();
  std::string path = MakeContainer("same", 77);
  ASSERT_THAT(client->PushDeltaFile("same", path).status(), IsOk());
  const std::string offline = ReadFileBytes(OfflineDecode(path));
  constexpr int kPulls = 6;
  std::vector<std::string> pulled(kPulls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kPulls; ++i) {
    threads.emplace_back([&, i] {
      std::string out = tmp_.File("same" + std::to_string(i) + ".safetensors");
      if (client->PullWeights("same", out).ok()) pulled[i] = ReadFileBytes(out);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kPulls; ++i) EXPECT_EQ(pulled[i], offline) << i;
  std::string text = server_->MetricsText();
  const double tensors = 1 + 4 * shape_.layers;
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_misses_total "), tensors);
  EXPECT_EQ(MetricValue(text, "deltaserve_cache_hits_total "), (kPulls - 1) * tensors);
}

TEST_F(ServerTest, RestartServesEveryCommittedTask) {
  StartServer();
  std::vector<std::string> offline;
  {
    auto client = Client();
    for (int i = 0; i < 3; ++i) {
      std::string name = "r" + std::to_string(i);
      std::string path = MakeContainer(name, 40 + i);
      ASSERT_THAT(client->PushDeltaFile(name, path).status(), IsOk());
      offline.push_back(ReadFileBytes(OfflineDecode(path)));
    }
    ASSERT_THAT(client->DeleteTask("r1").status(), IsOk());
  }
  StopServer();
  StartServer();
  auto client = Client();
  ASSERT_OK_AND_ASSIGN(v1::ListTasksResponse list, client->ListTasks());
  ASSERT_THAT(list.tasks(), SizeIs(2));
  for (int i : {0, 2}) {
    std::string out = tmp_.File("after" + std::to_string(i) + ".safetensors");
    ASSERT_THAT(client->PullWeights("r" + std::to_string(i), out).status(), IsOk());
    EXPECT_EQ(ReadFileBytes(out), offline[i]);
  }
  EXPECT_THAT(client->GetTask("r1").status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServerTest, PinPreloadAndOverwrite) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("p", MakeContainer("p", 9)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(uint64_t pinned, client->PinTask("p"));
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->GetTask("p", false));
  EXPECT_EQ(pinned, info.merged_bytes());
  EXPECT_TRUE(info.pinned());
  std::string text = server_->MetricsText();
  double misses = MetricValue(text, "deltaserve_cache_misses_total ");
  ASSERT_THAT(client->PullWeightsToMemory("p").status(), IsOk());
  // Everything came from the pinned cache.
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_cache_misses_total "), misses);
  EXPECT_THAT(client->UnpinTask("p"), IsOk());
  EXPECT_THAT(client->UnpinTask("p"), StatusIs(absl::StatusCode::kNotFound));

  // Overwrite: the old merged tensors must not be served for the new task.
  std::string other = MakeContainer("p2", 10);
  EXPECT_THAT(client->PushDeltaFile("p", other).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  client::PushOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(client->PushDeltaFile("p", other, overwrite).status(), IsOk());
  std::string out = tmp_.File("p.after.safetensors");
  ASSERT_THAT(client->PullWeights("p", out).status(), IsOk());
  EXPECT_EQ(ReadFileBytes(out), ReadFileBytes(OfflineDecode(other)));

  // --preload pins at start.
  ServerOptions o = DefaultOptions();
  o.preload = {"default/p", "default/missing"};
  StartServer(o);
  client = Client();
  ASSERT_OK_AND_ASSIGN(info, client->GetTask("p", false));
  EXPECT_TRUE(info.pinned());
  EXPECT_EQ(MetricValue(server_->MetricsText(), "deltaserve_cache_bytes "),
            static_cast<double>(info.merged_bytes()));
}

}  // namespace
}  // namespace deltaserve::server::testing

namespace deltaserve::server::testing {
namespace {

// Tensor name -> bytes of one raw StreamWeights call; its status in `status`.
std::vector<std::pair<std::string, std::string>> ReadRange(v1::DeltaService::Stub* stub,
                                                           uint32_t first, uint32_t end,
                                                           grpc::StatusCode* status) {
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task("r");
  req.set_resume_from_index(first);
  req.set_end_index(end);
  auto reader = stub->StreamWeights(&ctx, req);
  std::vector<std::pair<std::string, std::string>> out;
  v1::StreamWeightsResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_header()) out.emplace_back(msg.header().name(), "");
    if (msg.has_chunk()) out.back().second += msg.chunk().data();
  }
  *status = reader->Finish().error_code();
  return out;
}

TEST_F(ServerTest, TensorRangesOverParallelStreamsMakeTheWholePull) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("r", MakeContainer("r", 71)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(client::PulledModel whole, client->PullWeightsToMemory("r"));
  const uint32_t n = static_cast<uint32_t>(whole.tensors.size());
  ASSERT_GE(n, 4u);
  auto stub = RawStub();
  const uint32_t cuts[] = {0, 1, n / 2, n};  // three ranges, pulled at once
  std::vector<std::pair<std::string, std::string>> parts[3];
  grpc::StatusCode codes[3];
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back(
        [&, i] { parts[i] = ReadRange(stub.get(), cuts[i], cuts[i + 1], &codes[i]); });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::pair<std::string, std::string>> joined;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(codes[i], grpc::StatusCode::OK) << "range " << i;
    EXPECT_EQ(parts[i].size(), cuts[i + 1] - cuts[i]) << "range " << i;
    joined.insert(joined.end(), parts[i].begin(), parts[i].end());
  }
  ASSERT_EQ(joined.size(), whole.tensors.size());
  for (size_t i = 0; i < joined.size(); ++i) {
    EXPECT_EQ(joined[i].first, whole.tensors[i].info.name);
    EXPECT_EQ(joined[i].second,
              std::string(whole.tensors[i].data.begin(), whole.tensors[i].data.end()))
        << joined[i].first;
  }
  grpc::StatusCode code;
  EXPECT_THAT(ReadRange(stub.get(), 0, n + 1, &code), SizeIs(0));
  EXPECT_EQ(code, grpc::StatusCode::OUT_OF_RANGE);
  ReadRange(stub.get(), 2, 2, &code);
  EXPECT_EQ(code, grpc::StatusCode::OUT_OF_RANGE);
}

}  // namespace
}  // namespace deltaserve::server::testing
