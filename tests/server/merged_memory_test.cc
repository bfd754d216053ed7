#include "server/internal/merged_memory.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "server/internal/tensor_cache.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::IsOk;

constexpr size_t kMiB = size_t{1} << 20;

TEST(MergedMemoryPoolTest, ReusesAFreedMappingOfTheSameRoundedSizeOnly) {
  MergedMemoryPool pool(8 * kMiB);
  auto* a = static_cast<uint8_t*>(pool.Map(kMiB + 5));
  ASSERT_NE(a, nullptr);
  std::memset(a, 0xab, kMiB + 5);
  pool.Unmap(a, kMiB + 5);
  EXPECT_EQ(pool.cached_bytes(), kMiB + 4096);  // rounded up to whole pages
  // 1 MiB exactly rounds to another size: a new mapping, the kept one stays.
  auto* b = static_cast<uint8_t*>(pool.Map(kMiB));
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b, a);
  EXPECT_EQ(pool.mapped(), 2u);
  EXPECT_EQ(pool.reused(), 0u);
  EXPECT_EQ(pool.cached_bytes(), kMiB + 4096);
  // Any size that rounds to the kept one's gets it, with its earlier bytes.
  auto* c = static_cast<uint8_t*>(pool.Map(kMiB + 4000));
  EXPECT_EQ(c, a);
  EXPECT_EQ(pool.reused(), 1u);
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_EQ(c[0], 0xab);
  EXPECT_EQ(c[kMiB + 4], 0xab);
  c[kMiB + 3999] = 7;  // the whole rounded size is writable
  pool.Unmap(c, kMiB + 4000);
  pool.Unmap(b, kMiB);
  EXPECT_EQ(pool.cached_bytes(), 2 * kMiB + 4096);
}

TEST(MergedMemoryPoolTest, KeepsNoMoreThanItsCap) {
  MergedMemoryPool pool(3 * kMiB);
  void* m[3];
  for (void*& p : m) {
    p = pool.Map(kMiB + 1);  // 1 MiB + 4 KiB each
    ASSERT_NE(p, nullptr);
  }
  for (void* p : m) pool.Unmap(p, kMiB + 1);
  EXPECT_EQ(pool.cached_bytes(), 2 * (kMiB + 4096));  // the third would pass the cap
  // A mapping larger than the cap is never kept.
  void* big = pool.Map(4 * kMiB);
  ASSERT_NE(big, nullptr);
  pool.Unmap(big, 4 * kMiB);
  EXPECT_EQ(pool.cached_bytes(), 2 * (kMiB + 4096));
  // Both kept mappings are handed out again, then new ones are mapped.
  for (void*& p : m) p = pool.Map(kMiB + 1);
  EXPECT_EQ(pool.reused(), 2u);
  EXPECT_EQ(pool.mapped(), 5u);
  EXPECT_EQ(pool.cached_bytes(), 0u);
  for (void* p : m) pool.Unmap(p, kMiB + 1);
}

TEST(MergedMemoryPoolTest, MergedBuffersOfPoolSizeComeFromTheProcessPool) {
  MergedMemoryPool& pool = MergedMemoryPool::Process();
  const uint64_t reused = pool.reused();
  const size_t bytes = kMergedPoolMinBytes + 12345;
  const uint8_t* first;
  {
    MergedBuffer buffer(bytes);
    first = buffer.data();
    buffer[bytes - 1] = 1;
  }
  MergedBuffer again(bytes);
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(pool.reused(), reused + 1);
  // Below the pool's size: malloc, as before.
  MergedBuffer small(kMergedPoolMinBytes - 1);
  EXPECT_EQ(pool.reused(), reused + 1);
}

}  // namespace
}  // namespace deltaserve::server::internal

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

// Tensors of a cold pull land in the memory of tensors the cache evicted (a full cache:
// the second task evicts the first, then the first evicts the second), taken over or
// through the pool, and every pull is still byte for byte the offline decode of its
// container.
TEST_F(ServerTest, ColdPullsIntoReusedMemoryEqualTheOfflineDecode) {
  shape_.layers = 2;
  shape_.hidden = 256;  // every matrix >= 256 KiB: pool-sized merged buffers
  SetUp();
  ServerOptions o = DefaultOptions();
  o.cache_bytes = 1536 << 10;  // about half a merged model (~2.8 MB)
  StartServer(o);
  auto client = Client();
  const std::string a = MakeContainer("a", 11), b = MakeContainer("b", 12);
  ASSERT_THAT(client->PushDeltaFile("a", a).status(), IsOk());
  ASSERT_THAT(client->PushDeltaFile("b", b).status(), IsOk());
  const internal::MergedMemoryPool& pool = internal::MergedMemoryPool::Process();
  const uint64_t reused = pool.reused(), handed_over = pool.handed_over();
  for (const std::string task : {"a", "b", "a"}) {
    SCOPED_TRACE(task);
    const std::string pulled = tmp_.File(task + ".pulled.safetensors");
    ASSERT_THAT(client->PullWeights(task, pulled).status(), IsOk());
    EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(task == "a" ? a : b)));
  }
  EXPECT_GT(MetricValue(server_->MetricsText(), "deltaserve_cache_evictions_total "), 0);
  // Each model's tensors evict the other's, of the same shapes: their buffers are taken
  // over whole (or come back through the pool).
  EXPECT_GT(pool.handed_over(), handed_over);
  EXPECT_GE(pool.handed_over() - handed_over + pool.reused() - reused, 8u);
}

}  // namespace
}  // namespace deltaserve::server::testing
