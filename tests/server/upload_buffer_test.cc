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

constexpr size_t kMiB = size_t{1} << 20;

TEST(UploadBufferTest, AReleasedMappingIsReusedByTheNextUploadThatFits) {
  UploadBufferPool pool(64 * kMiB);
  const uint8_t* first = nullptr;
  {
    UploadBuffer buffer(&pool);
    ASSERT_THAT(buffer.Reserve(5 * kMiB), IsOk());
    buffer.Append(std::string(5 * kMiB, 'a'));
    first = buffer.bytes().data();
    EXPECT_EQ(pool.cached_bytes(), 0u);
  }  // released: kept, rounded up to whole 2 MiB pages
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
  UploadBuffer buffer(&pool);
  ASSERT_THAT(buffer.Reserve(3 * kMiB), IsOk());
  EXPECT_EQ(buffer.bytes().data(), first);
  EXPECT_EQ(buffer.capacity(), 3 * kMiB);
  EXPECT_EQ(buffer.size(), 0u);  // the earlier bytes are not part of the new upload
  EXPECT_EQ(pool.cached_bytes(), 0u);
  buffer.Append("xy");
  EXPECT_THAT(buffer.bytes(), ElementsAre('x', 'y'));
  // Too small for the next one: a new mapping, and both are kept after release.
  buffer.Release();
  UploadBuffer larger(&pool);
  ASSERT_THAT(larger.Reserve(7 * kMiB), IsOk());
  EXPECT_NE(larger.bytes().data(), first);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(larger.bytes().data()) % (2 * kMiB), 0u);
  larger.Append(std::string(7 * kMiB, 'b'));
  larger.Release();
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB + 8 * kMiB);
}

TEST(UploadBufferTest, ThePoolKeepsAtMostItsCap) {
  UploadBufferPool pool(10 * kMiB);
  UploadBuffer a(&pool), b(&pool);
  ASSERT_THAT(a.Reserve(6 * kMiB), IsOk());
  ASSERT_THAT(b.Reserve(6 * kMiB), IsOk());
  a.Append(std::string(6 * kMiB, 'a'));
  b.Append(std::string(6 * kMiB, 'b'));
  a.Release();
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
  b.Release();  // 12 MiB would exceed the cap: unmapped
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
}

TEST(UploadBufferTest, ABufferLargerThanTheCapWorksAndIsUnmappedAtRelease) {
  UploadBufferPool pool(4 * kMiB);
  UploadBuffer buffer(&pool);
  ASSERT_THAT(buffer.Reserve(9 * kMiB), IsOk());
  buffer.Append(std::string(9 * kMiB, 'q'));
  EXPECT_EQ(buffer.size(), 9 * kMiB);
  EXPECT_EQ(buffer.bytes()[9 * kMiB - 1], 'q');
  buffer.Release();
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(UploadBufferTest, UploadsAtOnceGetDistinctMappings) {
  UploadBufferPool pool(64 * kMiB);
  {
    UploadBuffer warm(&pool);  // one cached mapping for the first of them to take
    ASSERT_THAT(warm.Reserve(4 * kMiB), IsOk());
  }
  ASSERT_EQ(pool.cached_bytes(), 4 * kMiB);
  UploadBuffer a(&pool), b(&pool);
  ASSERT_THAT(a.Reserve(4 * kMiB), IsOk());
  ASSERT_THAT(b.Reserve(4 * kMiB), IsOk());
  a.Append(std::string(4 * kMiB, 'a'));
  b.Append(std::string(4 * kMiB, 'b'));
  const uintptr_t pa = reinterpret_cast<uintptr_t>(a.bytes().data());
  const uintptr_t pb = reinterpret_cast<uintptr_t>(b.bytes().data());
  EXPECT_TRUE(pa + 4 * kMiB <= pb || pb + 4 * kMiB <= pa);  // no overlap
  EXPECT_EQ(a.bytes().back(), 'a');
  EXPECT_EQ(b.bytes().front(), 'b');
  a.Release();
  b.Release();
  EXPECT_EQ(pool.cached_bytes(), 8 * kMiB);
}

TEST(UploadBufferTest, ARefusedMappingFromAPoolIsResourceExhausted) {
  UploadBufferPool pool(64 * kMiB);
  UploadBuffer buffer(&pool);
  EXPECT_THAT(buffer.Reserve(size_t{1} << 62),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("for the upload")));
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

}  // namespace
}  // namespace deltaserve::server::internal
