#include "proto/protocol.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::proto {
namespace {

using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ProtocolTest, DTypeRoundTrip) {
  for (auto d : {codec::DType::kF32, codec::DType::kF16, codec::DType::kBF16}) {
    absl::StatusOr<codec::DType> back = FromProtoDType(ToProtoDType(d));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, d);
    absl::StatusOr<std::optional<codec::DType>> out = FromProtoOutDType(ToProtoDType(d));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, d);
  }
}

TEST(ProtocolTest, UnspecifiedMeansKeepForOutputButIsAnErrorForATensor) {
  absl::StatusOr<std::optional<codec::DType>> out = FromProtoOutDType(v1::DTYPE_UNSPECIFIED);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->has_value());
  EXPECT_THAT(FromProtoDType(v1::DTYPE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("DTYPE_UNSPECIFIED")));
  EXPECT_THAT(FromProtoDType(static_cast<v1::DType>(99)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown dtype 99")));
  EXPECT_THAT(FromProtoOutDType(static_cast<v1::DType>(99)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown dtype 99")));
}

TEST(ProtocolTest, ChunkBytes) {
  EXPECT_TRUE(ValidateChunkBytes(kMinChunkBytes, "x").ok());
  EXPECT_TRUE(ValidateChunkBytes(kMaxChunkBytes, "x").ok());
  EXPECT_THAT(ValidateChunkBytes(kMinChunkBytes - 1, "--chunk-bytes"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--chunk-bytes must be in [4096, 4193280] bytes")));
  EXPECT_THAT(ValidateChunkBytes(kMaxChunkBytes + 1, "x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(EffectiveChunkBytes(0, kDefaultChunkBytes), kDefaultChunkBytes);
  EXPECT_EQ(EffectiveChunkBytes(1, kDefaultChunkBytes), kMinChunkBytes);
  EXPECT_EQ(EffectiveChunkBytes(64u << 20, kDefaultChunkBytes), kMaxChunkBytes);
  EXPECT_EQ(EffectiveChunkBytes(10000, kDefaultChunkBytes), 10000u);
  // A full chunk and its framing fit the largest message both ends accept.
  EXPECT_GT(static_cast<uint64_t>(kMaxMessageBytes), uint64_t{kMaxChunkBytes} + 1024);
}

// Every request field that carries text is `bytes` on the wire (protobuf's parser would
// drop a `string` field holding invalid UTF-8 before the server's code ran), and every
// `bytes` field of a request is text except PutDeltaRequest.chunk. A new `string` field
// in a request, or a new binary field not listed in kBinaryFields, fails here.
TEST(ProtocolTest, RequestTextFieldsAreBytesAndChecked) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          "deltaserve.v1.DeltaService");
  ASSERT_NE(service, nullptr);
  std::set<std::string> text, binary;
  std::function<void(const google::protobuf::Descriptor*)> walk =
      [&](const google::protobuf::Descriptor* m) {
        for (int i = 0; i < m->field_count(); ++i) {
          const FieldDescriptor* f = m->field(i);
          EXPECT_NE(f->type(), FieldDescriptor::TYPE_STRING) << f->full_name();
          if (f->type() == FieldDescriptor::TYPE_BYTES) {
            const bool is_binary = std::any_of(std::begin(kBinaryFields), std::end(kBinaryFields),
                                               [&](const char* b) { return f->full_name() == b; });
            (is_binary ? binary : text).insert(f->full_name());
          } else if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
            walk(f->message_type());
          }
        }
      };
  for (int i = 0; i < service->method_count(); ++i) walk(service->method(i)->input_type());
  EXPECT_EQ(binary, (std::set<std::string>{"deltaserve.v1.PutDeltaRequest.chunk",
                                           "deltaserve.v1.PutDeltaRequest.side_file_chunk",
                                           "deltaserve.v1.PutDeltaMetadata.base_hash"}));
  EXPECT_EQ(text.size(), 23u);  // 19 names and filters, 3 of GetSideFile, SideFileDecl.name
  EXPECT_EQ(text.count("deltaserve.v1.SideFileDecl.name"), 1u);
  EXPECT_EQ(text.count("deltaserve.v1.StreamWeightsRequest.include"), 1u);
  EXPECT_EQ(text.count("deltaserve.v1.AdminCheckpointRequest.dir"), 1u);

  v1::StreamWeightsRequest req;
  req.set_task("caf\xc3\xa9");
  EXPECT_TRUE(CheckTextFieldsUtf8(req, "StreamWeights").ok());
  req.add_include("a");
  req.add_include("\xff");
  EXPECT_THAT(CheckTextFieldsUtf8(req, "StreamWeights"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "StreamWeights: include[1] '\\xff' is not valid UTF-8"));
  v1::PutDeltaRequest put;
  put.set_chunk(std::string("\xff\xfe", 2));  // binary: never checked
  EXPECT_TRUE(CheckTextFieldsUtf8(put, "PutDelta").ok());
  put.mutable_metadata()->set_tenant("\xe2\x82");  // truncated sequence
  EXPECT_THAT(CheckTextFieldsUtf8(put, "PutDelta"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "PutDelta: metadata: tenant '\\xe2\\x82' is not valid UTF-8"));
}

}  // namespace
}  // namespace deltaserve::proto
