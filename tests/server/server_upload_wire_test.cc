// PutDelta messages as bytes on the wire: the server takes the common message (exactly
// one `chunk` field) from gRPC's buffers without parsing it into a request, and parses
// every other encoding with protobuf's rules, so both give the same result.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;
using ::testing::HasSubstr;

std::string Varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}

// PutDeltaRequest{chunk: data} followed by `extra` wire bytes.
std::string ChunkMessage(std::string_view data, const std::string& extra = "") {
  return absl::StrCat("\x12", Varint(data.size()), std::string(data), extra);
}

// Sends `messages` (wire bytes, each split into 3 slices where it can) as one PutDelta
// call; the status and, if OK, the parsed response.
grpc::Status PutRaw(const std::string& target, const std::vector<std::string>& messages,
                    v1::PutDeltaResponse* response) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  grpc::ByteBuffer answer;
  const grpc::internal::RpcMethod method("/deltaserve.v1.DeltaService/PutDelta",
                                         grpc::internal::RpcMethod::CLIENT_STREAMING, channel);
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
      grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(channel.get(), method, &ctx,
                                                                    &answer));
  for (const std::string& m : messages) {
    const size_t a = m.size() / 3, b = 2 * m.size() / 3;
    grpc::Slice slices[3] = {grpc::Slice(m.data(), a), grpc::Slice(m.data() + a, b - a),
                             grpc::Slice(m.data() + b, m.size() - b)};
    if (!writer->Write(grpc::ByteBuffer(slices, 3))) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (status.ok()) {
    EXPECT_TRUE(grpc::SerializationTraits<v1::PutDeltaResponse>::Deserialize(&answer, response)
                    .ok());
  }
  return status;
}

std::string Metadata(const std::string& task, uint64_t total) {
  v1::PutDeltaRequest request;
  request.mutable_metadata()->set_task(task);
  request.mutable_metadata()->set_total_bytes(total);
  return request.SerializeAsString();
}

TEST_F(ServerTest, ChunksInAnyEncodingAreStoredTheSame) {
  StartServer();
  const std::vector<uint8_t> bytes = ContainerBytes("w", 41);
  const std::string container(bytes.begin(), bytes.end());
  const size_t half = container.size() / 2;
  // Taken as they come (two plain chunk messages, split across slices).
  v1::PutDeltaResponse response;
  ASSERT_THAT(PutRaw(target(),
                     {Metadata("plain", container.size()),
                      ChunkMessage(std::string_view(container).substr(0, half)),
                      ChunkMessage(std::string_view(container).substr(half))},
                     &response)
                  .error_message(),
              "");
  EXPECT_EQ(response.task().container_bytes(), container.size());
  // Parsed: an unknown field after the chunk (ignored), and a chunk field given twice
  // (the last one counts).
  ASSERT_THAT(
      PutRaw(target(),
             {Metadata("parsed", container.size()),
              ChunkMessage(std::string_view(container).substr(0, half), "\xf8\x06\x01"),
              ChunkMessage("ignored") + ChunkMessage(std::string_view(container).substr(half))},
             &response)
          .error_message(),
      "");
  EXPECT_EQ(response.task().container_bytes(), container.size());
  auto client = Client();
  for (const std::string task : {"plain", "parsed"}) {
    ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> stored, client->FetchDelta(task));
    EXPECT_EQ(stored, bytes) << task;
  }
  // A chunk field whose length runs past the message does not parse.
  grpc::Status s = PutRaw(
      target(), {Metadata("bad", container.size()), absl::StrCat("\x12", Varint(100), "short")}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("does not parse"));
  EXPECT_THAT(client->GetTask("bad").status(), ::deltaserve::testing::StatusIs(
                                                   absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace deltaserve::server::testing
