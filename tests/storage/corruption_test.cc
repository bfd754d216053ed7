// Faults injected into the raw database (through a second RocksDB handle opened after
// the store is closed, using the key schema of storage/key_schema.h).
#include "storage/store.h"

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/key_schema.h"
#include "tests/storage/test_containers.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::storage {
namespace {

using ::deltaserve::storage::testing::MakeContainer;
using ::deltaserve::storage::testing::TestTensor;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path() / "db";
    options_.path = dir_.string();
    options_.sync_writes = false;
    a_ = MakeContainer({{"w0", {8, 8}, 1}, {"w1", {64}, 2}, {"w2", {4}, 3}}, 1);
    b_ = MakeContainer({{"v0", {16, 4}, 4}}, 2);
    auto store = DeltaStore::Open(options_);
    ASSERT_THAT(store, IsOk());
    for (auto [task, bytes] : {std::pair{"a", &a_}, std::pair{"b", &b_}}) {
      ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(*bytes));
      ASSERT_THAT((*store)->CommitTask("acme", task, reader), IsOk());
    }
  }

  // Opens the raw database (the store must be closed), runs `edit` on it, closes it.
  void EditRaw(const std::function<void(rocksdb::DB*, rocksdb::ColumnFamilyHandle* meta,
                                        rocksdb::ColumnFamilyHandle* records)>& edit) {
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {kDefaultColumnFamily, rocksdb::ColumnFamilyOptions()},
        {kRecordsColumnFamily, rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir_.string(), cfs, &handles, &db).ok());
    edit(db, handles[0], handles[1]);
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }
  std::string Get(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, const std::string& key) {
    std::string value;
    EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), cf, key, &value).ok()) << key;
    return value;
  }
  std::unique_ptr<DeltaStore> Open() {
    auto store = DeltaStore::Open(options_);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? *std::move(store) : nullptr;
  }

  ::deltaserve::testing::ScopedTempDir tmp_;
  std::filesystem::path dir_;
  StoreOptions options_;
  std::vector<uint8_t> a_, b_;
};

TEST_F(CorruptionTest, FlippedRecordByteIsDataLossNamingTensor) {
  EditRaw([&](rocksdb::DB* db, auto*, rocksdb::ColumnFamilyHandle* records) {
    std::string value = Get(db, records, RecordKey("acme", "a", 1));
    value[value.size() / 2] ^= 0x01;  // same size, payload byte flipped
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), records, RecordKey("acme", "a", 1), value).ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ReadRecord("acme", "a", 1),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("tenant 'acme'"), HasSubstr("task 'a'"),
                             HasSubstr("tensor 'w1'"))));
  EXPECT_THAT(store->ReadRecordByName("acme", "a", "w1"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->AssembleContainer("acme", "a"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tensor 'w1'")));
  // The task's other records and meta, and the other task, stay readable.
  EXPECT_THAT(store->ReadRecord("acme", "a", 0), IsOk());
  EXPECT_THAT(store->ReadRecord("acme", "a", 2), IsOk());
  EXPECT_THAT(store->GetTask("acme", "a"), IsOk());
  ASSERT_OK_AND_ASSIGN(auto b, store->AssembleContainer("acme", "b"));
  EXPECT_EQ(b, b_);
  // Overwriting repairs the task.
  ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(a_));
  CommitOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_THAT(store->CommitTask("acme", "a", reader, overwrite), IsOk());
  ASSERT_OK_AND_ASSIGN(auto a, store->AssembleContainer("acme", "a"));
  EXPECT_EQ(a, a_);
}

TEST_F(CorruptionTest, TruncatedOrMissingRecordIsDataLoss) {
  EditRaw([&](rocksdb::DB* db, auto*, rocksdb::ColumnFamilyHandle* records) {
    std::string value = Get(db, records, RecordKey("acme", "a", 0));
    value.resize(value.size() - 3);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), records, RecordKey("acme", "a", 0), value).ok());
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), records, RecordKey("acme", "a", 2)).ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ReadRecord("acme", "a", 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tensor 'w0'")));
  EXPECT_THAT(store->ReadRecord("acme", "a", 2),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("tensor 'w2'"),
                                                          HasSubstr("missing"))));
  EXPECT_THAT(store->ReadRecord("acme", "a", 1), IsOk());
  EXPECT_THAT(store->ReadRecord("acme", "b", 0), IsOk());
}

