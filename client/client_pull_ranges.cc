// DeltaClient pulls over several parallel StreamWeights calls on tensor ranges.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/pull_ranges.h"
#include "common/status_macros.h"

namespace deltaserve::client {
namespace {

// Forwards one range's stream to its sink, refuses a stream of another version of the
// task, and counts the range's verified tensors and bytes over its attempts.
class RangeSink : public CountingSink {
 public:
  RangeSink(WeightsSink* inner, const v1::TaskInfo& want, std::string label)
      : CountingSink(inner), want_(want), label_(std::move(label)) {}

  absl::Status Begin(const v1::StreamBegin& begin) override {
    DS_RETURN_IF_ERROR(
        CheckSameTaskVersion(want_, begin.task(), label_, "the task changed during the pull"));
    return CountingSink::Begin(begin);
  }

 private:
  const v1::TaskInfo& want_;
  const std::string label_;
};

// Sums the ranges' progress into one Progress for the caller's callback, which it calls
// one at a time (from the ranges' threads). Each range's totals start from GetTask's sizes
// (`bytes` by container index), so the first report already shows the whole pull's totals
// (summing only the ranges that had reported made the totals grow and the percentage go
// backwards as ranges started).
class ProgressSum {
 public:
  ProgressSum(const ProgressFn& fn, const std::vector<std::pair<uint32_t, uint32_t>>& ranges,
              const std::vector<uint64_t>& bytes)
      : fn_(fn), parts_(ranges.size()) {
    for (size_t i = 0; i < ranges.size(); ++i) {
      for (uint32_t t = ranges[i].first; t < ranges[i].second; ++t) {
        parts_[i].bytes_total += bytes[t];
      }
      parts_[i].tensors_total = ranges[i].second - ranges[i].first;
    }
  }

  // Range `i` reports `p` of its current attempt, which began after `done_before`
  // verified tensors / bytes of earlier attempts.
  void Report(size_t i, const Progress& p, uint32_t tensors_before, uint64_t bytes_before) {
    absl::MutexLock lock(&mu_);
    Progress& part = parts_[i];
    part.bytes_done = bytes_before + p.bytes_done;
    part.bytes_total = std::max(part.bytes_total, bytes_before + p.bytes_total);
    part.tensors_done = tensors_before + p.tensors_done;
    part.tensors_total = std::max(part.tensors_total, tensors_before + p.tensors_total);
    Progress sum;
    for (const Progress& q : parts_) {
      sum.bytes_done += q.bytes_done;
      sum.bytes_total += q.bytes_total;
      sum.tensors_done += q.tensors_done;
      sum.tensors_total += q.tensors_total;
    }
    sum.current = p.current;
    fn_(sum);
  }

