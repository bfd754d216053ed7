#include "common/file.h"

#include <filesystem>
#include <fstream>

#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(FileTest, ReadFileToStringReadsBytesAndNamesMissingFiles) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("a.bin");
  std::ofstream(path, std::ios::binary) << std::string("ab\0c", 4);
  absl::StatusOr<std::string> text = ReadFileToString(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, std::string("ab\0c", 4));
  EXPECT_THAT(ReadFileToString(tmp.File("missing")).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
  EXPECT_THAT(ReadFileToString(tmp.path().string()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
}

TEST(FileTest, AtomicFileWriterLeavesNothingWithoutCommit) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("out.bin");
  {
    auto w = AtomicFileWriter::Open(path);
    ASSERT_TRUE(w.ok()) << w.status();
    const uint8_t bytes[] = {1, 2, 3};
    ASSERT_TRUE((*w)->Append(bytes).ok());
    EXPECT_EQ((*w)->size(), 3u);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto w = AtomicFileWriter::Open(path);
  ASSERT_TRUE(w.ok());
  const uint8_t bytes[] = {9, 8};
  ASSERT_TRUE((*w)->Append(bytes).ok());
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ(*ReadFileToString(path), std::string("\x09\x08"));
}

TEST(FileTest, AtomicFileWriterPlacesPiecesWhereAsked) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("placed.bin");
  auto w = AtomicFileWriter::Open(path);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Reserve(8).ok());
  EXPECT_EQ(std::filesystem::file_size(path + ".tmp"), 8u);
  const uint8_t tail[] = {7, 8};
  const uint8_t head[] = {1, 2, 3};
  ASSERT_TRUE((*w)->WriteAt(6, tail).ok());  // out of order
  ASSERT_TRUE((*w)->WriteAt(0, head).ok());
  EXPECT_EQ((*w)->size(), 0u);  // WriteAt does not append
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ(*ReadFileToString(path), std::string("\x01\x02\x03\0\0\0\x07\x08", 8));
  EXPECT_THAT((*w)->WriteAt(0, head), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*w)->Reserve(4), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(FileTest, ContainedRelativePaths) {
  EXPECT_TRUE(IsContainedRelativePath("shard-1.bin"));
  EXPECT_TRUE(IsContainedRelativePath("sub/dir/x"));
  EXPECT_FALSE(IsContainedRelativePath(""));
  EXPECT_FALSE(IsContainedRelativePath("/etc/passwd"));
  EXPECT_FALSE(IsContainedRelativePath("a/../../b"));
}

TEST(StatusTest, AnnotateKeepsCodeAndPrefixesMessage) {
  EXPECT_THAT(Annotate(absl::NotFoundError("cannot open x"), "TLS key"),
              StatusIs(absl::StatusCode::kNotFound, "TLS key: cannot open x"));
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ignored").ok());
}

}  // namespace
}  // namespace deltaserve::common
