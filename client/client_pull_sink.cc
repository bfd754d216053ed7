// DeltaClient::PullWeightsToSink: one StreamWeights call into a caller's sink, resumed
// after a dropped connection at the byte where it stopped (resume_from_offset within
// the tensor it cut, else from the tensor after the last verified one).
#include <algorithm>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/client.h"
#include "client/internal/impl.h"
#include "client/internal/weights_stream.h"
#include "common/plural.h"
#include "common/status_macros.h"

namespace deltaserve::client {
namespace {

// Forwards the first stream's Begin to `inner` and refuses a resumed stream that serves
// another version of the task (ABORTED); everything else goes straight through, counted.
class ResumeSink : public CountingSink {
 public:
  ResumeSink(WeightsSink* inner, const std::string& label) : CountingSink(inner), label_(label) {}

  absl::Status Begin(const v1::StreamBegin& begin) override {
    if (!began_) {
      began_ = true;
      first_ = begin.task();
      return CountingSink::Begin(begin);
    }
    const v1::TaskInfo& now = begin.task();
    if (now.tenant() != first_.tenant() || now.name() != first_.name()) {
      return absl::AbortedError(absl::StrCat(label_, ": the resumed stream serves another task"));
    }
    return CheckSameTaskVersion(first_, now, label_,
                                "the task was replaced while the stream was resumed");
  }

  bool began() const { return began_; }

 private:
  const std::string& label_;
  bool began_ = false;
  v1::TaskInfo first_;
};

// How long a call that failed before its stream began waits for the channel to connect
// again before the server counts as unreachable (at most reconnect_timeout).
constexpr absl::Duration kFirstConnect = absl::Seconds(2);

}  // namespace

absl::Status DeltaClient::PullWeightsToSink(const std::string& task, WeightsSink* sink,
                                            const SinkPullOptions& options, PullStats* stats) {
  *stats = PullStats();
  const std::string label = absl::StrCat("StreamWeights ", TaskLabel(impl_->options, task));
  if (options.pull.streams != 1 || !options.pull.resume_from.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": PullWeightsToSink takes one stream and no resume_from"));
  }
  DS_ASSIGN_OR_RETURN(v1::StreamWeightsRequest request,
                      MakeStreamWeightsRequest(impl_->options, task, options.pull, label));
  const Clock::time_point start = Clock::now();
  const absl::Time deadline = options.deadline > absl::ZeroDuration()
                                  ? absl::Now() + options.deadline
                                  : absl::InfiniteFuture();
  ResumeSink resume(sink, label);
  // The previous attempt's checker while it holds a tensor cut midway to resume.
  std::unique_ptr<WeightsStreamChecker> previous;
  for (uint32_t attempt = 0;; ++attempt) {
    auto owned = std::make_unique<WeightsStreamChecker>(label, &resume, options.pull, start);
    WeightsStreamChecker& checker = *owned;
    request.clear_resume_from_offset();
    if (previous != nullptr) {
      request.set_resume_from_offset(previous->received_bytes());
      checker.ContinueFrom(*previous);
      previous.reset();
    }
    // gRPC keeps deadlines in whole milliseconds, rounded up, and a call that ends
    // before its deadline timer fires succeeds: a call is never begun past the deadline.
    absl::Status s =
        absl::Now() >= deadline
            ? absl::DeadlineExceededError(absl::StrFormat(
                  "%s: deadline of %g s exceeded", label, absl::ToDoubleSeconds(options.deadline)))
            : RunStreamWeightsCall(*impl_, impl_->stub.get(), request, options.pull, nullptr,
                                   &checker, deadline);
    stats->tensors = resume.tensors();
    stats->bytes = resume.bytes();
    AddSaturated(checker.stats(), stats);  // each attempt counts the tensors it verified
    if (stats->first_tensor_seconds == 0) {
      stats->first_tensor_seconds = checker.stats().first_tensor_seconds;
    }
    stats->seconds = SecondsSince(start);
    if (s.ok()) return absl::OkStatus();
    const bool retry = s.code() == absl::StatusCode::kUnavailable && attempt < options.retries;
    if (!retry || !resume.began()) resume.DropUnfinished();
    if (!retry) return s;
    if (!resume.began()) {
      // No stream has begun. The call may have gone out on a connection that died since
      // (a restarted server, the channel still backing off): one that connects again
      // soon is tried again; otherwise the server cannot be reached.
      const absl::Time soon =
          std::min(absl::Now() + std::min(options.reconnect_timeout, kFirstConnect), deadline);
      if (!impl_->channel->WaitForConnected(absl::ToChronoTime(soon))) {
        // The call's message names the call already ("StreamWeights 'chat': failed to
        // connect..."): said once (new-user trial: the label came twice).
        absl::string_view detail = s.message();
        absl::ConsumePrefix(&detail, absl::StrCat(label, ": "));
        return absl::UnavailableError(absl::StrCat(label, ": cannot reach the server at ",
                                                   impl_->options.target, " (", detail, ")"));
      }
      continue;
    }
    if (checker.partial_index() >= 0) {
      // A tensor cut midway: the next stream starts at its first missing byte, and the
      // sink keeps what it has (with a name filter the tensor after the last verified
      // one may not be this one: resume at this one).
      request.set_resume_from_index(static_cast<uint32_t>(checker.partial_index()));
      sink->Continue(checker.received_bytes());
      previous = std::move(owned);
    } else {
      resume.DropUnfinished();
      if (checker.last_verified_index() >= 0) {
        request.set_resume_from_index(static_cast<uint32_t>(checker.last_verified_index()) + 1);
      }
    }
    ++stats->resumed;
    // Each retry waits up to reconnect_timeout; a wait that ends without the server uses
    // the next retry, so the server may stay away retries x reconnect_timeout in all.
    const absl::Time wait_start = absl::Now();
    while (true) {
      const absl::Time wait_until = std::min(absl::Now() + options.reconnect_timeout, deadline);
      if (impl_->channel->WaitForConnected(absl::ToChronoTime(wait_until))) break;
      const bool past_deadline = absl::Now() >= deadline;
      if (attempt + 1 < options.retries && !past_deadline) {
        ++attempt;
        continue;
      }
      if (previous != nullptr) resume.DropUnfinished();
      return absl::UnavailableError(absl::StrFormat(
          "%s: connection dropped (%s) and the server did not come back within %.1f s (%d of "
          "%s used, each waiting up to %.1f s%s)",
          label, s.message(), absl::ToDoubleSeconds(absl::Now() - wait_start), attempt + 1,
          common::Counted(options.retries, "retry", "retries"),
          absl::ToDoubleSeconds(options.reconnect_timeout),
          past_deadline ? "; the deadline was reached" : ""));
    }
  }
}

}  // namespace deltaserve::client
