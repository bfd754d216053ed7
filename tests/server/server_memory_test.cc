// Server::MemoryUsage (what accounts for the server's RSS) and LimitMallocArenas.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::server::testing {
namespace {

using ::deltaserve::testing::IsOk;

// After a cold pull every merged tensor is in the cache (it fits), no record is pinned in
// RocksDB's block caches, and the upload's mapping is kept for the next upload.
TEST_F(ServerTest, MemoryUsageCountsTheCacheAndNoPinnedBlocksAfterAPull) {
  StartServer();
  auto client = Client();
  EXPECT_EQ(server_->MemoryUsage().cache_bytes, 0u);
  const std::string container = MakeContainer("a", 11);
  ASSERT_THAT(client->PushDeltaFile("a", container).status(), IsOk());
  EXPECT_GE(server_->MemoryUsage().upload_kept_bytes, ReadFileBytes(container).size());
  ASSERT_OK_AND_ASSIGN(client::PulledModel pulled, client->PullWeightsToMemory("a", {}));
  uint64_t merged = 0;
  for (const codec::OwnedTensor& t : pulled.tensors) merged += t.data.size();
  ASSERT_GT(merged, 0u);
  const Server::Memory m = server_->MemoryUsage();
  EXPECT_EQ(m.cache_bytes, merged);
  EXPECT_LT(m.store.block_cache_pinned_bytes, 4096u);  // RocksDB's own entries, no record
  EXPECT_LE(m.store.block_cache_bytes, storage::StoreOptions().block_cache_bytes +
                                           storage::StoreOptions().record_cache_bytes);
}

TEST(LimitMallocArenasTest, RefusesLessThanOneArena) {
  EXPECT_FALSE(LimitMallocArenas(0));
  EXPECT_FALSE(LimitMallocArenas(-1));
}

// glibc takes the server's limit (in a fresh process: the setting is process-wide).
TEST(LimitMallocArenasTest, GlibcTakesTheServersLimit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(LimitMallocArenas(kServerMallocArenas) ? 0 : 1),
              ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace deltaserve::server::testing
