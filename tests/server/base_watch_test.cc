// BaseWatch (server/internal/base_watch.h): in-place writes, truncation and rewrites of
// a mapped file are reported (by inotify, and by the periodic check alone); reads,
// metadata changes whose bytes verify, and a replacement by rename are not. Every wait
// is for a condition (a report, or checks that began after the action), never a fixed
// time.
#include "server/internal/base_watch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "common/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace deltaserve::server::internal {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::deltaserve::testing::WaitUntil;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr size_t kFileBytes = 4096;

// Writes `bytes` to `path` and sets its mtime (and atime) back to 2020, so that any
// later write moves mtime whatever the clock's tick.
void WriteOldFile(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  ASSERT_EQ(std::fclose(f), 0);
  const timespec times[2] = {{1577836800, 0}, {1577836800, 0}};  // 2020-01-01
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

void WriteInPlace(const std::string& path, off_t offset, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), offset),
            static_cast<ssize_t>(bytes.size()));
  ASSERT_EQ(::close(fd), 0);
}

// chmods `path` back and forth until its ctime differs from `was` (the clock's tick
// decides how many tries that takes).
void MoveCtime(const std::string& path, int64_t was) {
  ASSERT_TRUE(WaitUntil([&] {
    ::chmod(path.c_str(), 0600);
    ::chmod(path.c_str(), 0644);
    absl::StatusOr<common::FileStamp> now = common::StampOf(path);
    return now.ok() && now->ctime_ns != was;
  }));
}

class BaseWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = tmp_.File("base.safetensors");
    WriteOldFile(path_, std::string(kFileBytes, 'a'));
    absl::StatusOr<std::unique_ptr<common::MappedFile>> mapped = common::MappedFile::Open(path_);
    ASSERT_THAT(mapped, IsOk());
    mapped_ = std::move(*mapped);
  }

  BaseWatch::Options Options(bool inotify, absl::Duration interval) {
    BaseWatch::Options o;
    o.files = {mapped_.get()};
    o.use_inotify = inotify;
    o.interval = interval;
    o.on_change = [this](const absl::Status& s) {
      ++changes_;
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
    };
    return o;
  }

  deltaserve::testing::ScopedTempDir tmp_;
  std::string path_;
  std::unique_ptr<common::MappedFile> mapped_;
  std::atomic<int> changes_{0};
};

// With inotify, a write is seen at once: the periodic check (an hour) never runs.
TEST_F(BaseWatchTest, InPlaceWriteIsReportedByInotify) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch,
                       BaseWatch::Start(Options(/*inotify=*/true, absl::Hours(1))));
  if (!watch->inotify()) GTEST_SKIP() << "no inotify on " << path_;
  EXPECT_THAT(watch->status(), IsOk());
  WriteInPlace(path_, 100, "b");
  ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
  EXPECT_THAT(watch->status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(path_), HasSubstr("changed while mapped (--base-mapped)"),
                             HasSubstr("IN_MODIFY"), HasSubstr("restart"))));
  EXPECT_EQ(changes_.load(), 1);
  // What the watch exists for: the mapping shows the new byte.
  EXPECT_EQ(mapped_->bytes()[100], 'b');
}

// Without inotify (file systems that lack it), the periodic fstat finds a truncation.
// The mapping's lost pages are not touched here (SIGBUS).
TEST_F(BaseWatchTest, TruncationIsFoundByThePeriodicCheckAlone) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch,
                       BaseWatch::Start(Options(/*inotify=*/false, absl::Milliseconds(10))));
  EXPECT_FALSE(watch->inotify());
  ASSERT_EQ(::truncate(path_.c_str(), 8), 0);
  ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
  EXPECT_THAT(watch->status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(path_), HasSubstr("size 4096 -> 8 bytes"),
                             HasSubstr("SIGBUS"))));
  EXPECT_EQ(changes_.load(), 1);
}

// A rewrite of the same size moves mtime, which the periodic check compares.
TEST_F(BaseWatchTest, SameSizeRewriteIsFoundByMtimeWithoutInotify) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch,
                       BaseWatch::Start(Options(/*inotify=*/false, absl::Milliseconds(10))));
  WriteInPlace(path_, 0, std::string(kFileBytes, 'c'));
  ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
  EXPECT_THAT(watch->status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("modified (mtime 2020-01-01T00:00:00")));
}

