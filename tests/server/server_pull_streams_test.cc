// Parallel pulls (PullOptions::streams, `deltactl pull --streams`) against the real
// server: the same bytes as one stream and as offline decompress.
#include <filesystem>
#include <iterator>
#include <string>
#include <vector>

#include "client/client.h"
#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

TEST_F(ServerTest, PullsOverOneTwoAndFourStreamsAreBitIdenticalToOfflineDecode) {
  StartServer();
  const std::string container = MakeContainer("p", 91);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("p", container).status(), IsOk());
  const std::string offline = ReadFileBytes(OfflineDecode(container));
  for (uint32_t streams : {1u, 2u, 4u}) {
    SCOPED_TRACE(streams);
    client::PullOptions options;
    options.streams = streams;
    const std::string out = tmp_.File("p." + std::to_string(streams) + ".safetensors");
    ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeights("p", out, options));
    EXPECT_EQ(stats.streams, streams);
    EXPECT_EQ(stats.tensors, 1u + 4u * shape_.layers);
    EXPECT_EQ(ReadFileBytes(out), offline);
  }
}

// A pull into one file writes each chunk at its place in the file (no name filter: the
// tensors are known from GetTask): with another dtype and a resume point, over one and
// three streams, the file is the one WriteSafetensors makes of the same tensors.
TEST_F(ServerTest, PullsWrittenInPlaceKeepDtypeAndResume) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("r", MakeContainer("r", 93)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(v1::TaskInfo info, client->GetTask("r"));
  ASSERT_GT(info.tensors_size(), 3);
  client::PullOptions options;
  options.out_dtype = codec::DType::kF32;
  options.resume_from = info.tensors(2).name();
  ASSERT_OK_AND_ASSIGN(client::PulledModel model, client->PullWeightsToMemory("r", options));
  ASSERT_EQ(model.tensors.size(), static_cast<size_t>(info.tensors_size() - 2));
  std::vector<codec::TensorView> views;
  for (const codec::OwnedTensor& t : model.tensors) views.push_back(t.view());
  const std::string expected = tmp_.File("expected.safetensors");
  ASSERT_THAT(codec::WriteSafetensors(expected, views, model.metadata), IsOk());
  for (uint32_t streams : {1u, 3u}) {
    SCOPED_TRACE(streams);
    options.streams = streams;
    const std::string out = tmp_.File("r." + std::to_string(streams) + ".safetensors");
    ASSERT_OK_AND_ASSIGN(client::PullStats stats, client->PullWeights("r", out, options));
    EXPECT_EQ(stats.tensors, model.tensors.size());
    EXPECT_EQ(ReadFileBytes(out), ReadFileBytes(expected));
    EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
  }
}

TEST_F(ServerTest, ParallelPullsKeepFilterDtypeAndShards) {
  StartServer();
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("q", MakeContainer("q", 92)).status(), IsOk());
  client::PullOptions one;
  one.out_dtype = codec::DType::kF32;
  one.include = {"*layers.1.*", "embed*", "*layers.2.*"};
  client::PullOptions three = one;
  three.streams = 3;
  ASSERT_OK_AND_ASSIGN(client::PulledModel a, client->PullWeightsToMemory("q", one));
  ASSERT_OK_AND_ASSIGN(client::PulledModel b, client->PullWeightsToMemory("q", three));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  ASSERT_GT(a.tensors.size(), 4u);
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(b.tensors[i].info.name, a.tensors[i].info.name);
    EXPECT_EQ(b.tensors[i].info.dtype, codec::DType::kF32);
    EXPECT_EQ(b.tensors[i].data, a.tensors[i].data) << a.tensors[i].info.name;
  }
  EXPECT_EQ(b.metadata, a.metadata);
  EXPECT_EQ(b.stats.bytes, a.stats.bytes);

  // A sharded directory: the same shards and index.
  const uint64_t shard = 40000;
  ASSERT_THAT(client->PullWeightsToDirectory("q", tmp_.File("d1"), shard).status(), IsOk());
  client::PullOptions four;
  four.streams = 4;
  ASSERT_THAT(client->PullWeightsToDirectory("q", tmp_.File("d4"), shard, four).status(), IsOk());
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(tmp_.File("d1"))) {
    names.push_back(e.path().filename().string());
  }
  ASSERT_GT(names.size(), 2u);
  for (const std::string& name : names) {
    EXPECT_EQ(ReadFileBytes(tmp_.File("d4/" + name)), ReadFileBytes(tmp_.File("d1/" + name)))
        << name;
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp_.File("d4")),
                          std::filesystem::directory_iterator()),
            static_cast<long>(names.size()));
}

}  // namespace
}  // namespace deltaserve::server::testing
