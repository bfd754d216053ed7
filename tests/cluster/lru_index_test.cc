#include "cluster/lru_index.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deltaserve::cluster {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(LruIndexTest, EvictsLeastRecentlyUsedByBytes) {
  LruIndex lru(100);
  EXPECT_THAT(lru.Touch("a", 40), IsEmpty());
  EXPECT_THAT(lru.Touch("b", 40), IsEmpty());
  EXPECT_THAT(lru.Touch("a", 40), IsEmpty());  // a is now the most recent
  EXPECT_THAT(lru.Touch("c", 40), ElementsAre("b"));
  EXPECT_THAT(lru.Keys(), ElementsAre("c", "a"));
  EXPECT_EQ(lru.bytes(), 80u);
  EXPECT_THAT(lru.Touch("d", 90), ElementsAre("a", "c"));
  EXPECT_EQ(lru.bytes(), 90u);
}

TEST(LruIndexTest, EntryLargerThanCapacityStaysAlone) {
  LruIndex lru(100);
  lru.Touch("a", 10);
  EXPECT_THAT(lru.Touch("big", 500), ElementsAre("a"));
  EXPECT_THAT(lru.Keys(), ElementsAre("big"));
  EXPECT_EQ(lru.bytes(), 500u);
  EXPECT_THAT(lru.Touch("b", 1), ElementsAre("big"));
}

TEST(LruIndexTest, TouchUpdatesSizeAndRemoveForgets) {
  LruIndex lru(100);
  lru.Touch("a", 10);
  lru.Touch("a", 30);
  EXPECT_EQ(lru.bytes(), 30u);
  EXPECT_EQ(lru.size(), 1u);
  lru.Remove("a");
  lru.Remove("missing");
  EXPECT_EQ(lru.bytes(), 0u);
  EXPECT_FALSE(lru.Contains("a"));
}

TEST(LruIndexTest, ZeroCapacityIsUnbounded) {
  LruIndex lru(0);
  for (int i = 0; i < 100; ++i) EXPECT_THAT(lru.Touch(std::to_string(i), 1ull << 40), IsEmpty());
  EXPECT_EQ(lru.size(), 100u);
}

}  // namespace
}  // namespace deltaserve::cluster
