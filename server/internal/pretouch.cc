#include "server/internal/pretouch.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/internal/log.h"
#include "server/internal/metrics.h"

namespace deltaserve::server::internal {
namespace {

using common::MappingPool;

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// The calling thread runs only when a core would otherwise idle: SCHED_IDLE (no
// privilege needed), else the lowest nice value of this thread alone.
void LowestPriority() {
  sched_param param{};
  param.sched_priority = 0;
  if (sched_setscheduler(0, SCHED_IDLE, &param) != 0) {
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
  }
}

}  // namespace

PretouchPlan PlanPretouch(const std::vector<codec::TensorInfo>& tensors, uint64_t budget_bytes) {
  PretouchPlan plan;
  for (const codec::TensorInfo& info : tensors) {
    const uint64_t bytes = info.num_bytes();
    const uint64_t rounded = MappingPool::RoundToPages(bytes);
    if (bytes < kMergedPoolMinBytes || rounded > budget_bytes - plan.bytes) continue;
    plan.sizes.push_back(bytes);
    plan.bytes += rounded;
  }
  return plan;
}

Pretoucher::Pretoucher(common::MappingPool* pool, PretouchPlan plan, uint64_t allowance_bytes,
                       Metrics* metrics)
    : pool_(pool), metrics_(metrics), allowance_(pool->AddAllowance(allowance_bytes)) {
  if (metrics_ != nullptr) metrics_->RegisterPretouch();
  {
    absl::MutexLock lock(&mu_);
    progress_.running = true;
    progress_.planned_bytes = plan.bytes;
  }
  thread_ = std::thread([this, plan = std::move(plan)]() mutable { Run(std::move(plan)); });
  pthread_setname_np(thread_.native_handle(), "ds-pretouch");
}

Pretoucher::~Pretoucher() { Stop(); }

void Pretoucher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  stop_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
  pool_->RemoveAllowance(allowance_);
}

PretouchProgress Pretoucher::progress() const {
  absl::MutexLock lock(&mu_);
  return progress_;
}

void Pretoucher::Run(PretouchPlan plan) {
  LowestPriority();
  const absl::Time start = absl::Now();
  const double cpu0 = ThreadCpuSeconds();
  std::string end = "done";
  for (const uint64_t bytes : plan.sizes) {
    absl::StatusOr<bool> kept = pool_->PreTouch(allowance_, bytes, stop_);
    if (!kept.ok()) {
      end = stop_.load() ? "stopped" : kept.status().ToString();
      break;
    }
    if (!*kept) {
      end = "no room";
      break;
    }
    absl::MutexLock lock(&mu_);
    progress_.bytes += MappingPool::RoundToPages(bytes);
    ++progress_.mappings;
    progress_.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (metrics_ != nullptr) metrics_->pretouch_bytes().Set(static_cast<double>(progress_.bytes));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  // Before `running` turns false: whoever saw the end also sees the gauge.
  if (metrics_ != nullptr) metrics_->pretouch_seconds().Set(seconds);
  PretouchProgress done;
  {
    absl::MutexLock lock(&mu_);
    progress_.seconds = seconds;
    progress_.cpu_seconds = ThreadCpuSeconds() - cpu0;
    progress_.end = end;
    progress_.running = false;
    done = progress_;
  }
  LogInfo("pretouch", {{"bytes", std::to_string(done.bytes)},
                       {"planned_bytes", std::to_string(done.planned_bytes)},
                       {"mappings", std::to_string(done.mappings)},
                       {"seconds", absl::StrFormat("%.3f", done.seconds)},
                       {"cpu_seconds", absl::StrFormat("%.3f", done.cpu_seconds)},
                       {"end", done.end}});
}

}  // namespace deltaserve::server::internal
