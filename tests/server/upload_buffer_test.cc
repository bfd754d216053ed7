#include "server/internal/upload_buffer.h"

#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(UploadBufferTest, AppendsInPlaceOnAHugePageBoundaryAndReleases) {
  UploadBuffer buffer;
  ASSERT_THAT(buffer.Reserve(5 << 20), IsOk());
  EXPECT_EQ(buffer.capacity(), 5u << 20);
  EXPECT_EQ(buffer.size(), 0u);
  buffer.Append("ab");
  const uint8_t* start = buffer.bytes().data();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(start) % (2u << 20), 0u);
  buffer.Append(std::string(3, 'c'));
  EXPECT_EQ(buffer.bytes().data(), start);  // never moves
  EXPECT_THAT(buffer.bytes(), ElementsAre('a', 'b', 'c', 'c', 'c'));
  // Filled to its capacity.
  buffer.Append(std::string((5 << 20) - 5, 'z'));
  EXPECT_EQ(buffer.size(), 5u << 20);
  EXPECT_EQ(buffer.bytes().back(), 'z');
  buffer.Release();
  EXPECT_EQ(buffer.size(), 0u);
  EXPECT_EQ(buffer.capacity(), 0u);
  EXPECT_TRUE(buffer.bytes().empty());
  // Reusable after a release.
  ASSERT_THAT(buffer.Reserve(1), IsOk());
  buffer.Append("x");
  EXPECT_THAT(buffer.bytes(), ElementsAre('x'));
}

TEST(UploadBufferTest, ARefusedMappingIsResourceExhausted) {
  UploadBuffer buffer;
  EXPECT_THAT(buffer.Reserve(size_t{1} << 62),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("for the upload")));
  EXPECT_EQ(buffer.capacity(), 0u);
}

}  // namespace
}  // namespace deltaserve::server::internal
