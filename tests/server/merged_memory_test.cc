#include "server/internal/merged_memory.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/internal/tensor_cache.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;

constexpr size_t kMiB = size_t{1} << 20;

// Pages of [p, p + bytes) resident in memory now (mincore).
size_t ResidentPages(const void* p, size_t bytes) {
  std::vector<unsigned char> vec((bytes + 4095) / 4096);
  if (mincore(const_cast<void*>(p), bytes, vec.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

// PreTouch's answer: 1 kept, 0 no room, -1 an error.
int PreTouched(MergedMemoryPool& pool, uint64_t id, size_t bytes) {
  std::atomic<bool> stop{false};
  absl::StatusOr<bool> kept = pool.PreTouch(id, bytes, stop);
  return kept.ok() ? (*kept ? 1 : 0) : -1;
}

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

// An allowance lets the pool keep pre-touched mappings beyond its cap: kept bytes stay
// within cap + allowance while nothing is handed out, and each kept page is resident.
TEST(MergedMemoryPoolTest, PreTouchedBytesStayWithinCapPlusAllowance) {
  MergedMemoryPool pool(kMiB);
  EXPECT_EQ(PreTouched(pool, 1, kMiB), 0);  // no allowance 1 yet
  const uint64_t id = pool.AddAllowance(3 * kMiB);
  EXPECT_EQ(pool.allowance_bytes(), 3 * kMiB);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(PreTouched(pool, id, kMiB), 1) << i;
  EXPECT_EQ(PreTouched(pool, id, kMiB), 0);  // a fifth would pass 4 MiB
  EXPECT_EQ(PreTouched(pool, id, 4096), 0);
  EXPECT_EQ(pool.cached_bytes(), 4 * kMiB);
  EXPECT_EQ(pool.pretouched_bytes(), 4 * kMiB);
  EXPECT_EQ(pool.mapped(), 0u);
  auto* p = static_cast<uint8_t*>(pool.Map(kMiB));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ResidentPages(p, kMiB), kMiB / 4096);  // faulted in ahead
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[kMiB - 1], 0);
  EXPECT_EQ(pool.pretouched_taken(), 1u);
  EXPECT_EQ(pool.handed_out_bytes(), kMiB);
  // A taken mapping counts as handed out: still no room for another.
  EXPECT_EQ(PreTouched(pool, id, kMiB), 0);
  pool.Unmap(p, kMiB);  // kept again, as a freed buffer
  EXPECT_EQ(pool.cached_bytes(), 4 * kMiB);
  EXPECT_EQ(pool.pretouched_bytes(), 3 * kMiB);
  pool.RemoveAllowance(id);
}

// A pre-touched mapping goes to a buffer of its rounded size only.
TEST(MergedMemoryPoolTest, HandsOutPreTouchedMappingsByExactSize) {
  MergedMemoryPool pool(0);
  const uint64_t id = pool.AddAllowance(8 * kMiB);
  ASSERT_EQ(PreTouched(pool, id, 2 * kMiB), 1);
  ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  void* other = pool.Map(kMiB + 4096);  // no pre-touched mapping of this size
  EXPECT_EQ(pool.mapped(), 1u);
  EXPECT_EQ(pool.pretouched_taken(), 0u);
  void* one = pool.Map(kMiB);
  void* two = pool.Map(2 * kMiB - 100);  // rounds to 2 MiB
  EXPECT_EQ(pool.pretouched_taken(), 2u);
  EXPECT_EQ(pool.mapped(), 1u);
  EXPECT_EQ(pool.pretouched_bytes(), 0u);
  EXPECT_EQ(ResidentPages(two, 2 * kMiB), 2 * kMiB / 4096);
  void* again = pool.Map(kMiB);  // none left of 1 MiB: a new mapping
  EXPECT_EQ(pool.mapped(), 2u);
  EXPECT_EQ(pool.handed_out_bytes(), 5 * kMiB + 4096);
  for (auto [q, n] : {std::pair{other, kMiB + 4096}, std::pair{one, kMiB},
                      std::pair{two, 2 * kMiB - 100}, std::pair{again, kMiB}}) {
    pool.Unmap(q, n);
  }
  EXPECT_EQ(pool.handed_out_bytes(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 5 * kMiB + 4096);  // within the allowance, kept
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.cached_bytes(), 0u);  // cap 0
}

// As buffers the pre-touched mappings do not fit are handed out (a cache filling with
// tensors of other sizes), kept mappings are unmapped: kept + handed out <= cap +
// allowance, back to the cap alone once the allowance is used up.
TEST(MergedMemoryPoolTest, ReleasesPreTouchedMemoryAsBuffersFillTheAllowance) {
  MergedMemoryPool pool(kMiB);
  const uint64_t id = pool.AddAllowance(4 * kMiB);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  ASSERT_EQ(pool.cached_bytes(), 5 * kMiB);
  std::vector<void*> held;
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.cached_bytes(), 3 * kMiB);  // 1 + 4 - 2
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.cached_bytes(), kMiB);  // the cap
  held.push_back(pool.Map(2 * kMiB));
  EXPECT_EQ(pool.cached_bytes(), kMiB);
  EXPECT_EQ(pool.pretouched_bytes(), kMiB);
  // Returned buffers are kept as far as the limit allows at each return: not with 4 MiB
  // still handed out, then yes.
  for (void* p : held) pool.Unmap(p, 2 * kMiB);
  EXPECT_EQ(pool.cached_bytes(), 5 * kMiB);
  EXPECT_EQ(pool.pretouched_bytes(), kMiB);
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.pretouched_bytes(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 0u);  // 2 MiB freed buffers do not fit the 1 MiB cap
}

