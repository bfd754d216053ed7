#include "storage/side_files.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/key_schema.h"
#include "storage/store.h"
#include "tests/storage/test_containers.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::storage {
namespace {

using ::deltaserve::storage::testing::MakeContainer;
using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(SideFileNameTest, AcceptsCheckpointNames) {
  for (const char* name : {"config.json", "tokenizer.json", "merges.txt", ".gitattributes",
                           "tokenizer.model", "vocab ü.txt", "README.md"}) {
    EXPECT_THAT(ValidateSideFileName(name), IsOk()) << name;
  }
}

TEST(SideFileNameTest, RefusesPathsAndBadText) {
  for (std::string name :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b.json"),
        std::string("../config.json"), std::string("a\\b"), std::string("x\ny"),
        std::string("nul\0x", 5), std::string("bad\xff.json"), std::string(256, 'a'),
        std::string("model.safetensors"), std::string("model.safetensors.index.json")}) {
    EXPECT_THAT(ValidateSideFileName(name),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("side file '")))
        << name;
  }
}

TEST(SideFileLimitsTest, SizeCountAndDuplicates) {
  const uint64_t big = kMaxSideFileBytes + 1;
  EXPECT_THAT(ValidateSideFiles({{"tokenizer.json", big, 0}}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("side file 'tokenizer.json'"),
                             HasSubstr(std::to_string(big) + " bytes"),
                             HasSubstr("per file"))));
  EXPECT_THAT(ValidateSideFiles({{"a", kMaxSideFileBytes, 0},
                                 {"b", kMaxSideFileBytes, 0},
                                 {"c", 1, 0}}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("per task")));
  EXPECT_THAT(ValidateSideFiles({{"a", kMaxSideFileBytes, 0}, {"b", kMaxSideFileBytes, 0}}),
              IsOk());
  std::vector<SideFileEntry> many(kMaxSideFiles + 1);
  for (size_t i = 0; i < many.size(); ++i) many[i].name = "f" + std::to_string(i);
  EXPECT_THAT(ValidateSideFiles(many), StatusIs(absl::StatusCode::kResourceExhausted,
                                                HasSubstr("65 side files")));
  EXPECT_THAT(ValidateSideFiles({{"a", 1, 0}, {"a", 2, 0}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears twice")));
}

class SideFileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.path = (tmp_.path() / "db").string();
    options_.sync_writes = false;
    ASSERT_OK_AND_ASSIGN(store_, DeltaStore::Open(options_));
  }
  void TearDown() override { store_.reset(); }
  absl::StatusOr<TaskInfo> Commit(const std::string& task, const std::vector<uint8_t>& bytes,
                                  const std::vector<SideFile>& files, bool overwrite = false,
                                  uint64_t quota = 0, CommitOutcome* outcome = nullptr) {
    absl::StatusOr<codec::ContainerReader> reader = codec::ContainerReader::Parse(bytes);
    if (!reader.ok()) return reader.status();
    CommitOptions opts;
    opts.overwrite = overwrite;
    opts.quota_bytes = quota;
    opts.side_files = files;
    return store_->CommitTask("acme", task, *reader, opts, outcome);
  }

  ::deltaserve::testing::ScopedTempDir tmp_;
  StoreOptions options_;
  std::unique_ptr<DeltaStore> store_;
  const std::vector<uint8_t> container_ = MakeContainer({{"w0", {4, 8}, 1}}, 7);
  const std::string config_ = R"({"model_type": "qwen2", "hidden_size": 896})";
  const std::string tokenizer_ = std::string("tok\0en\xff", 7);
};

TEST_F(SideFileStoreTest, RoundTripListedAndCountedInQuota) {
  ASSERT_OK_AND_ASSIGN(
      TaskInfo info,
      Commit("chat", container_, {{"config.json", config_}, {"tokenizer.json", tokenizer_}}));
  const std::vector<SideFileEntry> want = {
      {"config.json", config_.size(), SideFileChecksum(config_)},
      {"tokenizer.json", 7, SideFileChecksum(tokenizer_)}};
  EXPECT_EQ(info.side_files, want);
  EXPECT_EQ(info.StoredBytes(), container_.size() + config_.size() + 7);
  EXPECT_EQ(info.total_bytes, container_.size());
  store_.reset();  // survives a reopen
  ASSERT_OK_AND_ASSIGN(store_, DeltaStore::Open(options_));
  ASSERT_OK_AND_ASSIGN(TaskInfo got, store_->GetTask("acme", "chat"));
  EXPECT_EQ(got.side_files, want);
  ASSERT_OK_AND_ASSIGN(std::vector<TaskInfo> listed, store_->ListTasks("acme"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].side_files, want);
  ASSERT_OK_AND_ASSIGN(std::string config, store_->ReadSideFile("acme", "chat", "config.json"));
  EXPECT_EQ(config, config_);
  ASSERT_OK_AND_ASSIGN(std::string tok, store_->ReadSideFile("acme", "chat", "tokenizer.json"));
  EXPECT_EQ(tok, tokenizer_);
  EXPECT_THAT(store_->ReadSideFile("acme", "chat", "vocab.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no side file 'vocab.json'")));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, container_.size() + config_.size() + 7);
  // The container is unchanged by its side files.
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> back, store_->AssembleContainer("acme", "chat"));
  EXPECT_EQ(back, container_);
}

