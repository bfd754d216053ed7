#include "server/internal/weights_wire.h"

#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/support/slice.h"

namespace deltaserve::server::internal {
namespace {

using google::protobuf::io::CodedOutputStream;

// Wire type 2 (length-delimited) tags: StreamWeightsResponse.chunk = 3, TensorChunk.data = 1.
constexpr uint8_t kChunkTag = (3 << 3) | 2;
constexpr uint8_t kDataTag = (1 << 3) | 2;

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

grpc::ByteBuffer EncodeWeightsMessage(const v1::StreamWeightsResponse& msg) {
  const std::string bytes = msg.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer EncodeWeightsChunk(const v1::TensorChunk& chunk, absl::Span<const uint8_t> data,
                                    std::shared_ptr<const void> owner) {
  // Protobuf writes fields in field-number order: data (1) first, then offset (2) and
  // tensor_xxh3_64 (60), which are `rest` below. A proto3 bytes field is left out when
  // empty.
  const std::string rest = chunk.SerializeAsString();
  const uint64_t data_field =
      data.empty() ? 0 : 1 + CodedOutputStream::VarintSize64(data.size()) + data.size();
  std::string head;
  head.push_back(static_cast<char>(kChunkTag));
  AppendVarint(data_field + rest.size(), &head);
  if (!data.empty()) {
    head.push_back(static_cast<char>(kDataTag));
    AppendVarint(data.size(), &head);
  }
  std::vector<grpc::Slice> slices;
  slices.emplace_back(head);
  if (!data.empty()) {
    slices.emplace_back(
        const_cast<uint8_t*>(data.data()), data.size(),
        [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); },
        new std::shared_ptr<const void>(std::move(owner)));
  }
  if (!rest.empty()) slices.emplace_back(rest);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::Status DecodeWeightsRequest(const grpc::ByteBuffer& raw, v1::StreamWeightsRequest* request) {
  std::vector<grpc::Slice> slices;
  if (grpc::Status s = raw.Dump(&slices); !s.ok()) {
    return absl::InvalidArgumentError("StreamWeights: unreadable request");
  }
  std::string bytes;
  bytes.reserve(raw.Length());
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (!request->ParseFromString(bytes)) {
    return absl::InvalidArgumentError("StreamWeights: the request is not a StreamWeightsRequest");
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::server::internal
