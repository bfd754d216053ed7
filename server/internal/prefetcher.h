// Keeps the tensors of a stream plan fetched a bounded distance ahead of the one being
// sent: position p is started while p < send + window, or while the positions started
// after `send` hold fewer than `min_bytes_ahead` bytes. A stream's memory is so bounded
// by max(window tensors, the one being sent + min_bytes_ahead + one tensor) whatever
// the model's size, and a slow client stops decoding for its stream.
//
// The fetch itself (the merged-tensor cache, decoding on the pool) is the caller's
// FetchFn; this class only decides what to start and holds what came back.
// Thread-safe. `fetch` and `on_ready` are called without the internal lock held.
#ifndef DELTASERVE_SERVER_INTERNAL_PREFETCHER_H_
#define DELTASERVE_SERVER_INTERNAL_PREFETCHER_H_

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/internal/tensor_cache.h"

namespace deltaserve::server::internal {

class Prefetcher {
 public:
  using Result = absl::StatusOr<MergedTensorPtr>;
  using Done = std::function<void(Result)>;
  // Starts fetching plan position `pos` and calls `done` exactly once with the result,
  // on any thread, possibly inline. `done` stays valid while the Prefetcher lives;
  // REQUIRES: the FetchFn keeps the Prefetcher alive until it has called `done`.
  using FetchFn = std::function<void(size_t pos, Done done)>;

  // Positions are [0, bytes.size()); bytes[p] is the data size of position p. `window`
  // >= 1 (0 counts as 1). `on_ready` runs after each delivery.
  Prefetcher(std::vector<uint64_t> bytes, size_t window, uint64_t min_bytes_ahead, FetchFn fetch,
             std::function<void()> on_ready);

  // Starts, in order, every position not started yet that the window admits while
  // `send_pos` is being sent (see the file comment). No-op after Stop().
  void Advance(size_t send_pos);

  // Removes and returns the result of `pos`, or nullopt if it has not arrived.
  std::optional<Result> Take(size_t pos);

  // Starts no more fetches; results still arriving are kept (a fetch in flight ends
  // normally). Idempotent.
  void Stop();

  // Positions whose fetch has started (for tests and metrics).
  size_t started() const;

 private:
  std::vector<uint64_t> prefix_;  // prefix_[p]: bytes of positions [0, p)
  const size_t window_;
  const uint64_t min_bytes_ahead_;
  const FetchFn fetch_;
  const std::function<void()> on_ready_;
  mutable absl::Mutex mu_;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // first position not started
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::map<size_t, Result> ready_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_PREFETCHER_H_
