#include "storage/internal/spare_fds.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"

namespace deltaserve::storage {
namespace {

using rocksdb::FileOptions;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;

class SpareFdFileSystem : public rocksdb::FileSystemWrapper {
 public:
  SpareFdFileSystem(std::shared_ptr<rocksdb::FileSystem> base, int spares)
      : FileSystemWrapper(std::move(base)), wanted_(spares) {
    absl::MutexLock lock(&mu_);
    RefillLocked();
  }
  ~SpareFdFileSystem() override {
    for (int fd : spares_) close(fd);
  }

  const char* Name() const override { return "SpareFdFileSystem"; }

  IOStatus NewSequentialFile(const std::string& f, const FileOptions& o,
                             std::unique_ptr<rocksdb::FSSequentialFile>* r,
                             IODebugContext* dbg) override {
    return WithSpare([&] { return target()->NewSequentialFile(f, o, r, dbg); });
  }
  IOStatus NewRandomAccessFile(const std::string& f, const FileOptions& o,
                               std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                               IODebugContext* dbg) override {
    return WithSpare([&] { return target()->NewRandomAccessFile(f, o, r, dbg); });
  }
  IOStatus NewWritableFile(const std::string& f, const FileOptions& o,
                           std::unique_ptr<rocksdb::FSWritableFile>* r,
                           IODebugContext* dbg) override {
    return WithSpare([&] { return target()->NewWritableFile(f, o, r, dbg); });
  }
  IOStatus ReopenWritableFile(const std::string& f, const FileOptions& o,
                              std::unique_ptr<rocksdb::FSWritableFile>* r,
                              IODebugContext* dbg) override {
    return WithSpare([&] { return target()->ReopenWritableFile(f, o, r, dbg); });
  }
  IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                             const FileOptions& o, std::unique_ptr<rocksdb::FSWritableFile>* r,
                             IODebugContext* dbg) override {
    return WithSpare([&] { return target()->ReuseWritableFile(f, old, o, r, dbg); });
  }
  IOStatus NewRandomRWFile(const std::string& f, const FileOptions& o,
                           std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                           IODebugContext* dbg) override {
    return WithSpare([&] { return target()->NewRandomRWFile(f, o, r, dbg); });
  }
  IOStatus NewDirectory(const std::string& name, const IOOptions& io,
                        std::unique_ptr<rocksdb::FSDirectory>* r, IODebugContext* dbg) override {
    return WithSpare([&] { return target()->NewDirectory(name, io, r, dbg); });
  }

 private:
  // strerror(EMFILE) is "Too many open files", strerror(ENFILE) "... in system".
  static bool OutOfDescriptors(const IOStatus& s) {
    return s.IsIOError() && absl::StrContains(s.ToString(), "Too many open files");
  }

  template <typename Open>
  IOStatus WithSpare(Open open) {
    {
      absl::MutexLock lock(&mu_);
      if (static_cast<int>(spares_.size()) < wanted_) RefillLocked();
    }
    IOStatus s = open();
    while (OutOfDescriptors(s)) {
      {
        absl::MutexLock lock(&mu_);
        if (spares_.empty()) return s;
        close(spares_.back());
        spares_.pop_back();
      }
      s = open();
    }
    return s;
  }

  void RefillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (static_cast<int>(spares_.size()) < wanted_) {
      const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return;
      spares_.push_back(fd);
    }
  }

  const int wanted_;
  absl::Mutex mu_;
  std::vector<int> spares_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<rocksdb::FileSystem> NewSpareFdFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base, int spares) {
  return std::make_shared<SpareFdFileSystem>(std::move(base), spares);
}

}  // namespace deltaserve::storage
