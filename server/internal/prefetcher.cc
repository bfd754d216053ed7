#include "server/internal/prefetcher.h"

#include <algorithm>
#include <utility>

namespace deltaserve::server::internal {

Prefetcher::Prefetcher(std::vector<uint64_t> bytes, size_t window, uint64_t min_bytes_ahead,
                       FetchFn fetch, std::function<void()> on_ready)
    : prefix_(bytes.size() + 1, 0),
      window_(std::max<size_t>(window, 1)),
      min_bytes_ahead_(min_bytes_ahead),
      fetch_(std::move(fetch)),
      on_ready_(std::move(on_ready)) {
  for (size_t i = 0; i < bytes.size(); ++i) prefix_[i + 1] = prefix_[i] + bytes[i];
}

void Prefetcher::Advance(size_t send_pos) {
  const size_t num = prefix_.size() - 1;
  while (true) {
    size_t pos;
    {
      absl::MutexLock lock(&mu_);
      if (stopped_ || next_ >= num) return;
      const size_t after_send = std::min(send_pos + 1, next_);
      const bool in_window = next_ < send_pos + window_;
      const bool under_bytes = prefix_[next_] - prefix_[after_send] < min_bytes_ahead_;
      if (!in_window && !under_bytes) return;
      pos = next_++;
    }
    // Outside the lock: a fetch may complete inline and call back into Take/on_ready.
    fetch_(pos, [this, pos](Result result) {
      {
        absl::MutexLock lock(&mu_);
        ready_.insert_or_assign(pos, std::move(result));
      }
      on_ready_();
    });
  }
}

std::optional<Prefetcher::Result> Prefetcher::Take(size_t pos) {
  absl::MutexLock lock(&mu_);
  auto it = ready_.find(pos);
  if (it == ready_.end()) return std::nullopt;
  return std::move(ready_.extract(it).mapped());
}

void Prefetcher::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

size_t Prefetcher::started() const {
  absl::MutexLock lock(&mu_);
  return next_;
}

}  // namespace deltaserve::server::internal
