// Admission limits: how many calls of one kind (uploads, streams) may run at once.
// A call that finds its limit reached is refused at once with RESOURCE_EXHAUSTED
// instead of queueing, so memory per kind stays bounded by limit x per-call bound
// (PutDelta: its buffer; streams: the prefetch window and two chunks).
#ifndef DELTASERVE_SERVER_INTERNAL_ADMISSION_H_
#define DELTASERVE_SERVER_INTERNAL_ADMISSION_H_

#include <atomic>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace deltaserve::server::internal {

// Thread-safe (lock-free counter).
class AdmissionLimit {
 public:
  // `what`: the calls counted ("uploads"); `flag`: the option that sets `limit`, for the
  // error message; `admitted` / `rejected`: the metrics kept (may be null; must outlive
  // this). REQUIRES: limit >= 1.
  AdmissionLimit(std::string what, std::string flag, int limit,
                 prometheus::Gauge* admitted = nullptr, prometheus::Counter* rejected = nullptr)
      : what_(std::move(what)),
        flag_(std::move(flag)),
        limit_(limit),
        admitted_(admitted),
        rejected_(rejected) {}

  // Takes a slot: OK, or ResourceExhausted "server busy: N <what> in flight (limit
  // <flag>=N); retry later" with nothing taken. Each OK must be matched by Release().
  absl::Status Acquire() {
    int now = in_use_.load(std::memory_order_relaxed);
    do {
      if (now >= limit_) {
        if (rejected_ != nullptr) rejected_->Increment();
        return absl::ResourceExhaustedError(absl::StrCat("server busy: ", now, " ", what_,
                                                         " in flight (limit ", flag_, "=",
                                                         limit_, "); retry later"));
      }
    } while (!in_use_.compare_exchange_weak(now, now + 1, std::memory_order_acq_rel));
    if (admitted_ != nullptr) admitted_->Increment();
    return absl::OkStatus();
  }
  void Release() {
    in_use_.fetch_sub(1, std::memory_order_acq_rel);
    if (admitted_ != nullptr) admitted_->Decrement();
  }

  int in_use() const { return in_use_.load(std::memory_order_relaxed); }
  int limit() const { return limit_; }

 private:
  const std::string what_, flag_;
  const int limit_;
  prometheus::Gauge* const admitted_;
  prometheus::Counter* const rejected_;
  std::atomic<int> in_use_{0};
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_ADMISSION_H_
