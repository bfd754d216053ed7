#include "storage/internal/block_memory.h"

#include <cstdint>
#include <cstring>

#include "gtest/gtest.h"

namespace deltaserve::storage {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(BlockMemoryTest, SizeClassesAreEightPerPowerOfTwoInWholePages) {
  EXPECT_EQ(BlockMemory::MappedBytes(256 << 10), size_t{256} << 10);
  EXPECT_EQ(BlockMemory::MappedBytes((256 << 10) + 1), size_t{288} << 10);  // steps of 32 KiB
  EXPECT_EQ(BlockMemory::MappedBytes(300000), size_t{320} << 10);
  // The embedding record of the 0.5B stream_bench task (17,548,741 bytes + RocksDB's
  // 5-byte trailer) and a slightly larger one of another task share a class: 18 MiB.
  EXPECT_EQ(BlockMemory::MappedBytes(17548746), 18 * kMiB);
  EXPECT_EQ(BlockMemory::MappedBytes(17900000), 18 * kMiB);
  EXPECT_EQ(BlockMemory::MappedBytes(16 * kMiB), 16 * kMiB);
}

TEST(BlockMemoryTest, FreedMappingIsReusedForABlockOfItsClass) {
  BlockMemory memory(4 * kMiB);
  auto* a = static_cast<uint8_t*>(memory.Allocate(kMiB + 100));
  ASSERT_NE(a, nullptr);
  std::memset(a, 0xab, kMiB + 100);  // writable throughout
  EXPECT_EQ(memory.stats().mapped, 1u);
  memory.Deallocate(a);
  EXPECT_EQ(memory.stats().kept_bytes, BlockMemory::MappedBytes(kMiB + 100));
  // Another size of the same class (1 MiB + up to 128 KiB) gets the same mapping, bytes
  // as they were left.
  auto* b = static_cast<uint8_t*>(memory.Allocate(kMiB + 5000));
  EXPECT_EQ(b, a);
  EXPECT_EQ(b[kMiB + 99], 0xab);
  EXPECT_EQ(memory.stats().reused, 1u);
  EXPECT_EQ(memory.stats().kept_bytes, 0u);
  // A larger class maps afresh.
  void* c = memory.Allocate(2 * kMiB);
  EXPECT_NE(c, b);
  EXPECT_EQ(memory.stats().mapped, 2u);
  memory.Deallocate(b);
  memory.Deallocate(c);
  EXPECT_EQ(memory.stats().kept_bytes, BlockMemory::MappedBytes(kMiB + 100) + 2 * kMiB);
}

TEST(BlockMemoryTest, KeepsAtMostItsCap) {
  BlockMemory memory(kMiB);
  void* a = memory.Allocate(kMiB);
  void* b = memory.Allocate(kMiB);
  memory.Deallocate(a);
  memory.Deallocate(b);  // over the cap: unmapped
  EXPECT_EQ(memory.stats().kept_bytes, kMiB);
  void* again = memory.Allocate(kMiB);
  void* fresh = memory.Allocate(kMiB);
  EXPECT_EQ(again, a);
  EXPECT_NE(fresh, nullptr);
  EXPECT_EQ(memory.stats().mapped, 3u);
  EXPECT_EQ(memory.stats().reused, 1u);
  memory.Deallocate(again);
  memory.Deallocate(fresh);
}

TEST(BlockMemoryTest, SmallBlocksComeFromMallocAndAreNotKept) {
  BlockMemory memory(4 * kMiB);
  auto* p = static_cast<uint8_t*>(memory.Allocate(kMinMappedBlockBytes - 1));
  ASSERT_NE(p, nullptr);
  p[kMinMappedBlockBytes - 2] = 7;
  memory.Deallocate(p);
  memory.Deallocate(nullptr);
  EXPECT_EQ(memory.stats().mapped, 0u);
  EXPECT_EQ(memory.stats().kept_bytes, 0u);
}

}  // namespace
}  // namespace deltaserve::storage
