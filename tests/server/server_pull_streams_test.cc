// Parallel pulls (PullOptions::streams, `deltactl pull --streams`) against the real
// server: the same bytes as one stream and as offline decompress.
#include <filesystem>
#include <iterator>
#include <string>
#include <vector>

#include "client/client.h"
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
