// StreamWeights resumed at a byte offset within a tensor (resume_from_offset): a client
// whose stream was cut midway through a tensor asks another server for the rest; the
// bytes it gets joined to those it had are the tensor, whose XXH3-64 (in the header)
// covers the whole tensor.
#include <xxhash.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::testing::HasSubstr;

struct Received {
  std::vector<v1::TensorHeader> headers;
  std::vector<std::string> data;          // per header: its chunks joined
  std::vector<uint64_t> first_offsets;    // per header: its first chunk's offset
  v1::StreamBegin begin;
  v1::StreamEnd end;
  grpc::Status status;
};

Received Stream(v1::DeltaService::Stub* stub, const v1::StreamWeightsRequest& req) {
  grpc::ClientContext ctx;
  auto reader = stub->StreamWeights(&ctx, req);
  Received out;
  v1::StreamWeightsResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_begin()) out.begin = msg.begin();
    if (msg.has_header()) {
      out.headers.push_back(msg.header());
      out.data.emplace_back();
      out.first_offsets.push_back(UINT64_MAX);
    }
    if (msg.has_chunk()) {
      if (out.first_offsets.back() == UINT64_MAX) out.first_offsets.back() = msg.chunk().offset();
      out.data.back() += msg.chunk().data();
    }
    if (msg.has_end()) out.end = msg.end();
  }
  out.status = reader->Finish();
  return out;
}

TEST_F(ServerTest, ResumeFromAByteOffsetSendsTheRestOfTheTensor) {
  StartServer();
  ASSERT_THAT(Client()->PushDeltaFile("t", MakeContainer("t", 11)).status(), IsOk());
  auto stub = RawStub();
  v1::StreamWeightsRequest whole;
  whole.set_task("t");
  whole.set_chunk_bytes(4096);
  whole.set_checksum_after_data(true);
  Received all = Stream(stub.get(), whole);
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  // The first tensor of more than one chunk: cut it after its first chunk and a bit.
  size_t k = 0;
  while (k < all.headers.size() && all.data[k].size() <= 4096 + 100) ++k;
  ASSERT_LT(k, all.headers.size());
  const uint64_t cut = 4096 + 100;

  v1::StreamWeightsRequest rest = whole;
  rest.set_resume_from_index(all.headers[k].index());
  rest.set_resume_from_offset(cut);
  Received resumed = Stream(stub.get(), rest);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  ASSERT_EQ(resumed.headers.size(), all.headers.size() - k);
  const v1::TensorHeader& h = resumed.headers[0];
  EXPECT_EQ(h.name(), all.headers[k].name());
  EXPECT_EQ(h.byte_length(), all.data[k].size());
  EXPECT_FALSE(h.checksum_follows());
  EXPECT_EQ(resumed.first_offsets[0], cut);
  // Bytes kept + bytes resumed = the tensor, bit for bit; the header's checksum is the
  // whole tensor's.
  const std::string joined = all.data[k].substr(0, cut) + resumed.data[0];
  EXPECT_EQ(joined, all.data[k]);
  EXPECT_EQ(h.xxh3_64(), XXH3_64bits(joined.data(), joined.size()));
  for (size_t i = 1; i < resumed.headers.size(); ++i) EXPECT_EQ(resumed.data[i], all.data[k + i]);
  uint64_t sent = 0;
  for (const std::string& d : resumed.data) sent += d.size();
  EXPECT_EQ(resumed.begin.total_bytes(), sent);
  EXPECT_EQ(resumed.end.total_bytes(), sent);

  rest.set_resume_from_offset(all.data[k].size() + 1);
  Received past = Stream(stub.get(), rest);
  EXPECT_EQ(Code(past.status), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(past.status.error_message(), HasSubstr("resume_from_offset"));
  rest.clear_resume();
  rest.set_resume_from_offset(cut);
  Received no_tensor = Stream(stub.get(), rest);
  EXPECT_EQ(Code(no_tensor.status), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace deltaserve::server::testing
