#include "server/internal/merged_memory.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "server/internal/tensor_cache.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

// The pool itself (sizes, budget, allowance, pre-touch, threads) is tested once, in
// tests/common/mapping_pool_test.cc; here: what the server builds on it.

TEST(MergedMemoryPoolTest, MergedBuffersOfPoolSizeComeFromTheProcessPool) {
  MergedMemoryPool& pool = MergedMemoryPool::Process();
  const uint64_t reused = pool.stats().reused;
  const size_t bytes = kMergedPoolMinBytes + 12345;
  const uint8_t* first;
  {
    MergedBuffer buffer(bytes);
    first = buffer.data();
    buffer[bytes - 1] = 1;
  }
  MergedBuffer again(bytes);
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(pool.stats().reused, reused + 1);
  // Below the pool's size: malloc, as before.
  MergedBuffer small(kMergedPoolMinBytes - 1);
  EXPECT_EQ(pool.stats().reused, reused + 1);
  EXPECT_EQ(pool.max_kept_bytes(), kMergedPoolBytes);
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
  const uint64_t reused = pool.stats().reused, handed_over = pool.handed_over();
  for (const std::string task : {"a", "b", "a"}) {
    SCOPED_TRACE(task);
    const std::string pulled = tmp_.File(task + ".pulled.safetensors");
    ASSERT_THAT(client->PullWeights(task, pulled).status(), IsOk());
    EXPECT_EQ(ReadFileBytes(pulled), ReadFileBytes(OfflineDecode(task == "a" ? a : b)));
  }
  EXPECT_GT(MetricValue(server_->MetricsText(), "deltaserve_cache_evictions_total "), 0);
  // Each model's tensors evict the other's, of the same shapes: their buffers are taken
  // over whole or come back through the pool. Which of the two depends on timing (a
  // buffer a stream still holds when its tensor is evicted returns through the pool
  // later): CI of 8b2dc7a saw 0 take-overs once, so only their sum is asserted.
  EXPECT_GE(pool.handed_over() - handed_over + pool.stats().reused - reused, 8u);
}

}  // namespace
}  // namespace deltaserve::server::testing
