#include "cluster/task_pointers.h"

#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster/live_env.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::cluster {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TaskPointer MakePointer(char digit, uint64_t size) {
  return TaskPointer{.digest = std::string(64, digit),
                     .size = size,
                     .base_hash = "00ff",
                     .created_unix = 1700000000,
                     .num_tensors = 3,
                     .weights = 1000,
                     .merged_bytes = 4000};
}

// A fresh etcd namespace per test (prefix with the pid and test name).
std::string Prefix() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return "test-" + std::to_string(::getpid()) + "-" + info->name() + "/";
}

TEST(TaskPointerTest, EncodeDecodeRoundTrip) {
  TaskPointer p = MakePointer('a', 123);
  ASSERT_OK_AND_ASSIGN(TaskPointer back, DecodePointer(EncodePointer(p), "k"));
  EXPECT_EQ(back, p);
  // The listing fields are optional.
  ASSERT_OK_AND_ASSIGN(TaskPointer minimal,
                       DecodePointer(R"({"digest":")" + std::string(64, 'b') +
                                         R"(","size":5,"base_hash":"ab","created":7})",
                                     "k"));
  EXPECT_EQ(minimal.size, 5u);
  EXPECT_EQ(minimal.num_tensors, 0u);
}

TEST(TaskPointerTest, BadPointersAreDataLoss) {
  EXPECT_THAT(DecodePointer("{", "tasks/t/a").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tasks/t/a")));
  EXPECT_THAT(
      DecodePointer(R"({"digest":"xyz","size":5,"base_hash":"","created":7})", "k").status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("64 lowercase hex")));
  EXPECT_THAT(DecodePointer(R"({"digest":")" + std::string(64, 'b') +
                                R"(","size":-5,"base_hash":"","created":7})",
                            "k")
                  .status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));
}

TEST(TaskPointerTest, KeysSplitBack) {
  EtcdClient etcd("http://127.0.0.1:9");
  TaskPointers ptrs(&etcd, "ds/");
  TaskName name{"acme", "sum-v2"};
  EXPECT_EQ(ptrs.Key(name), "ds/tasks/acme/sum-v2");
  EXPECT_EQ(ptrs.ParseKey("ds/tasks/acme/sum-v2"), name);
  EXPECT_EQ(ptrs.ParseKey("ds/gc/abc"), std::nullopt);
  EXPECT_EQ(ptrs.ParseKey("ds/tasks/acme"), std::nullopt);
  EXPECT_EQ(PrefixEnd("ds/"), "ds0");
}

TEST(TaskPointersLiveTest, CreateOnlyUnlessOverwrite) {
  DS_SKIP_WITHOUT_CLUSTER();
  EtcdClient etcd(testing::Env("ETCD_ENDPOINT"));
  TaskPointers ptrs(&etcd, Prefix());
  TaskName name{"acme", "t1"};
  EXPECT_THAT(ptrs.Get(name).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(
      ptrs.Create(name, MakePointer('a', 10), false).value_or(static_cast<PointerOutcome>(99)),
      PointerOutcome::kCreated);
  // The same blob again: unchanged, with or without overwrite.
  EXPECT_EQ(
      ptrs.Create(name, MakePointer('a', 10), false).value_or(static_cast<PointerOutcome>(99)),
      PointerOutcome::kUnchanged);
  EXPECT_THAT(ptrs.Create(name, MakePointer('b', 20), false).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("overwrite")));
  ASSERT_OK_AND_ASSIGN(TaskPointer still, ptrs.Get(name));
  EXPECT_EQ(still.digest, std::string(64, 'a'));
  EXPECT_EQ(ptrs.Create(name, MakePointer('b', 20), true).value_or(static_cast<PointerOutcome>(99)),
            PointerOutcome::kReplaced);
  ASSERT_OK_AND_ASSIGN(TaskPointer now, ptrs.Get(name));
  EXPECT_EQ(now, MakePointer('b', 20));
  ASSERT_THAT(ptrs.Create({"acme", "t0"}, MakePointer('c', 1), false).status(), IsOk());
  ASSERT_THAT(ptrs.Create({"other", "t9"}, MakePointer('d', 1), false).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(auto acme, ptrs.List("acme"));
  ASSERT_EQ(acme.size(), 2u);
  EXPECT_EQ(acme[0].first.task, "t0");
  EXPECT_EQ(acme[1].first.task, "t1");
  ASSERT_OK_AND_ASSIGN(auto all, ptrs.List(""));
  EXPECT_EQ(all.size(), 3u);
  ASSERT_THAT(ptrs.Delete(name), IsOk());
  EXPECT_THAT(ptrs.Delete(name), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ptrs.Get(name).status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST(TaskPointersLiveTest, GarbageIsCollectedOnlyAfterGraceAndWhenUnreferenced) {
  DS_SKIP_WITHOUT_CLUSTER();
  EtcdClient etcd(testing::Env("ETCD_ENDPOINT"));
  TaskPointers ptrs(&etcd, Prefix());
  ASSERT_THAT(ptrs.Create({"t", "a"}, MakePointer('a', 1), false).status(), IsOk());
  ASSERT_THAT(ptrs.Create({"t", "b"}, MakePointer('b', 1), false).status(), IsOk());
  ASSERT_THAT(ptrs.Create({"t", "a"}, MakePointer('c', 1), true).status(), IsOk());    // a: marked
  ASSERT_THAT(ptrs.Delete({"t", "b"}), IsOk());                                        // b: marked
  ASSERT_THAT(ptrs.Create({"t", "b2"}, MakePointer('b', 1), false).status(), IsOk());  // b lives
  std::vector<std::string> deleted;
  auto del = [&](const std::string& d) {
    deleted.push_back(d);
    return absl::OkStatus();
  };
  int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_EQ(ptrs.CollectGarbage(now, 3600, del).value_or(-1), 0);  // within grace
  EXPECT_TRUE(deleted.empty());
  EXPECT_EQ(ptrs.CollectGarbage(now + 3600, 3600, del).value_or(-1), 1);
  EXPECT_THAT(deleted, ::testing::ElementsAre(std::string(64, 'a')));
  EXPECT_EQ(ptrs.CollectGarbage(now + 7200, 3600, del).value_or(-1), 0);  // marks gone
}

TEST(EtcdClientLiveTest, WatchSeesPutsAndDeletesInOrder) {
  DS_SKIP_WITHOUT_CLUSTER();
  EtcdClient etcd(testing::Env("ETCD_ENDPOINT"));
  std::string prefix = Prefix();
  ASSERT_OK_AND_ASSIGN(int64_t rev, etcd.Put(prefix + "k1", "v1"));
  ASSERT_THAT(etcd.Put(prefix + "k2", "v2").status(), IsOk());
  ASSERT_THAT(etcd.Delete(prefix + "k1").status(), IsOk());
  std::vector<std::string> seen;
  std::atomic<bool> stop{false};
  absl::Status s = etcd.Watch(
      prefix, rev,
      [&](const std::vector<WatchEvent>& events) {
        for (const WatchEvent& e : events) {
          seen.push_back((e.type == WatchEvent::Type::kDelete ? "del " : "put ") +
                         e.kv.key.substr(prefix.size()) + "=" + e.kv.value);
        }
        return seen.size() < 3;
      },
      stop);
  EXPECT_THAT(s, IsOk());
  EXPECT_THAT(seen, ::testing::ElementsAre("put k1=v1", "put k2=v2", "del k1="));
}

}  // namespace
}  // namespace deltaserve::cluster
