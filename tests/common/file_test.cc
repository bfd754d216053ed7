#include "common/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/status_macros.h"
#include "common/tmp_files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// New-user trial: an fsync that failed with EIO during pull --out-dir surfaced as
// UNKNOWN (absl's code for EIO). The project's one mapping makes it DATA_LOSS and keeps
// absl's codes for the rest.
TEST(FileTest, ErrnoStatusMapsIoErrorsToDataLoss) {
  EXPECT_THAT(common::ErrnoStatus(EIO, "cannot fsync x.tmp"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("cannot fsync x.tmp")));
  EXPECT_THAT(common::ErrnoStatus(ENOSPC, "w"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(common::ErrnoStatus(EFBIG, "w"), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(common::ErrnoStatus(ENOENT, "w"), StatusIs(absl::StatusCode::kNotFound));
}

// Staged files appear only at Publish, in the order added; destroyed unpublished, they
// leave the directory as it was.
TEST(FileTest, StagedFilesAppearOnlyWhenPublished) {
  ScopedTempDir tmp;
  const std::string dir = tmp.path().string();
  ASSERT_THAT(common::WriteFileAtomically(dir + "/a", {absl::MakeConstSpan(
                                                          reinterpret_cast<const uint8_t*>("old"), 3)}),
              ::deltaserve::testing::IsOk());
  auto count = [&] {
    return std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator());
  };
  {
    auto staged = common::StagedFiles::Create(dir);
    ASSERT_THAT(staged, ::deltaserve::testing::IsOk());
    ASSERT_THAT(common::WriteFileAtomically((*staged)->Add("a"),
                                            {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>("new"), 3)}),
                ::deltaserve::testing::IsOk());
    EXPECT_EQ(*common::ReadFileToString(dir + "/a"), "old");
  }
  EXPECT_EQ(count(), 1);  // the staging directory went with it
  EXPECT_EQ(*common::ReadFileToString(dir + "/a"), "old");
  auto staged = common::StagedFiles::Create(dir);
  ASSERT_THAT(staged, ::deltaserve::testing::IsOk());
  for (const char* name : {"a", "b.tmp", "b"}) {
    ASSERT_THAT(common::WriteFileAtomically((*staged)->Add(name),
                                            {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(name), 1)}),
                ::deltaserve::testing::IsOk());
  }
  ASSERT_THAT((*staged)->Publish(), ::deltaserve::testing::IsOk());
  EXPECT_EQ(*common::ReadFileToString(dir + "/a"), "a");
  EXPECT_EQ(*common::ReadFileToString(dir + "/b.tmp"), "b");  // not clobbered by b's writer
  EXPECT_EQ(*common::ReadFileToString(dir + "/b"), "b");
  staged->reset();
  EXPECT_EQ(count(), 3);
}

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

// kCopy: the bytes are read at Open, so later writes and truncation of the file (which
// a mapping would show, or answer with SIGBUS) change nothing.
TEST(FileTest, CopiedFileKeepsItsBytesWhenTheFileChanges) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("base.bin");
  std::string original(3 * 4096 + 17, '\0');
  for (size_t i = 0; i < original.size(); ++i) original[i] = static_cast<char>(i * 7);
  std::ofstream(path, std::ios::binary) << original;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MappedFile> copy,
                       MappedFile::Open(path, MappedFile::Residency::kCopy));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  std::ofstream(path, std::ios::binary | std::ios::in | std::ios::out)
      << std::string(original.size(), 'x');  // rewritten in place, same size
  auto text = [](const MappedFile& f) {
    return std::string(reinterpret_cast<const char*>(f.bytes().data()), f.size());
  };
  EXPECT_EQ(text(*copy), original);
  EXPECT_EQ(text(*mapped), std::string(original.size(), 'x'));  // what kCopy avoids
  mapped.reset();
  ASSERT_EQ(::truncate(path.c_str(), 10), 0);
  EXPECT_EQ(text(*copy), original);
  // An empty file, and a missing one.
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MappedFile> empty,
                       MappedFile::Open(path, MappedFile::Residency::kCopy));
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_THAT(MappedFile::Open(tmp.File("missing"), MappedFile::Residency::kCopy).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
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

// New-user trial: `--out` naming a FIFO hung (the .tmp beside it opened fine, but a
// FIFO at the .tmp path blocked in open(2)), and the final rename replaced the FIFO
// (as root, `--out /dev/null` would replace /dev/null with the model). Now every
// writer refuses such an output up front, naming it.
TEST(FileTest, WritersRefuseAFifoOrADeviceAsTheOutput) {
  ::alarm(60);  // a writer that blocks on the FIFO fails the test instead of hanging it
  ScopedTempDir tmp;
  const std::string fifo = tmp.File("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string want = "cannot write " + fifo +
                           ": it is a FIFO (named pipe), not a regular file (an output is "
                           "written to " + fifo + ".tmp and renamed over its path, which would "
                           "replace it)";
  EXPECT_THAT(AtomicFileWriter::Open(fifo).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, want));
  EXPECT_THAT(DirectFileWriter::Open(fifo).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, want));
  EXPECT_THAT(CheckOutputFilePath(fifo, ""), StatusIs(absl::StatusCode::kInvalidArgument, want));
  EXPECT_THAT(WriteFileAtomically(fifo, {}), StatusIs(absl::StatusCode::kInvalidArgument, want));
  struct stat st;
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));  // still the FIFO, not replaced
  EXPECT_FALSE(std::filesystem::exists(fifo + ".tmp"));

  // A FIFO where the .tmp file goes: open(2) for writing would wait for a reader.
  const std::string out = tmp.File("model.safetensors");
  ASSERT_EQ(::mkfifo((out + ".tmp").c_str(), 0600), 0);
  const std::string want_tmp = "cannot write " + out + ": " + out +
                               ".tmp, where it is written first, is a FIFO (named pipe); remove "
                               "it or choose another path";
  EXPECT_THAT(AtomicFileWriter::Open(out).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, want_tmp));
  EXPECT_THAT(DirectFileWriter::Open(out).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, want_tmp));
  EXPECT_THAT(CheckOutputFilePath(out, ""), StatusIs(absl::StatusCode::kInvalidArgument, want_tmp));
  ASSERT_EQ(::stat((out + ".tmp").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));  // not removed: it is not the writer's

  // A character device (what `--out /dev/null` names).
  EXPECT_THAT(CheckOutputFilePath("/dev/null", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot write /dev/null: it is a character device, not a "
                                 "regular file")));
  EXPECT_THAT(AtomicFileWriter::Open("/dev/null").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a character device")));
  EXPECT_FALSE(std::filesystem::exists("/dev/null.tmp"));
  // A regular file is still replaced as before.
  EXPECT_THAT(WriteFileAtomically(tmp.File("plain"), {}), StatusIs(absl::StatusCode::kOk));
  ::alarm(0);
}

TEST(StatusTest, AnnotateKeepsCodeAndPrefixesMessage) {
  EXPECT_THAT(Annotate(absl::NotFoundError("cannot open x"), "TLS key"),
              StatusIs(absl::StatusCode::kNotFound, "TLS key: cannot open x"));
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ignored").ok());
}

}  // namespace
}  // namespace deltaserve::common