// Removing an allowance (a server's shutdown) unmaps its pre-touched mappings that no Map
// took, and the id pre-touches nothing more; freed buffers and another allowance's
// pre-touched mappings stay as far as the lowered limit allows.
TEST(MergedMemoryPoolTest, RemovingTheAllowanceFreesItsPreTouchedMemory) {
  constexpr size_t kKiB = 1024;
  MergedMemoryPool pool(kMiB);
  const uint64_t id = pool.AddAllowance(4 * kMiB);
  const uint64_t other = pool.AddAllowance(kMiB);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(PreTouched(pool, id, kMiB), 1);
  ASSERT_EQ(PreTouched(pool, other, 512 * kKiB), 1);
  void* taken = pool.Map(kMiB);
  void* freed = pool.Map(256 * kKiB);
  pool.Unmap(freed, 256 * kKiB);
  ASSERT_EQ(pool.cached_bytes(), 2 * kMiB + 768 * kKiB);
  pool.RemoveAllowance(id);
  EXPECT_EQ(pool.allowance_bytes(), kMiB);
  EXPECT_EQ(pool.pretouched_bytes(), 512 * kKiB);  // the other allowance's
  EXPECT_EQ(pool.cached_bytes(), 768 * kKiB);
  EXPECT_EQ(PreTouched(pool, id, 4096), 0);
  pool.RemoveAllowance(id);  // again: ignored
  EXPECT_EQ(pool.allowance_bytes(), kMiB);
  pool.Unmap(taken, kMiB);  // within cap + allowance: kept, as a freed buffer
  EXPECT_EQ(pool.cached_bytes(), kMiB + 768 * kKiB);
  pool.RemoveAllowance(other);  // back to the 1 MiB cap: the largest goes
  EXPECT_EQ(pool.pretouched_bytes(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 256 * kKiB);
}

TEST(MergedMemoryPoolTest, PreTouchStopsWhenAsked) {
  MergedMemoryPool pool(0);
  const uint64_t id = pool.AddAllowance(8 * kMiB);
  std::atomic<bool> stop{true};
  EXPECT_THAT(pool.PreTouch(id, 8 * kMiB, stop), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_EQ(PreTouched(pool, id, 8 * kMiB), 1);  // its reservation was returned
  pool.RemoveAllowance(id);
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
  // over whole or come back through the pool. Which of the two depends on timing (a
  // buffer a stream still holds when its tensor is evicted returns through the pool
  // later): CI of 8b2dc7a saw 0 take-overs once, so only their sum is asserted.
  EXPECT_GE(pool.handed_over() - handed_over + pool.reused() - reused, 8u);
}

}  // namespace
}  // namespace deltaserve::server::testing
