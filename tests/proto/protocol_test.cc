#include "proto/protocol.h"

#include "gmock/gmock.h"
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

}  // namespace
}  // namespace deltaserve::proto
