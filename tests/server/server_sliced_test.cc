// Cold StreamWeights with checksum_after_data: a tensor's rows leave while later rows
// still decode (its header has checksum_follows, its XXH3-64 rides on its last chunk),
// and the bytes are still those of offline decompress. Requests without the opt-in get
// every checksum in the header, as before.
#include <xxhash.h>

#include <map>
#include <string>

#include "codec/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

// A model whose embedding (6144 x 1536, 9.4 M weights) is merged in two row parts on
// two workers, so that its bytes become final out of order.
class ServerSlicedTest : public ServerTest {
 protected:
  void SetUp() override {
    shape_.layers = 1;
    shape_.hidden = 1536;
    ServerTest::SetUp();
  }
};

struct Pulled {
  std::map<std::string, std::string> tensors;  // name -> bytes
  int checksum_follows = 0;                    // headers with checksum_follows
  grpc::Status status;
};

// One raw StreamWeights call; checks every tensor's checksum where the protocol puts it.
Pulled Stream(v1::DeltaService::Stub* stub, const std::string& task, bool checksum_after_data) {
  grpc::ClientContext ctx;
  v1::StreamWeightsRequest req;
  req.set_task(task);
  req.set_checksum_after_data(checksum_after_data);
  req.set_chunk_bytes(1 << 16);
  auto reader = stub->StreamWeights(&ctx, req);
  Pulled out;
  v1::StreamWeightsResponse msg;
  v1::TensorHeader header;
  std::string* data = nullptr;
  while (reader->Read(&msg)) {
    if (msg.has_header()) {
      header = msg.header();
      data = &out.tensors[header.name()];
      out.checksum_follows += header.checksum_follows();
      if (header.checksum_follows()) {
        EXPECT_EQ(header.xxh3_64(), 0u);
      }
    } else if (msg.has_chunk()) {
      EXPECT_EQ(msg.chunk().offset(), data->size());
      *data += msg.chunk().data();
      const bool last = data->size() == header.byte_length();
      EXPECT_EQ(msg.chunk().has_tensor_xxh3_64(), header.checksum_follows() && last)
          << header.name() << " at " << msg.chunk().offset();
      if (last) {
        const uint64_t want =
            header.checksum_follows() ? msg.chunk().tensor_xxh3_64() : header.xxh3_64();
        EXPECT_EQ(XXH3_64bits(data->data(), data->size()), want) << header.name();
      }
    }
  }
  out.status = reader->Finish();
  return out;
}

TEST_F(ServerSlicedTest, ColdRowsStreamBeforeTheirChecksumAndMatchOfflineDecode) {
  ServerOptions options = DefaultOptions();
  options.workers = 2;
  options.cache_bytes = 256 << 20;  // holds the task: the third stream is all cached
  StartServer(options);
  const std::string container = MakeContainer("s", 17);
  auto client = Client();
  ASSERT_THAT(client->PushDeltaFile("s", container).status(), IsOk());
  ASSERT_THAT(client->PushDeltaFile("old", container).status(), IsOk());
  auto offline = codec::ModelReader::Open(OfflineDecode(container));
  ASSERT_THAT(offline.status(), IsOk());
  auto stub = RawStub();

  Pulled cold = Stream(stub.get(), "s", /*checksum_after_data=*/true);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  // At least the embedding (decoded in parts, the first tensor) streams before its end.
  EXPECT_GE(cold.checksum_follows, 1);
  Pulled old = Stream(stub.get(), "old", /*checksum_after_data=*/false);
  ASSERT_TRUE(old.status.ok()) << old.status.error_message();
  EXPECT_EQ(old.checksum_follows, 0);
  Pulled cached = Stream(stub.get(), "s", /*checksum_after_data=*/true);
  ASSERT_TRUE(cached.status.ok()) << cached.status.error_message();
  EXPECT_EQ(cached.checksum_follows, 0);  // complete in the cache: checksum in the header

  ASSERT_EQ(cold.tensors.size(), (*offline)->tensors().size());
  for (const codec::TensorInfo& info : (*offline)->tensors()) {
    absl::StatusOr<codec::TensorView> t = (*offline)->Get(info.name);
    ASSERT_THAT(t.status(), IsOk());
    const std::string want(reinterpret_cast<const char*>(t->data.data()), t->data.size());
    EXPECT_EQ(cold.tensors[info.name], want) << info.name;
    EXPECT_EQ(old.tensors[info.name], want) << info.name;
    EXPECT_EQ(cached.tensors[info.name], want) << info.name;
  }
}

}  // namespace
}  // namespace deltaserve::server::testing
