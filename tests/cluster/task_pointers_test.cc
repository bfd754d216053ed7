#include "cluster/task_pointers.h"

#include <unistd.h>

#include <functional>
#include <string>
#include <tuple>
#include <vector>

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
                     .merged_bytes = 4000,
                     .metadata = {},
                     .side_files = {}};
}

// A collection's delete_blob that records the digests in `out`.
std::function<absl::Status(const std::string&)> RecordDeleted(std::vector<std::string>* out) {
  return [out](const std::string& digest) {
    out->push_back(digest);
    return absl::OkStatus();
  };
}

// A fresh etcd namespace per test (prefix with the pid and test name).
std::string Prefix() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return "test-" + std::to_string(::getpid()) + "-" + info->name() + "/";
}

TEST(TaskPointerTest, EncodeDecodeRoundTrip) {
  TaskPointer p = MakePointer('a', 123);
  ASSERT_OK_AND_ASSIGN(std::string text, EncodePointer(p));
  ASSERT_OK_AND_ASSIGN(TaskPointer back, DecodePointer(text, "k"));
  EXPECT_EQ(back, p);
  // The listing fields are optional.
  ASSERT_OK_AND_ASSIGN(TaskPointer minimal,
                       DecodePointer(R"({"digest":")" + std::string(64, 'b') +
                                         R"(","size":5,"base_hash":"ab","created":7})",
                                     "k"));
  EXPECT_EQ(minimal.size, 5u);
  EXPECT_EQ(minimal.num_tensors, 0u);
}

// A pointer with the header metadata and side files.
TaskPointer WithSideFiles(char digit) {
  TaskPointer p = MakePointer(digit, 50);
  p.metadata = {{"codec", "dct"}, {"tool", "deltactl 1"}};
  // One by one: the braced temporaries of a list drew GCC 12's false -Wrestrict and
  // -Wmaybe-uninitialized.
  for (const auto& [name, size, xxh3, hex] :
       {std::tuple{"config.json", 23u, 0x0123456789abcdefull, 'e'},
        std::tuple{"empty.txt", 0u, 0x2d06800538d394c2ull, 'f'}}) {
    SideFileRef& ref = p.side_files.emplace_back();
    ref.file.name = name;
    ref.file.bytes = size;
    ref.file.xxh3_64 = xxh3;
    ref.digest = std::string(64, hex);
  }
  return p;
}

TEST(TaskPointerTest, MetadataAndSideFilesRoundTrip) {
  TaskPointer p = WithSideFiles('a');
  ASSERT_OK_AND_ASSIGN(std::string text, EncodePointer(p));
  EXPECT_THAT(text, HasSubstr(R"("xxh3_64":"0123456789abcdef")"));
  ASSERT_OK_AND_ASSIGN(TaskPointer back, DecodePointer(text, "k"));
  EXPECT_EQ(back, p);
  EXPECT_EQ(back.StoredBytes(), 50u + 23u);
  EXPECT_THAT(back.Digests(), ::testing::ElementsAre(std::string(64, 'a'), std::string(64, 'e'),
                                                     std::string(64, 'f')));
  // Content: the container and the side files; not the push time or the listing fields.
  TaskPointer later = p;
  later.created_unix += 10;
  later.metadata.clear();
  EXPECT_TRUE(later.SameContent(p));
  TaskPointer other_config = p;
  other_config.side_files[0].digest = std::string(64, 'd');
  EXPECT_FALSE(other_config.SameContent(p));
  TaskPointer fewer = p;
  fewer.side_files.pop_back();
  EXPECT_FALSE(fewer.SameContent(p));
}

