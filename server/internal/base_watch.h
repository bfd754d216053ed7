// BaseWatch: with --base-mapped, notices that a mapped base file changed under the
// daemon, so that it stops serving weights merged from bytes other than those hashed at
// start (server/CONFIG.md "Base residency").
//
// Why: a mapped file's pages follow the file. Rewritten in place, the daemon would merge
// from the new bytes while the stream's checksums, computed from the same bytes, still
// pass; truncated, a read of a lost page raises SIGBUS. A file replaced by rename (or
// removed) is harmless: the mapping keeps the old inode and its bytes.
//
// How: every watched file is kept open (one descriptor each, on the mapped inode, even
// after a rename or unlink) and checked two ways:
//   - inotify (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF) on
//     the path, for prompt notice. IN_MODIFY (a write or truncation) is a change by
//     itself; the others trigger a check;
//   - a check every `interval` regardless (file systems without inotify, e.g. NFS
//     written from another host; writes through another process's shared mapping, which
//     raise no inotify event but move mtime).
// A check fstat()s the kept descriptor and compares with the stamp at open
// (common::FileStamp): another size or mtime is a change; another ctime alone (chmod,
// chown, a link, a rename over the path, utimensat) is ambiguous, and `verify` decides
// (deltaserved re-hashes the base: same hash = no change, and the new ctime becomes the
// baseline). Reads (atime) move none of these: the daemon's own reads never report.
// The path is stat()ed too: when it names another file now (replaced or removed) that
// is logged once as a warning and counted, but serving goes on.
//
// A change is final: status() is FailedPrecondition from then on (restart to load the
// file again); before that, one error line is logged and `on_change` runs once on the
// watch's thread.
//
// Limits (documented in server/CONFIG.md): the notice comes after the write (inotify:
// milliseconds; the poll: up to `interval`); merges that ran in between used the new
// bytes. Without inotify, a same-size rewrite within one clock tick of the stamp (a few
// ms) moves neither mtime nor ctime. Truncation can still raise SIGBUS in a merge that
// reads a lost page before the notice. A read lease (fcntl F_SETLEASE F_RDLCK) would
// give notice before an open for writing or a truncation, but only to the file's owner
// or a holder of CAP_LEASE, and it only delays the writer (/proc/sys/fs/lease-break-time,
// 45 s by default), so it is not taken.
//
// Thread safety: thread-safe. One thread of its own.
#ifndef DELTASERVE_SERVER_INTERNAL_BASE_WATCH_H_
#define DELTASERVE_SERVER_INTERNAL_BASE_WATCH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/file.h"

namespace deltaserve::server::internal {

class BaseWatch {
 public:
  struct Options {
    // The mapped files (codec::ModelReader::files()); they outlive the watch. Files
    // held as a private copy (common::MappedFile::Residency::kCopy) are skipped.
    std::vector<const common::MappedFile*> files;
    // Check every file this often, inotify or not. Default: 1 s.
    absl::Duration interval = absl::Seconds(1);
    // Watch with inotify as well (false: the periodic check alone; tests). Default: true.
    bool use_inotify = true;
    // Decides an ambiguous change (ctime moved, size and mtime did not): true if the
    // bytes are still those of the start. Runs on the watch's thread. Null: such a
    // change counts as a change.
    std::function<bool()> verify;
    // Runs once, on the watch's thread, with what status() will be when a change is
    // found, before changed() turns true.
    std::function<void(const absl::Status&)> on_change;
    // Runs after every completed check (all files), on the watch's thread (metrics).
    std::function<void()> on_check;
    // Runs once per file found replaced or removed (path names another file or none).
    std::function<void()> on_replaced;
  };

  // Opens every kMap file again and checks that it is still the file that was mapped
  // (same device and inode): if it is not, the file was replaced between the mapping and
  // now, which is logged as a replacement; the mapped inode is then not watched (that
  // window is the start's). Starts the thread. Errors: errno-derived from open/fstat,
  // naming the file; Unavailable if the thread's wake-up pipe cannot be made. No inotify
  // (ENOSYS, out of watches, a file system without it) is not an error: the periodic
  // check remains (logged).
  static absl::StatusOr<std::unique_ptr<BaseWatch>> Start(Options options);
  ~BaseWatch();  // stops the thread, closes the descriptors
  BaseWatch(const BaseWatch&) = delete;
  BaseWatch& operator=(const BaseWatch&) = delete;

  // OK while every file is as it was mapped; from the first change on, for good,
  // FailedPrecondition naming the file and what changed, e.g. "base file
  // /m/model.safetensors changed while mapped (--base-mapped): size 4096 -> 0 bytes;
  // ... restart deltaserved".
  absl::Status status() const;
  bool changed() const { return changed_.load(std::memory_order_acquire); }
  // Checks completed since start (each covers every file). For tests that must know a
  // check ran after something they did.
  uint64_t checks() const { return checks_.load(std::memory_order_acquire); }
  // Whether inotify watches are in place (false: the periodic check alone).
  bool inotify() const { return inotify_fd_ >= 0; }
  // Files whose path no longer names the mapped file.
  int replaced() const { return replaced_.load(std::memory_order_acquire); }

 private:
  struct File {
    const common::MappedFile* mapped = nullptr;
    int fd = -1;  // the mapped inode, kept open
    int wd = -1;  // inotify watch descriptor, -1 if none
    common::FileStamp baseline;  // stamp at open; ctime moves on a verified change
    bool replaced = false;
  };

  explicit BaseWatch(Options options);
  void Loop();
  // Compares every file with its baseline; reports a change or a replacement.
  void CheckAll();
  // What changed in `f` (empty: nothing that alters its bytes).
  std::string Compare(File& f);
  void ReportChange(const File& f, const std::string& what);

  Options options_;
  std::vector<File> files_;
  int inotify_fd_ = -1;
  int wake_[2] = {-1, -1};  // pipe: the destructor wakes the thread

  std::atomic<bool> changed_{false};
  std::atomic<uint64_t> checks_{0};
  std::atomic<int> replaced_{0};
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_BASE_WATCH_H_
