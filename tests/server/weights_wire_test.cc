#include "server/internal/weights_wire.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/support/slice.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::StatusIs;

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// What protobuf serializes for the same chunk with its data set.
std::string Reference(const v1::TensorChunk& chunk, const std::string& data) {
  v1::StreamWeightsResponse msg;
  *msg.mutable_chunk() = chunk;
  msg.mutable_chunk()->set_data(data);
  return msg.SerializeAsString();
}

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + 7);
  return s;
}

TEST(WeightsWireTest, ChunksAreProtobufsOwnBytes) {
  // Sizes around the varint boundaries of the length prefixes (127/128, 16383/16384) and
  // a 1 MiB chunk; offsets 0 (left out by proto3), small and large; with and without
  // the trailing checksum (field 60).
  for (size_t n : {size_t{1}, size_t{117}, size_t{118}, size_t{127}, size_t{128}, size_t{16370},
                   size_t{16384}, size_t{1} << 20}) {
    for (uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 40}) {
      for (bool checksum : {false, true}) {
        const std::string data = Bytes(n);
        v1::TensorChunk chunk;
        chunk.set_offset(offset);
        if (checksum) chunk.set_tensor_xxh3_64(0x0123456789abcdefULL);
        grpc::ByteBuffer buffer = EncodeWeightsChunk(
            chunk, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), n), nullptr);
        EXPECT_EQ(Flatten(buffer), Reference(chunk, data))
            << "n " << n << " offset " << offset << " checksum " << checksum;
        v1::StreamWeightsResponse parsed;
        ASSERT_TRUE(parsed.ParseFromString(Flatten(buffer)));
        EXPECT_EQ(parsed.chunk().data(), data);
        EXPECT_EQ(parsed.chunk().offset(), offset);
        EXPECT_EQ(parsed.chunk().has_tensor_xxh3_64(), checksum);
      }
    }
  }
}

TEST(WeightsWireTest, AnEmptyChunkIsProtobufsOwnBytes) {
  v1::TensorChunk chunk;
  EXPECT_EQ(Flatten(EncodeWeightsChunk(chunk, {}, nullptr)), Reference(chunk, ""));
  chunk.set_tensor_xxh3_64(5);
  EXPECT_EQ(Flatten(EncodeWeightsChunk(chunk, {}, nullptr)), Reference(chunk, ""));
}

TEST(WeightsWireTest, TheDataIsNotCopiedAndItsOwnerLivesAsLongAsTheBuffer) {
  auto data = std::make_shared<std::string>(Bytes(4096));
  std::weak_ptr<std::string> watch = data;
  v1::TensorChunk chunk;
  chunk.set_offset(8);
  auto buffer = std::make_unique<grpc::ByteBuffer>(EncodeWeightsChunk(
      chunk, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data->data()), data->size()),
      data));
  const std::string expected = Reference(chunk, *data);
  const uint8_t* at = reinterpret_cast<const uint8_t*>(data->data());
  data.reset();
  ASSERT_FALSE(watch.expired());  // the buffer holds it
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer->Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 3u);
  EXPECT_EQ(slices[1].begin(), at);  // the data slice is the caller's memory
  EXPECT_EQ(Flatten(*buffer), expected);
  grpc::ByteBuffer copy = *buffer;  // gRPC copies the buffer when it writes (a slice ref)
  buffer.reset();
  slices.clear();
  EXPECT_FALSE(watch.expired());
  copy.Clear();
  EXPECT_TRUE(watch.expired());
}

TEST(WeightsWireTest, OtherMessagesAreProtobufsOwnBytes) {
  v1::StreamWeightsResponse msg;
  msg.mutable_header()->set_name("model.embed_tokens.weight");
  msg.mutable_header()->set_byte_length(1234);
  msg.mutable_header()->add_shape(2);
  EXPECT_EQ(Flatten(EncodeWeightsMessage(msg)), msg.SerializeAsString());
  msg.mutable_end()->set_num_tensors(3);
  EXPECT_EQ(Flatten(EncodeWeightsMessage(msg)), msg.SerializeAsString());
}

TEST(WeightsWireTest, RequestsParseAndGarbageIsInvalidArgument) {
  v1::StreamWeightsRequest req;
  req.set_task("t");
  req.set_chunk_bytes(4096);
  req.set_checksum_after_data(true);
  grpc::Slice slice(req.SerializeAsString());
  v1::StreamWeightsRequest parsed;
  EXPECT_TRUE(DecodeWeightsRequest(grpc::ByteBuffer(&slice, 1), &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), req.SerializeAsString());
  // A length-delimited field (task = 2) that claims more bytes than follow.
  grpc::Slice bad(std::string("\x12\x7f" "abc", 5));
  EXPECT_THAT(DecodeWeightsRequest(grpc::ByteBuffer(&bad, 1), &parsed),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace deltaserve::server::internal
