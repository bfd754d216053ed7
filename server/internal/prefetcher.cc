#include "server/internal/prefetcher.h"

#include <algorithm>
#include <utility>

namespace deltaserve::server::internal {

Prefetcher::Prefetcher(size_t num_positions, size_t window, FetchFn fetch,
                       std::function<void()> on_ready)
    : num_positions_(num_positions),
      window_(std::max<size_t>(window, 1)),
      fetch_(std::move(fetch)),
      on_ready_(std::move(on_ready)) {}

void Prefetcher::Advance(size_t send_pos) {
  const size_t limit = std::min(num_positions_, send_pos + window_);
  while (true) {
    size_t pos;
    {
      absl::MutexLock lock(&mu_);
      if (stopped_ || next_ >= limit) return;
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