// ctime alone moved and the bytes differ from the start's (a write whose mtime was set
// back): `verify` says so, and that is a change.
TEST_F(BaseWatchTest, CtimeChangeWhoseBytesDoNotVerifyIsAChange) {
  BaseWatch::Options o = Options(/*inotify=*/false, absl::Milliseconds(10));
  o.verify = [] { return false; };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch, BaseWatch::Start(std::move(o)));
  MoveCtime(path_, mapped_->stamp().ctime_ns);
  ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
  EXPECT_THAT(watch->status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("the bytes differ from those hashed at start")));
}

// No false positives: reads through a descriptor and through the mapping (atime),
// chmod (ctime; the bytes verify), and a replacement by rename (the mapped inode keeps
// its bytes) report no change, with inotify and a 10 ms check both running. Each step
// waits for two checks that began after it.
TEST_F(BaseWatchTest, ReadsMetadataAndReplacementReportNoChange) {
  std::atomic<int> verified{0};
  BaseWatch::Options o = Options(/*inotify=*/true, absl::Milliseconds(10));
  o.verify = [&] {
    ++verified;
    return true;
  };
  std::atomic<int> replaced{0};
  o.on_replaced = [&] { ++replaced; };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch, BaseWatch::Start(std::move(o)));
  auto two_more_checks = [&] {
    const uint64_t from = watch->checks();
    return WaitUntil([&] { return watch->checks() >= from + 2; });
  };

  std::string read(kFileBytes, '\0');
  const int fd = ::open(path_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::read(fd, read.data(), read.size()), static_cast<ssize_t>(kFileBytes));
  ASSERT_EQ(::close(fd), 0);
  uint64_t sum = 0;
  for (uint8_t b : mapped_->bytes()) sum += b;
  EXPECT_EQ(sum, uint64_t{'a'} * kFileBytes);
  ASSERT_TRUE(two_more_checks());
  EXPECT_THAT(watch->status(), IsOk());
  EXPECT_EQ(verified.load(), 0);  // a read moves no stamp field

  MoveCtime(path_, mapped_->stamp().ctime_ns);
  ASSERT_TRUE(WaitUntil([&] { return verified.load() >= 1; }));
  ASSERT_TRUE(two_more_checks());
  EXPECT_THAT(watch->status(), IsOk());
  // The verified ctime became the baseline: no hashing on every check.
  const int after_chmod = verified.load();
  ASSERT_TRUE(two_more_checks());
  EXPECT_EQ(verified.load(), after_chmod);

  const std::string next = tmp_.File("next.safetensors");
  WriteOldFile(next, std::string(kFileBytes, 'n'));
  ASSERT_EQ(std::rename(next.c_str(), path_.c_str()), 0);
  ASSERT_TRUE(WaitUntil([&] { return watch->replaced() == 1; }));
  ASSERT_TRUE(two_more_checks());
  EXPECT_THAT(watch->status(), IsOk());
  EXPECT_FALSE(watch->changed());
  EXPECT_EQ(replaced.load(), 1);
  EXPECT_EQ(changes_.load(), 0);
  EXPECT_EQ(mapped_->bytes()[0], 'a');  // the old inode's bytes, still mapped
}

// A sharded base: every shard is watched, and the report names the one that changed.
TEST_F(BaseWatchTest, TheChangedShardIsNamed) {
  const std::string second = tmp_.File("shard-2.safetensors");
  WriteOldFile(second, std::string(kFileBytes, 's'));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<common::MappedFile> mapped2,
                       common::MappedFile::Open(second));
  BaseWatch::Options o = Options(/*inotify=*/false, absl::Milliseconds(10));
  o.files.push_back(mapped2.get());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch, BaseWatch::Start(std::move(o)));
  WriteInPlace(second, 5, "x");
  ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
  EXPECT_THAT(watch->status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        AllOf(HasSubstr(second), Not(HasSubstr(path_)))));
  EXPECT_EQ(changes_.load(), 1);
}

// Files held as a private copy cannot change under the reader: nothing to watch.
TEST_F(BaseWatchTest, CopiedFilesAreNotWatched) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<common::MappedFile> copy,
                       common::MappedFile::Open(path_, common::MappedFile::Residency::kCopy));
  BaseWatch::Options o = Options(/*inotify=*/false, absl::Milliseconds(10));
  o.files = {copy.get()};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<BaseWatch> watch, BaseWatch::Start(std::move(o)));
  ASSERT_EQ(::truncate(path_.c_str(), 8), 0);
  const uint64_t from = watch->checks();
  ASSERT_TRUE(WaitUntil([&] { return watch->checks() >= from + 2; }));
  EXPECT_THAT(watch->status(), IsOk());
  EXPECT_EQ(copy->bytes().size(), kFileBytes);
}

}  // namespace
}  // namespace deltaserve::server::internal
