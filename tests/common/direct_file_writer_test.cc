#include <signal.h>
#include <sys/resource.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::ScopedTempDir;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

// Opens a DirectFileWriter for `path`, or skips the test where the file system refuses
// O_DIRECT (the writer's callers fall back to AtomicFileWriter there).
#define OPEN_DIRECT_OR_SKIP(writer, path)                                         \
  absl::StatusOr<std::unique_ptr<DirectFileWriter>> writer = DirectFileWriter::Open(path); \
  if (absl::IsUnimplemented(writer.status())) GTEST_SKIP() << writer.status();   \
  ASSERT_TRUE(writer.ok()) << writer.status()

uint8_t Pattern(uint64_t at) { return static_cast<uint8_t>(at * 2654435761u >> 13); }

TEST(DirectFileWriterTest, TheFileHoldsEveryReservedByteAcrossBlockEdges) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("out.bin");
  OPEN_DIRECT_OR_SKIP(w, path);
  // Pieces that start and end inside blocks, span several, are empty, and end exactly
  // on a block edge, then a last partial block.
  const std::vector<size_t> sizes = {10, 4086, 0, 5000, (size_t{1} << 20) + 3, 1, 4095, 7};
  uint64_t at = 0;
  for (size_t n : sizes) {
    absl::StatusOr<absl::Span<uint8_t>> span = (*w)->Reserve(n);
    ASSERT_TRUE(span.ok()) << span.status();
    ASSERT_EQ(span->size(), n);
    for (size_t i = 0; i < n; ++i) (*span)[i] = Pattern(at + i);
    at += n;
  }
  const uint8_t tail[] = {9, 8, 7};
  ASSERT_TRUE((*w)->Append(tail).ok());
  EXPECT_EQ((*w)->size(), at + 3);
  EXPECT_FALSE(std::filesystem::exists(path));  // only the .tmp file until Commit
  ASSERT_TRUE((*w)->Commit().ok());
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), at + 3);  // the padding of the last block is cut off
  for (uint64_t i = 0; i < at; ++i) {
    ASSERT_EQ(static_cast<uint8_t>((*bytes)[i]), Pattern(i)) << "byte " << i;
  }
  EXPECT_EQ(bytes->substr(at), std::string("\x09\x08\x07", 3));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THAT((*w)->Reserve(1).status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*w)->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(DirectFileWriterTest, AWholeBlockFileAndAnEmptyFile) {
  ScopedTempDir tmp;
  for (size_t n : {size_t{0}, DirectFileWriter::kDirectAlign, 3 * DirectFileWriter::kDirectAlign}) {
    const std::string path = tmp.File(absl::StrCat("f", n));
    OPEN_DIRECT_OR_SKIP(w, path);
    ASSERT_TRUE((*w)->Append(std::vector<uint8_t>(n, 0x5a)).ok());
    ASSERT_TRUE((*w)->Commit().ok());
    absl::StatusOr<std::string> bytes = ReadFileToString(path);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, std::string(n, 0x5a));
  }
}

TEST(DirectFileWriterTest, LeavesNothingWithoutCommit) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("out.bin");
  {
    OPEN_DIRECT_OR_SKIP(w, path);
    ASSERT_TRUE((*w)->Append(std::vector<uint8_t>(10000, 1)).ok());
    ASSERT_TRUE((*w)->Reserve(1).ok());  // the first two blocks are on disk now
    EXPECT_TRUE(std::filesystem::exists(path + ".tmp"));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// A write past the file size limit (RLIMIT_FSIZE, as a full disk would be for ENOSPC)
// comes back as a status naming the file; the writer does not crash and leaves nothing.
TEST(DirectFileWriterTest, AWriteOverTheFileSizeLimitIsAStatus) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("big.bin");
  OPEN_DIRECT_OR_SKIP(w, path);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  struct sigaction ignore {}, was {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &was), 0);  // EFBIG instead of the signal
  rlimit small = old;
  small.rlim_cur = 8192;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  ASSERT_TRUE((*w)->Append(std::vector<uint8_t>(100000, 3)).ok());  // staged only
  absl::Status s = (*w)->Commit();
  setrlimit(RLIMIT_FSIZE, &old);
  sigaction(SIGXFSZ, &was, nullptr);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("big.bin.tmp")));
  w->reset();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(DirectFileWriterTest, AMissingDirectoryIsNotFound) {
  ScopedTempDir tmp;
  EXPECT_THAT(DirectFileWriter::Open(tmp.File("no/such/dir/out.bin")).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("out.bin.tmp")));
}

}  // namespace
}  // namespace deltaserve::common
