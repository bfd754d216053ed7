// Pre-touch of merged-tensor memory (deltaserved --pretouch-cache; ServerOptions::
// pretouch_cache), after the JVM's -XX:+AlwaysPreTouch: the first cold pull into an
// empty cache writes every merged tensor into pages the process never had, and faulting
// them in costs 0.29-0.31 CPU-s per GB on the 2-core VM of issue 9, about a quarter of
// the decode workers' time (merged_memory.h). Every task of a server has the base's
// tensor shapes, so at start the server knows the buffer sizes that pull will need: a
// background thread maps and faults them in ahead of it (common::MappingPool::PreTouch),
// and each cold tensor then takes a mapping of its size whose pages are there.
//
// The thread runs at SCHED_IDLE (nice 19 where the kernel refuses that), starts after
// the server is serving, and never holds a lock a request needs while it populates:
// readiness and the first request do not wait for it. A request that comes first takes
// what is ready and maps the rest itself, as without pre-touch. Memory: the pool's
// allowance is the cache budget, so pre-touched bytes plus the merged tensors alive stay
// within the budget plus kMergedPoolBytes (the peak-RSS bound of issue 9: base mapping +
// cache budget + 256 MiB), and pre-touched memory is given back as the cache fills.
#ifndef DELTASERVE_SERVER_INTERNAL_PRETOUCH_H_
#define DELTASERVE_SERVER_INTERNAL_PRETOUCH_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "codec/tensor.h"
#include "common/mapping_pool.h"
#include "server/internal/merged_memory.h"

namespace deltaserve::server::internal {

class Metrics;

// The merged buffers of a first cold pull of one task compressed against the base whose
// tensors are `tensors`, pulled in the base's dtypes: the byte sizes of the tensors of at
// least kMergedPoolMinBytes (smaller ones come from malloc), in the order given (a
// ModelReader's: by name, the order a pull decodes them in), as long as their sum (each
// rounded up to 4 KiB) stays within `budget_bytes`; a tensor that does not fit is left
// out and later smaller ones may still fit.
struct PretouchPlan {
  std::vector<uint64_t> sizes;
  uint64_t bytes = 0;  // sum of the sizes, each rounded up to 4 KiB
};
PretouchPlan PlanPretouch(const std::vector<codec::TensorInfo>& tensors, uint64_t budget_bytes);

struct PretouchProgress {
  bool running = false;
  uint64_t planned_bytes = 0;
  uint64_t bytes = 0;     // pre-touched so far (each mapping's rounded size)
  uint64_t mappings = 0;  // pre-touched so far
  double seconds = 0;     // wall time so far / until the end
  double cpu_seconds = 0;  // the thread's CPU time, at the end (0 while running)
  // Empty while running; at the end "done" (the whole plan), "no room" (the pool's limit
  // had no room for the next mapping: tensors already held memory, e.g. a pull or
  // --preload), "stopped" (Stop), or the error that ended it.
  std::string end;
};

// Runs one plan on its own thread ("ds-pretouch"), under an allowance of the pool.
// Thread-safe.
class Pretoucher {
 public:
  // Adds an allowance of `allowance_bytes` to `pool` and starts the thread, which
  // pre-touches plan.sizes in order, then logs "pretouch" (bytes, mappings, seconds,
  // cpu_seconds, end) and sets deltaserve_pretouch_bytes / _seconds (registered here).
  // `pool` (and `metrics`, which may be null) must outlive this object.
  Pretoucher(common::MappingPool* pool, PretouchPlan plan, uint64_t allowance_bytes,
             Metrics* metrics);
  // Stop().
  ~Pretoucher();
  Pretoucher(const Pretoucher&) = delete;
  Pretoucher& operator=(const Pretoucher&) = delete;

  // Stops the thread (within one common::kPreTouchSliceBytes slice) and waits for it, then
  // removes the allowance: pre-touched memory no Map took is unmapped. Idempotent.
  void Stop();
  PretouchProgress progress() const;

 private:
  void Run(PretouchPlan plan);

  common::MappingPool* const pool_;
  Metrics* const metrics_;
  const uint64_t allowance_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  PretouchProgress progress_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_PRETOUCH_H_
