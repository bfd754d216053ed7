#include "server/internal/base_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {
namespace {

constexpr uint32_t kInotifyMask =
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF;

std::string TimeText(int64_t ns) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", absl::FromUnixNanos(ns), absl::UTCTimeZone());
}

}  // namespace

BaseWatch::BaseWatch(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<BaseWatch>> BaseWatch::Start(Options options) {
  std::unique_ptr<BaseWatch> w(new BaseWatch(std::move(options)));
  for (const common::MappedFile* mapped : w->options_.files) {
    if (mapped->residency() != common::MappedFile::Residency::kMap) continue;
    File f;
    f.mapped = mapped;
    f.baseline = mapped->stamp();
    f.fd = ::open(mapped->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("base watch: cannot open ", mapped->path()));
    }
    absl::StatusOr<common::FileStamp> now = common::StampOf(f.fd, mapped->path());
    if (!now.ok()) {
      ::close(f.fd);
      return now.status();
    }
    if (!now->SameFile(f.baseline)) {
      // Replaced between the mapping and now: this descriptor is another file's.
      ::close(f.fd);
      f.fd = -1;
    }
    w->files_.push_back(f);
  }
  if (pipe2(w->wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::UnavailableError(absl::StrCat("base watch: pipe2: ", std::strerror(errno)));
  }
  if (w->options_.use_inotify && !w->files_.empty()) {
    w->inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->inotify_fd_ < 0) {
      LogWarn("base watch: no inotify; the base files are checked every interval only",
              {{"error", std::strerror(errno)},
               {"interval_s", std::to_string(absl::ToDoubleSeconds(w->options_.interval))}});
    }
    for (File& f : w->files_) {
      if (w->inotify_fd_ < 0) break;
      if (f.fd < 0) continue;  // replaced already: the path is another file's
      f.wd = inotify_add_watch(w->inotify_fd_, f.mapped->path().c_str(), kInotifyMask);
      if (f.wd < 0) {
        LogWarn("base watch: cannot watch a base file with inotify; it is checked every "
                "interval only",
                {{"path", f.mapped->path()}, {"error", std::strerror(errno)}});
      }
    }
  }
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  return w;
}

BaseWatch::~BaseWatch() {
  stop_.store(true);
  if (wake_[1] >= 0) {
    const char c = 0;
    (void)!write(wake_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (const File& f : files_) {
    if (f.fd >= 0) ::close(f.fd);
  }
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

absl::Status BaseWatch::status() const {
  if (!changed()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  return status_;
}

void BaseWatch::Loop() {
  const int timeout_ms = static_cast<int>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(options_.interval), 1, INT_MAX));
  alignas(struct inotify_event) char buf[4096];
  while (!stop_.load()) {
    // Once changed (final), nothing more is read or checked: the thread only waits for
    // the destructor (inotify events left unread must not wake it again and again).
    const bool done = changed();
    pollfd fds[2] = {{wake_[0], POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int nfds = inotify_fd_ >= 0 && !done ? 2 : 1;
    if (poll(fds, nfds, done ? -1 : timeout_ms) < 0 && errno != EINTR) {
      absl::SleepFor(absl::Milliseconds(10));  // not expected (ENOMEM); do not spin
    }
    if (stop_.load()) return;
    if (done) continue;
    if (nfds == 2 && (fds[1].revents & POLLIN) != 0) {
      ssize_t n;
      while ((n = read(inotify_fd_, buf, sizeof(buf))) > 0) {
        for (char* p = buf; p < buf + n;) {
          const auto* e = reinterpret_cast<const struct inotify_event*>(p);
          p += sizeof(struct inotify_event) + e->len;
          if ((e->mask & IN_MODIFY) == 0 || changed()) continue;
          for (const File& f : files_) {
            if (f.wd == e->wd) ReportChange(f, "written or truncated (inotify: IN_MODIFY)");
          }
        }
      }
    }
    // Every other event (attributes, a close after writing, a move, a removal) and every
    // timeout: compare the stamps.
    if (!changed()) CheckAll();
    checks_.fetch_add(1, std::memory_order_release);
    if (options_.on_check) options_.on_check();
  }
}

void BaseWatch::CheckAll() {
  for (File& f : files_) {
    if (f.fd >= 0) {
      const std::string what = Compare(f);
      if (!what.empty()) {
        ReportChange(f, what);
        return;
      }
    }
    if (f.replaced) continue;
    absl::StatusOr<common::FileStamp> at_path = common::StampOf(f.mapped->path());
    if (at_path.ok() && at_path->SameFile(f.baseline)) continue;
    f.replaced = true;
    replaced_.fetch_add(1, std::memory_order_release);
    LogWarn("base file replaced or removed: still serving the mapped bytes of the file "
            "loaded at start (they cannot change); restart deltaserved to load the new one",
            {{"path", f.mapped->path()},
             {"now", at_path.ok() ? "another file" : std::string(at_path.status().message())}});
    if (options_.on_replaced) options_.on_replaced();
  }
}

std::string BaseWatch::Compare(File& f) {
  absl::StatusOr<common::FileStamp> now = common::StampOf(f.fd, f.mapped->path());
  if (!now.ok()) return "";  // fstat of an open descriptor: not expected; the next check
  const common::FileStamp& was = f.baseline;
  if (now->size != was.size) {
    return absl::StrCat("size ", was.size, " -> ", now->size, " bytes",
                        now->size < was.size
                            ? " (truncated: a read of the lost pages raises SIGBUS)"
                            : "");
  }
  if (now->mtime_ns != was.mtime_ns) {
    return absl::StrCat("modified (mtime ", TimeText(was.mtime_ns), " -> ",
                        TimeText(now->mtime_ns), ")");
  }
  if (now->ctime_ns == was.ctime_ns) return "";
  // ctime alone: metadata (chmod, chown, a link, a rename over the path, utimensat), or a
  // write whose mtime was set back. The bytes decide.
  if (!options_.verify) {
    return absl::StrCat("status changed (ctime ", TimeText(was.ctime_ns), " -> ",
                        TimeText(now->ctime_ns), ")");
  }
  if (!options_.verify()) {
    return absl::StrCat("the bytes differ from those hashed at start (size and mtime kept; ctime ",
                        TimeText(was.ctime_ns), " -> ", TimeText(now->ctime_ns), ")");
  }
  LogInfo("base file metadata changed (ctime); its bytes are those hashed at start",
          {{"path", f.mapped->path()}, {"ctime", TimeText(now->ctime_ns)}});
  f.baseline.ctime_ns = now->ctime_ns;
  return "";
}

void BaseWatch::ReportChange(const File& f, const std::string& what) {
  if (changed()) return;  // only this thread reports: no second report can race this one
  absl::Status s = absl::FailedPreconditionError(absl::StrCat(
      "base file ", f.mapped->path(), " changed while mapped (--base-mapped): ", what,
      "; weights merged from it would not be those of the base hashed at start, so "
      "deltaserved merges nothing more: restart it to load the file again"));
  LogError("BASE CHANGED: a mapped base file changed under the daemon; health is "
           "NOT_SERVING and pulls fail with FAILED_PRECONDITION until a restart",
           {{"path", f.mapped->path()}, {"what", what}});
  // Before changed() turns true: whoever sees the change (health, a failed pull) then
  // also sees what on_change did (the metric).
  if (options_.on_change) options_.on_change(s);
  {
    absl::MutexLock lock(&mu_);
    status_ = s;
  }
  changed_.store(true, std::memory_order_release);
}

}  // namespace deltaserve::server::internal