TEST_F(SideFileStoreTest, QuotaCountsSideFiles) {
  const std::string big(1000, 'x');
  const uint64_t quota = container_.size() + 999;
  EXPECT_THAT(Commit("chat", container_, {{"tokenizer.json", big}}, false, quota),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota")));
  EXPECT_THAT(store_->GetTask("acme", "chat"), StatusIs(absl::StatusCode::kNotFound));
  CommitOptions check;
  check.quota_bytes = quota;
  EXPECT_THAT(store_->CheckCommit("acme", "chat", container_.size() + 1000, check),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(Commit("chat", container_, {{"tokenizer.json", big.substr(1)}}, false, quota),
              IsOk());
}

TEST_F(SideFileStoreTest, RefusedNamesAndSizesStoreNothing) {
  EXPECT_THAT(Commit("chat", container_, {{"../config.json", config_}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("task 'chat'"), HasSubstr("side file '../config.json'"))));
  const std::string huge(kMaxSideFileBytes + 1, 'x');
  EXPECT_THAT(Commit("chat", container_, {{"tokenizer.json", huge}}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("side file 'tokenizer.json'"),
                             HasSubstr(std::to_string(huge.size()) + " bytes"))));
  EXPECT_THAT(store_->GetTask("acme", "chat"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SideFileStoreTest, OverwriteReplacesAndDeleteRemoves) {
  CommitOutcome outcome;
  ASSERT_THAT(Commit("chat", container_, {{"config.json", config_}, {"a.txt", "a"}}), IsOk());
  // The identical push again: unchanged. Other side files without overwrite: refused.
  ASSERT_THAT(Commit("chat", container_, {{"config.json", config_}, {"a.txt", "a"}}, false, 0,
                     &outcome),
              IsOk());
  EXPECT_EQ(outcome, CommitOutcome::kUnchanged);
  EXPECT_THAT(Commit("chat", container_, {{"config.json", "{}"}}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_THAT(Commit("chat", container_, {{"config.json", "{}"}}, true, 0, &outcome), IsOk());
  EXPECT_EQ(outcome, CommitOutcome::kReplaced);
  ASSERT_OK_AND_ASSIGN(std::string config, store_->ReadSideFile("acme", "chat", "config.json"));
  EXPECT_EQ(config, "{}");
  EXPECT_THAT(store_->ReadSideFile("acme", "chat", "a.txt"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(TenantUsage usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, container_.size() + 2);

  ASSERT_THAT(store_->DeleteTask("acme", "chat"), IsOk());
  ASSERT_OK_AND_ASSIGN(usage, store_->GetTenantUsage("acme"));
  EXPECT_EQ(usage.bytes, 0u);
  store_.reset();
  // No value of the task is left in the raw database.
  const ::deltaserve::storage::testing::RawStore raw(options_.path);
  ASSERT_TRUE(raw.ok());
  EXPECT_FALSE(raw.RecordsHas(SideFileKey("acme", "chat", "config.json")));
  EXPECT_FALSE(raw.RecordsHas(SideFileKey("acme", "chat", "a.txt")));
}

TEST(SideFileMetaTest, VersionOneWithoutTwoWithSideFilesThreeWithContentHash) {
  TaskInfo info;
  info.tensors.push_back(TensorEntry{"w", codec::DType::kF16, {2, 2}, codec::Encoding::kRaw, 9});
  std::string v1 = EncodeTaskMeta(info);
  EXPECT_EQ(v1[4], 1);  // version after the 4-byte magic
  ASSERT_OK_AND_ASSIGN(TaskInfo back1, DecodeTaskMeta(v1, "t", "k"));
  EXPECT_THAT(back1.side_files, IsEmpty());
  info.side_files = {{"config.json", 12, 0x1234}, {"merges.txt", 0, 0x99}};
  std::string v2 = EncodeTaskMeta(info);
  EXPECT_EQ(v2[4], 2);
  ASSERT_OK_AND_ASSIGN(TaskInfo back2, DecodeTaskMeta(v2, "t", "k"));
  EXPECT_THAT(back2.side_files, ElementsAre(SideFileEntry{"config.json", 12, 0x1234},
                                            SideFileEntry{"merges.txt", 0, 0x99}));
  EXPECT_EQ(back2.tensors, info.tensors);
  EXPECT_EQ(back2.container_xxh3_64, std::nullopt);
  // Version 3 (every commit since session 10): the container's content hash, with or
  // without side files.
  for (bool with_files : {false, true}) {
    info.side_files = with_files ? back2.side_files : std::vector<SideFileEntry>{};
    info.container_xxh3_64 = 0x0123456789abcdefULL;
    const std::string v3 = EncodeTaskMeta(info);
    EXPECT_EQ(v3[4], 3);
    ASSERT_OK_AND_ASSIGN(TaskInfo back3, DecodeTaskMeta(v3, "t", "k"));
    EXPECT_EQ(back3.container_xxh3_64, 0x0123456789abcdefULL);
    EXPECT_EQ(back3.side_files, info.side_files);
    EXPECT_EQ(back3.tensors, info.tensors);
  }
}

}  // namespace
}  // namespace deltaserve::storage