TEST_F(CorruptionTest, CorruptSideFileIsDataLossNamingFile) {
  const std::string config = R"({"model_type": "qwen2"})";
  const std::vector<SideFile> files = {
      {"config.json", config}, {"merges.txt", "a b"}, {"vocab.json", "{}"}};
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_OK_AND_ASSIGN(auto reader, codec::ContainerReader::Parse(a_));
    CommitOptions opts;
    opts.overwrite = true;
    opts.side_files = files;
    ASSERT_THAT(store->CommitTask("acme", "a", reader, opts), IsOk());
  }
  EditRaw([&](rocksdb::DB* db, auto*, rocksdb::ColumnFamilyHandle* records) {
    std::string value = Get(db, records, SideFileKey("acme", "a", "config.json"));
    value[3] ^= 0x20;  // same size, one byte flipped
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), records, SideFileKey("acme", "a", "config.json"),
                        value).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), records, SideFileKey("acme", "a", "merges.txt"),
                        "a").ok());
    ASSERT_TRUE(
        db->Delete(rocksdb::WriteOptions(), records, SideFileKey("acme", "a", "vocab.json")).ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ReadSideFile("acme", "a", "config.json"),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("task 'a'"), HasSubstr("side file 'config.json'"),
                             HasSubstr("checksum mismatch"))));
  EXPECT_THAT(store->ReadSideFile("acme", "a", "merges.txt"),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("side file 'merges.txt'"), HasSubstr("stored 1 bytes"))));
  EXPECT_THAT(store->ReadSideFile("acme", "a", "vocab.json"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("missing")));
  // The task's container stays readable.
  ASSERT_OK_AND_ASSIGN(auto a, store->AssembleContainer("acme", "a"));
  EXPECT_EQ(a, a_);
}

TEST_F(CorruptionTest, RecordOfAnotherTensorIsDataLoss) {
  EditRaw([&](rocksdb::DB* db, auto*, rocksdb::ColumnFamilyHandle* records) {
    // w0 and v0 records have the same size (64 F32 each): a swap keeps sizes right.
    std::string v0 = Get(db, records, RecordKey("acme", "b", 0));
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), records, RecordKey("acme", "a", 0), v0).ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ReadRecord("acme", "a", 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is of tensor 'v0'")));
}

TEST_F(CorruptionTest, CorruptMetaIsDataLossAndOtherTasksReadable) {
  EditRaw([&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta, auto*) {
    std::string value = Get(db, meta, TaskMetaKey("acme", "a"));
    value[10] ^= 0x40;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), meta, TaskMetaKey("acme", "a"), value).ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->GetTask("acme", "a"),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("task 'a'"), HasSubstr("checksum mismatch"))));
  EXPECT_THAT(store->ReadRecord("acme", "a", 0), StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_OK_AND_ASSIGN(auto b, store->AssembleContainer("acme", "b"));
  EXPECT_EQ(b, b_);
}

TEST_F(CorruptionTest, CorruptHeaderSizeIsDataLoss) {
  EditRaw([&](rocksdb::DB* db, auto*, rocksdb::ColumnFamilyHandle* records) {
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), records, HeaderKey("acme", "a"), "short").ok());
  });
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->ReadHeaderBytes("acme", "a"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header")));
  EXPECT_THAT(store->ReadHeaderBytes("acme", "b"), IsOk());
}

}  // namespace
}  // namespace deltaserve::storage
