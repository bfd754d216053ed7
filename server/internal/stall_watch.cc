#include "server/internal/stall_watch.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace deltaserve::server::internal {

absl::Status StalledStreamError(std::string_view what, absl::Duration timeout) {
  return absl::DeadlineExceededError(
      absl::StrCat(std::string(what), ": the client read nothing for ",
                   absl::FormatDuration(timeout), " (--write-timeout-seconds)"));
}

std::shared_ptr<StallWatch::Stream> StallWatch::Add(std::function<void()> on_timeout) {
  auto stream = std::make_shared<Stream>();
  stream->on_timeout_ = std::move(on_timeout);
  absl::MutexLock lock(&mu_);
  streams_.insert(stream);
  return stream;
}

void StallWatch::Remove(const std::shared_ptr<Stream>& stream) {
  {
    absl::MutexLock lock(&mu_);
    streams_.erase(stream);
  }
  std::lock_guard<std::recursive_mutex> lock(stream->mu_);
  stream->alive_ = false;
}

int StallWatch::Scan(absl::Duration stalled_after, absl::Duration timeout) {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    streams.assign(streams_.begin(), streams_.end());
  }
  const int64_t now = absl::GetCurrentTimeNanos();
  int stalled = 0;
  for (const std::shared_ptr<Stream>& s : streams) {
    const int64_t since = s->write_since_ns_.load();
    if (since == 0) continue;
    const absl::Duration waited = absl::Nanoseconds(now - since);
    if (waited > stalled_after) ++stalled;
    if (timeout > absl::ZeroDuration() && waited > timeout) {
      std::lock_guard<std::recursive_mutex> lock(s->mu_);
      if (s->alive_ && !s->fired_) {
        s->fired_ = true;
        s->on_timeout_();
      }
    }
  }
  return stalled;
}

}  // namespace deltaserve::server::internal
