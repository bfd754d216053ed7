// StallWatch: finds streams whose client stopped reading. A streaming reactor marks
// when a write starts and when it completes; a periodic Scan (the server's housekeeping
// thread) counts the streams whose write has waited longer than `stalled_after`
// (deltaserve_streams_stalled) and ends those waiting longer than `timeout` through
// their on_timeout callback (the reactor cancels its call with StalledStreamError,
// CancelCallWithStatus in call.h: the only way to free a write that flow control holds,
// and the client sees that status). StreamWeights and StreamDelta register.
//
// Thread safety: every method is thread-safe. WriteStarted/WriteDone are lock-free (a
// reactor may call them under its own mutex). on_timeout runs on the scanning thread,
// at most once, and never after Remove() has returned.
#ifndef DELTASERVE_SERVER_INTERNAL_STALL_WATCH_H_
#define DELTASERVE_SERVER_INTERNAL_STALL_WATCH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string_view>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace deltaserve::server::internal {

// DeadlineExceeded "<what>: the client read nothing for <timeout> (write timeout)":
// how a stream ended by its on_timeout is counted and logged.
absl::Status StalledStreamError(std::string_view what, absl::Duration timeout);

class StallWatch {
 public:
  class Stream {
   public:
    void WriteStarted() { write_since_ns_.store(absl::GetCurrentTimeNanos()); }
    void WriteDone() { write_since_ns_.store(0); }

   private:
    friend class StallWatch;
    std::atomic<int64_t> write_since_ns_{0};  // 0: no write waiting
    // Recursive: on_timeout may cancel the call, and gRPC may run the reactor's OnDone
    // (which calls Remove) inline on the same thread.
    std::recursive_mutex mu_;
    bool alive_ = true;
    bool fired_ = false;
    std::function<void()> on_timeout_;
  };

  std::shared_ptr<Stream> Add(std::function<void()> on_timeout);
  // After it returns, on_timeout is not running and will not run.
  void Remove(const std::shared_ptr<Stream>& stream);
  // Returns the streams whose write has waited longer than `stalled_after`; calls
  // on_timeout of those waiting longer than `timeout` (zero: never).
  int Scan(absl::Duration stalled_after, absl::Duration timeout);

 private:
  absl::Mutex mu_;
  std::set<std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_STALL_WATCH_H_
