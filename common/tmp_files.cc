#include "common/tmp_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"

namespace deltaserve::common {
namespace {

// A fixed table, so that the signal handler only reads memory that never moves or
// frees (async-signal-safe). A slot is free (0), being written or cleared (1), or
// holds a tracked path (2): a file, or a directory when `dir` is set.
constexpr int kFree = 0, kBusy = 1, kTracked = 2;
constexpr int kSlots = 64;

struct Slot {
  std::atomic<int> state{kFree};
  bool dir = false;  // written while kBusy, published by the release store of kTracked
  char path[PATH_MAX];
};

Slot g_slots[kSlots];

void Track(const std::string& path, bool dir) {
  if (path.size() >= PATH_MAX) return;
  for (Slot& slot : g_slots) {
    int expected = kFree;
    if (slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
      std::memcpy(slot.path, path.c_str(), path.size() + 1);
      slot.dir = dir;
      slot.state.store(kTracked, std::memory_order_release);
      return;
    }
  }
}

void Untrack(const std::string& path, bool dir) {
  for (Slot& slot : g_slots) {
    if (slot.state.load(std::memory_order_acquire) != kTracked) continue;
    if (slot.dir != dir || std::strcmp(slot.path, path.c_str()) != 0) continue;
    int expected = kTracked;
    if (slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
      slot.path[0] = '\0';
      slot.state.store(kFree, std::memory_order_release);
      return;
    }
  }
}

// Empties the directory `path` (files, and subdirectories already empty) and removes
// it; true if it is gone. Async-signal-safe: raw getdents64 on a static buffer (the
// handler blocks the other handled signals, so it never runs twice at once), no
// opendir/malloc.
bool SweepDir(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ::rmdir(path) == 0;
  alignas(alignof(struct dirent64)) static char buf[8192];
  // Removing entries while reading the directory may skip some: read it again until a
  // pass removes nothing.
  for (bool removed = true; removed;) {
    removed = false;
    ::lseek(fd, 0, SEEK_SET);
    ssize_t n;
    while ((n = ::getdents64(fd, buf, sizeof buf)) > 0) {
      for (ssize_t off = 0; off < n;) {
        const auto* entry = reinterpret_cast<const struct dirent64*>(buf + off);
        off += entry->d_reclen;
        const char* name = entry->d_name;
        if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) continue;
        if (::unlinkat(fd, name, 0) == 0 || ::unlinkat(fd, name, AT_REMOVEDIR) == 0) {
          removed = true;
        }
      }
    }
  }
  ::close(fd);
  return ::rmdir(path) == 0;
}

void RemoveTrackedAndDie(int sig) {
  for (Slot& slot : g_slots) {
    // A slot cleared while we read it named a file already renamed or removed: the
    // unlink then fails with ENOENT, harmlessly.
    if (slot.state.load(std::memory_order_acquire) == kTracked && !slot.dir) {
      ::unlink(slot.path);
    }
  }
  // Directories in any order: a parent holding a tracked child is removed in a later
  // pass, once the child is gone.
  for (int pass = 0; pass < kSlots; ++pass) {
    bool progress = false;
    for (Slot& slot : g_slots) {
      if (slot.state.load(std::memory_order_acquire) == kTracked && slot.dir &&
          slot.path[0] != '\0' && SweepDir(slot.path)) {
        slot.path[0] = '\0';  // gone; the process dies with this handler
        progress = true;
      }
    }
    if (!progress) break;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when this handler returns: the default action, death
}

}  // namespace

void TrackTmpFile(const std::string& path) { Track(path, /*dir=*/false); }
void UntrackTmpFile(const std::string& path) { Untrack(path, /*dir=*/false); }
void TrackOutputDir(const std::string& dir) { Track(dir, /*dir=*/true); }
void UntrackOutputDir(const std::string& dir) { Untrack(dir, /*dir=*/true); }

void RemoveTmpFilesOnSignals() {
  struct sigaction sa {};
  sa.sa_handler = RemoveTrackedAndDie;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, sig);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    // A signal ignored by whoever started us (nohup, a background job of a script)
    // stays ignored.
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    ::sigaction(sig, &sa, nullptr);
  }
  ::signal(SIGXFSZ, SIG_IGN);
}

absl::StatusOr<std::unique_ptr<ScopedOutputDir>> ScopedOutputDir::Create(const std::string& dir) {
  namespace fs = std::filesystem;
  // "out/" names "out": without the trailing separator, parent_path() walks up.
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  // The missing directories, innermost first.
  std::vector<std::string> missing;
  std::error_code ec;
  for (fs::path q = p; !q.empty() && !fs::exists(fs::symlink_status(q, ec)); q = q.parent_path()) {
    missing.push_back(q.string());
    if (q == q.parent_path()) break;
  }
  fs::create_directories(p, ec);
  std::vector<std::string> created;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    std::error_code exists_ec;
    if (fs::is_directory(*it, exists_ec)) created.push_back(*it);
  }
  if (ec) {
    std::error_code ignored;
    for (auto it = created.rbegin(); it != created.rend(); ++it) fs::remove(*it, ignored);
    return ErrnoStatus(ec.value(), absl::StrCat("cannot create directory ", dir));
  }
  for (const std::string& d : created) TrackOutputDir(d);
  return std::unique_ptr<ScopedOutputDir>(new ScopedOutputDir(dir, std::move(created)));
}

void ScopedOutputDir::Untrack() {
  for (const std::string& d : created_) UntrackOutputDir(d);
}

void ScopedOutputDir::Keep() {
  Untrack();
  created_.clear();
}

ScopedOutputDir::~ScopedOutputDir() {
  if (created_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(created_.front(), ignored);
  Untrack();
}

absl::StatusOr<std::unique_ptr<StagedFiles>> StagedFiles::Create(const std::string& dir) {
  std::string templ = (std::filesystem::path(dir) / ".deltaserve-staging-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("cannot create a staging directory in ", dir));
  }
  TrackOutputDir(templ);
  return std::unique_ptr<StagedFiles>(new StagedFiles(dir, std::move(templ)));
}

StagedFiles::~StagedFiles() {
  std::error_code ignored;
  std::filesystem::remove_all(staging_, ignored);
  UntrackOutputDir(staging_);
}

std::string StagedFiles::Add(const std::string& name) {
  names_.push_back(name);
  return (std::filesystem::path(staging_) / std::to_string(names_.size() - 1)).string();
}

std::string StagedFiles::ScratchPath(const std::string& tag) const {
  return (std::filesystem::path(staging_) / absl::StrCat("scratch-", tag)).string();
}

absl::Status StagedFiles::Publish() {
  for (size_t i = 0; i < names_.size(); ++i) {
    const std::string from = (std::filesystem::path(staging_) / std::to_string(i)).string();
    const std::string to = (std::filesystem::path(dir_) / names_[i]).string();
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot rename ", from, " to ", to));
    }
  }
  // The renames are durable once the directory is.
  const int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open directory ", dir_));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, absl::StrCat("cannot fsync directory ", dir_));
  return absl::OkStatus();
}

}  // namespace deltaserve::common
