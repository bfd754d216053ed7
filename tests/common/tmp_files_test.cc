#include "common/tmp_files.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "common/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace deltaserve::common {
namespace {

namespace fs = std::filesystem;
using ::deltaserve::testing::ScopedTempDir;

// Runs `child` in a forked process and returns its wait status. The child never
// returns into the test: it ends by a signal or by _exit.
template <typename Fn>
int RunInChild(Fn child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    child();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Ctrl-C in the middle of a write used to leave `out.tmp` behind (deltactl pull
// reserves the whole output first: 1 GB for the stream_bench model).
TEST(TmpFilesTest, SigintRemovesOpenTmpFilesAndKillsTheProcess) {
  ScopedTempDir tmp;
  const std::string open_path = tmp.File("open.bin"), done_path = tmp.File("done.bin");
  const int status = RunInChild([&] {
    RemoveTmpFilesOnSignals();
    auto done = AtomicFileWriter::Open(done_path);
    const uint8_t bytes[] = {1, 2, 3};
    if (!done.ok() || !(*done)->Append(bytes).ok() || !(*done)->Commit().ok()) ::_exit(3);
    auto open = AtomicFileWriter::Open(open_path);
    if (!open.ok() || !(*open)->Reserve(1 << 20).ok()) ::_exit(4);
    ::raise(SIGINT);
    ::_exit(5);  // not reached: the default action of SIGINT ends the process
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_FALSE(fs::exists(open_path + ".tmp"));
  EXPECT_FALSE(fs::exists(open_path));
  EXPECT_EQ(fs::file_size(done_path), 3u);  // a committed file stays
  EXPECT_FALSE(fs::exists(done_path + ".tmp"));
}

TEST(TmpFilesTest, UntrackedFilesStayAndSigtermAlsoCleansUp) {
  ScopedTempDir tmp;
  const std::string mine = tmp.File("mine.tmp"), other = tmp.File("other.tmp");
  std::ofstream(mine) << "x";
  std::ofstream(other) << "y";
  const int status = RunInChild([&] {
    RemoveTmpFilesOnSignals();
    TrackTmpFile(mine);
    TrackTmpFile(other);
    UntrackTmpFile(other);
    ::raise(SIGTERM);
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_FALSE(fs::exists(mine));
  EXPECT_EQ(ReadText(other), "y");
}

// `nohup` or a background job of a script starts the tool with SIGINT ignored: it
// must stay ignored.
TEST(TmpFilesTest, AnIgnoredSignalStaysIgnored) {
  const int status = RunInChild([] {
    ::signal(SIGINT, SIG_IGN);
    RemoveTmpFilesOnSignals();
    ::raise(SIGINT);
    ::_exit(7);
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 7);
}

// Under `ulimit -f`, a write past the limit used to kill the process with SIGXFSZ
// (exit status 153, no message, the .tmp file left).
TEST(TmpFilesTest, FileSizeLimitIsAnErrorNotADeath) {
  ScopedTempDir tmp;
  const std::string path = tmp.File("big.bin"), message = tmp.File("message.txt");
  const int status = RunInChild([&] {
    RemoveTmpFilesOnSignals();
    const rlimit limit{4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    absl::Status s;
    {
      auto w = AtomicFileWriter::Open(path);
      if (!w.ok()) ::_exit(4);
      const std::string bytes(8192, 'z');
      s = (*w)->Append(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    std::ofstream(message) << s.ToString();
  });
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(ReadText(message), "OUT_OF_RANGE: cannot write " + path + ".tmp: File too large");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}


// New-user trial: a failed `pull --out-dir a/b` or `decompress --out-dir` left the
// directories it made (and the shards written so far) behind. ScopedOutputDir removes
// what it made, everything in it, and nothing that was there before.
TEST(ScopedOutputDirTest, RemovesTheDirectoriesItMadeUnlessKept) {
  ScopedTempDir tmp;
  const std::string top = tmp.File("made"), dir = top + "/nested/out";
  {
    auto out = ScopedOutputDir::Create(dir);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE((*out)->created());
    EXPECT_TRUE(fs::is_directory(dir));
    std::ofstream(dir + "/model-00001-of-00002.safetensors") << "shard";
    fs::create_directory(dir + "/sub");
    std::ofstream(dir + "/sub/x") << "x";
  }
  EXPECT_FALSE(fs::exists(top));
  EXPECT_TRUE(fs::is_directory(tmp.path()));

  // A directory that was there stays, with what it held.
  const std::string there = tmp.File("there");
  fs::create_directory(there);
  std::ofstream(there + "/keep.txt") << "mine";
  {
    auto out = ScopedOutputDir::Create(there + "/");
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_FALSE((*out)->created());
    std::ofstream(there + "/partial") << "p";
  }
  EXPECT_EQ(ReadText(there + "/keep.txt"), "mine");

  // Kept: stays.
  {
    auto out = ScopedOutputDir::Create(top);
    ASSERT_TRUE(out.ok()) << out.status();
    std::ofstream(top + "/model.safetensors.index.json") << "{}";
    (*out)->Keep();
  }
  EXPECT_EQ(ReadText(top + "/model.safetensors.index.json"), "{}");

  // A file in the way: an error naming the directory, nothing made.
  const std::string file = tmp.File("file");
  std::ofstream(file) << "f";
  auto blocked = ScopedOutputDir::Create(file + "/sub");
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kFailedPrecondition)
      << blocked.status();
  EXPECT_THAT(std::string(blocked.status().message()),
              ::testing::StartsWith("cannot create directory " + file + "/sub: "));
  EXPECT_EQ(ReadText(file), "f");
}

// Ctrl-C or SIGTERM while a pull writes into a directory it made: no destructor runs;
// the signal handler removes the directories (innermost first), with their files.
TEST(ScopedOutputDirTest, SignalRemovesTheDirectoriesItMade) {
  for (int sig : {SIGINT, SIGTERM}) {
    ScopedTempDir tmp;
    const std::string top = tmp.File("made"), dir = top + "/a/b";
    const std::string there = tmp.File("there");
    fs::create_directory(there);
    const int status = RunInChild([&] {
      RemoveTmpFilesOnSignals();
      auto out = ScopedOutputDir::Create(dir);
      auto existing = ScopedOutputDir::Create(there);
      if (!out.ok() || !existing.ok()) ::_exit(3);
      std::ofstream(dir + "/model-00001-of-00001.safetensors") << "shard";
      std::ofstream(top + "/a/side.json") << "{}";
      std::ofstream(there + "/keep.txt") << "mine";
      auto open = AtomicFileWriter::Open(dir + "/model.safetensors.index.json");
      if (!open.ok() || !(*open)->Reserve(1 << 16).ok()) ::_exit(4);
      ::raise(sig);
      ::_exit(5);
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_FALSE(fs::exists(top)) << sig;
    EXPECT_EQ(ReadText(there + "/keep.txt"), "mine");
  }
}

}  // namespace
}  // namespace deltaserve::common