 private:
  const ProgressFn& fn_;
  absl::Mutex mu_;
  std::vector<Progress> parts_ ABSL_GUARDED_BY(mu_);
};

// Output bytes of every tensor of `info` by container index, for CutTensorRanges.
absl::StatusOr<std::vector<uint64_t>> TensorBytes(const v1::TaskInfo& info,
                                                  const PullOptions& options,
                                                  absl::string_view label) {
  DS_ASSIGN_OR_RETURN(std::vector<codec::TensorInfo> tensors,
                      ListedTensors(info, options, label));
  std::vector<uint64_t> bytes;
  bytes.reserve(tensors.size());
  for (const codec::TensorInfo& t : tensors) bytes.push_back(t.num_bytes());
  return bytes;
}

// Container index of the tensor named `name`; NotFound if none.
absl::StatusOr<uint32_t> IndexOf(const v1::TaskInfo& info, const std::string& name,
                                 absl::string_view label) {
  for (const v1::TensorSummary& t : info.tensors()) {
    if (t.name() == name) return t.index();
  }
  return absl::NotFoundError(absl::StrCat(label, ": no tensor '", name, "' to resume from"));
}

}  // namespace

absl::StatusOr<v1::TaskInfo> GetTaskTensors(const DeltaClient::Impl& impl,
                                            const std::string& task, const std::string& label) {
  v1::GetTaskRequest get;
  get.set_tenant(impl.options.tenant);
  get.set_task(task);
  get.set_include_tensors(true);
  return impl.Unary(&v1::DeltaService::Stub::GetTask, get, impl.options.deadline, label);
}

absl::StatusOr<std::vector<codec::TensorInfo>> ListedTensors(const v1::TaskInfo& info,
                                                             const PullOptions& options,
                                                             absl::string_view label) {
  std::vector<codec::TensorInfo> tensors(info.tensors_size());
  std::vector<bool> seen(tensors.size());
  for (const v1::TensorSummary& t : info.tensors()) {
    absl::StatusOr<codec::DType> recorded = proto::FromProtoDType(t.dtype());
    if (t.index() >= tensors.size() || seen[t.index()] || !recorded.ok()) {
      return absl::DataLossError(absl::StrCat(label, ": GetTask lists tensor '", t.name(),
                                              "' at index ", t.index(), " of ", tensors.size(),
                                              recorded.ok() ? "" : " with an unknown dtype"));
    }
    seen[t.index()] = true;
    tensors[t.index()] = codec::TensorInfo{
        t.name(), codec::OutputDType(*recorded, options.out_dtype.value_or(*recorded)),
        {t.shape().begin(), t.shape().end()}};
  }
  return tensors;
}

std::vector<std::pair<uint32_t, uint32_t>> CutTensorRanges(absl::Span<const uint64_t> bytes,
                                                           uint32_t first, uint32_t streams) {
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  if (first >= n) return ranges;
  streams = std::min(streams, n - first);
  // Shares are compared in long double: total x streams may not fit 64 bits.
  long double total = 0;
  for (uint32_t i = first; i < n; ++i) total += bytes[i];
  long double before = 0;  // bytes of the tensors before i
  uint32_t begin = first;
  for (uint32_t i = first; i + 1 < n && ranges.size() + 1 < streams; ++i) {
    const uint32_t k = static_cast<uint32_t>(ranges.size()) + 1;  // the cut being placed
    const long double middle = before + bytes[i] / 2.0L;
    before += bytes[i];
    const bool share_reached = middle * streams >= total * k;
    const bool last_chance = n - i - 1 == streams - k;  // one tensor left per range to come
    if (share_reached || last_chance) {
      ranges.emplace_back(begin, i + 1);
      begin = i + 1;
    }
  }
  ranges.emplace_back(begin, n);
  return ranges;
}

absl::StatusOr<PullStats> PullRanges(
    const DeltaClient::Impl& impl, const std::string& task, const PullOptions& options,
    const std::function<absl::StatusOr<WeightsSink*>(size_t range)>& make_sink,
    const v1::TaskInfo* listed) {
  const Clock::time_point start = Clock::now();
  const std::string label = absl::StrCat("StreamWeights ", TaskLabel(impl.options, task));
  DS_ASSIGN_OR_RETURN(v1::StreamWeightsRequest base_request,
                      MakeStreamWeightsRequest(impl.options, task, options, label));
  base_request.clear_resume_from_name();
  v1::TaskInfo info;
  if (listed != nullptr) {
    info = *listed;
  } else {
    DS_ASSIGN_OR_RETURN(info, GetTaskTensors(impl, task, label));
  }
  DS_ASSIGN_OR_RETURN(std::vector<uint64_t> bytes, TensorBytes(info, options, label));
  uint32_t first = 0;
  if (!options.resume_from.empty()) {
    DS_ASSIGN_OR_RETURN(first, IndexOf(info, options.resume_from, label));
  }
  const std::vector<std::pair<uint32_t, uint32_t>> ranges =
      CutTensorRanges(bytes, first, std::max<uint32_t>(options.streams, 1));

  struct Range {
    std::unique_ptr<RangeSink> sink;
    std::unique_ptr<v1::DeltaService::Stub> own_stub;  // ranges after the first
    double first_tensor_seconds = 0;
    uint32_t resumed = 0;
    PullStats saturated;  // saturated_* of the tensors this range verified
    absl::Status status;
  };
  std::vector<Range> state(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    DS_ASSIGN_OR_RETURN(WeightsSink * inner, make_sink(i));
    state[i].sink = std::make_unique<RangeSink>(inner, info, label);
    if (i > 0) state[i].own_stub = impl.NewConnectionStub();
  }
  std::atomic<bool> stop{false};
  std::unique_ptr<ProgressSum> progress;
  if (options.progress) progress = std::make_unique<ProgressSum>(options.progress, ranges, bytes);

  auto run = [&](size_t i) {
    Range& r = state[i];
    v1::DeltaService::Stub* stub = i == 0 ? impl.stub.get() : r.own_stub.get();
    const uint32_t end = ranges[i].second;
    uint32_t next = ranges[i].first;
    // The previous attempt's checker while it holds a partial tensor to resume.
    std::unique_ptr<WeightsStreamChecker> previous;
    for (uint32_t attempt = 0;; ++attempt) {
      const uint32_t tensors_before = r.sink->tensors();
      const uint64_t bytes_before = r.sink->bytes();
      PullOptions range_options = options;
      range_options.progress = nullptr;
      if (progress) {
        range_options.progress = [&, i, tensors_before, bytes_before](const Progress& p) {
          progress->Report(i, p, tensors_before, bytes_before);
        };
      }
      v1::StreamWeightsRequest request = base_request;
      request.set_resume_from_index(next);
      request.set_end_index(end);
      auto owned = std::make_unique<WeightsStreamChecker>(
          absl::StrCat(label, " tensors [", next, ", ", end, ")"), r.sink.get(), range_options,
          start);
      WeightsStreamChecker& checker = *owned;
      if (previous != nullptr) {
        // Resume the tensor cut midway at the byte where it stopped.
        request.set_resume_from_offset(previous->received_bytes());
        checker.ContinueFrom(*previous);
        previous.reset();
      }
      r.status = RunStreamWeightsCall(impl, stub, request, range_options, &stop, &checker);
      // The first tensor header of the range, whichever attempt saw it: an attempt that
      // resumes a tensor cut midway sees no new first header (its first_tensor_seconds
      // is 0, which once replaced the real figure: "first tensor after 0.000 s"), and a
      // first tensor cut midway was seen by an attempt that finished no tensor.
      AddSaturated(checker.stats(), &r.saturated);  // the tensors this attempt verified
      const double first_seen = checker.stats().first_tensor_seconds;
      if (first_seen > 0 && (r.first_tensor_seconds == 0 || first_seen < r.first_tensor_seconds)) {
        r.first_tensor_seconds = first_seen;
      }
      if (r.status.ok()) return;
      if (checker.last_verified_index() >= 0) {
        next = static_cast<uint32_t>(checker.last_verified_index()) + 1;
      }
      if (r.status.code() == absl::StatusCode::kUnavailable && checker.partial_index() >= 0 &&
          static_cast<uint32_t>(checker.partial_index()) == next) {
        previous = std::move(owned);  // its bytes so far stay in the sink
      } else {
        r.sink->DropUnfinished();
      }
      if (next >= end && r.status.code() == absl::StatusCode::kUnavailable) {
        r.status = absl::OkStatus();  // every tensor of the range arrived verified
        return;
      }
      if (r.status.code() != absl::StatusCode::kUnavailable || attempt >= options.range_retries ||
          Cancelled(&stop)) {
        stop = true;
        return;
      }
      ++r.resumed;
      // Back off 0.1, 0.2, 0.4 ... 3.2 s: a restarting server needs a moment.
      std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt, 5u)));
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < ranges.size(); ++i) threads.emplace_back(run, i);
  if (!ranges.empty()) run(0);
  for (std::thread& t : threads) t.join();

  PullStats stats;
  stats.streams = static_cast<uint32_t>(ranges.size());
  absl::Status cancelled;
  for (Range& r : state) {
    // The first error that is not a cancellation caused by another range's failure.
    if (!r.status.ok()) {
      if (r.status.code() != absl::StatusCode::kCancelled || Cancelled(options.cancel)) {
        return r.status;
      }
      cancelled = r.status;
    }
    stats.tensors += r.sink->tensors();
    stats.bytes += r.sink->bytes();
    stats.resumed += r.resumed;
    AddSaturated(r.saturated, &stats);
    if (r.first_tensor_seconds > 0 &&
        (stats.first_tensor_seconds == 0 || r.first_tensor_seconds < stats.first_tensor_seconds)) {
      stats.first_tensor_seconds = r.first_tensor_seconds;
    }
  }
  DS_RETURN_IF_ERROR(cancelled);
  stats.seconds = SecondsSince(start);
  return stats;
}

}  // namespace deltaserve::client