TEST(TaskPointerTest, BadSideFilesAndHugeMetadataAreRefused) {
  const std::string head =
      R"({"digest":")" + std::string(64, 'b') + R"(","size":5,"base_hash":"ab","created":7,)";
  EXPECT_THAT(DecodePointer(head + R"("side_files":{}})", "k").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("side_files is not an array")));
  EXPECT_THAT(DecodePointer(head + R"("side_files":[{"name":"a","bytes":1,"xxh3_64":"12",)" +
                                R"("digest":")" + std::string(64, 'c') + R"("}]})",
                            "k")
                  .status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("16 hex digits")));
  EXPECT_THAT(DecodePointer(head + R"("side_files":[{"name":"a","bytes":1,)" +
                                R"("xxh3_64":"0000000000000001","digest":"zz"}]})",
                            "k")
                  .status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("64 lowercase hex")));
  EXPECT_THAT(DecodePointer(head + R"("metadata":{"a":1}})", "k").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("metadata value")));
  TaskPointer huge = MakePointer('a', 1);
  huge.metadata["blob"] = std::string(kMaxPointerBytes, 'x');
  EXPECT_THAT(EncodePointer(huge).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metadata is too large")));
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
  auto del = RecordDeleted(&deleted);
  int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_EQ(ptrs.CollectGarbage(now, 3600, del).value_or(-1), 0);  // within grace
  EXPECT_TRUE(deleted.empty());
  EXPECT_EQ(ptrs.CollectGarbage(now + 3600, 3600, del).value_or(-1), 1);
  EXPECT_THAT(deleted, ::testing::ElementsAre(std::string(64, 'a')));
  EXPECT_EQ(ptrs.CollectGarbage(now + 7200, 3600, del).value_or(-1), 0);  // marks gone
}

// Side-file blobs are kept alive by any pointer naming them: a replace marks only the
// blobs the new pointer drops, a delete marks all of the task's, and a collection spares
// a side file another task still names (a config.json shared by many tasks).
TEST(TaskPointersLiveTest, SideFileBlobsAreCollectedWhenNoPointerNamesThem) {
  DS_SKIP_WITHOUT_CLUSTER();
  EtcdClient etcd(testing::Env("ETCD_ENDPOINT"));
  TaskPointers ptrs(&etcd, Prefix());
  TaskPointer a = WithSideFiles('a');   // side blobs e, f
  TaskPointer b = MakePointer('b', 1);  // shares e
  b.side_files = {a.side_files[0]};
  ASSERT_THAT(ptrs.Create({"t", "a"}, a, false).status(), IsOk());
  ASSERT_THAT(ptrs.Create({"t", "b"}, b, false).status(), IsOk());
  // The same container with one side file less: replaced, not unchanged; f is marked.
  TaskPointer a2 = a;
  a2.side_files.pop_back();
  EXPECT_EQ(ptrs.Create({"t", "a"}, a2, true).value_or(static_cast<PointerOutcome>(99)),
            PointerOutcome::kReplaced);
  std::vector<std::string> deleted;
  auto del = RecordDeleted(&deleted);
  int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_EQ(ptrs.CollectGarbage(now, 3600, del).value_or(-1), 0);  // within grace
  EXPECT_EQ(ptrs.CollectGarbage(now + 3600, 3600, del).value_or(-1), 1);
  EXPECT_THAT(deleted, ::testing::ElementsAre(std::string(64, 'f')));
  // Deleting a marks a and e; e is still named by b.
  deleted.clear();
  ASSERT_THAT(ptrs.Delete({"t", "a"}), IsOk());
  EXPECT_EQ(ptrs.CollectGarbage(now + 7200, 3600, del).value_or(-1), 1);
  EXPECT_THAT(deleted, ::testing::ElementsAre(std::string(64, 'a')));
  deleted.clear();
  ASSERT_THAT(ptrs.Delete({"t", "b"}), IsOk());
  EXPECT_EQ(ptrs.CollectGarbage(now + 10800, 3600, del).value_or(-1), 2);
  EXPECT_THAT(deleted, ::testing::UnorderedElementsAre(std::string(64, 'b'), std::string(64, 'e')));
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
