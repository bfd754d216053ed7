// One StreamWeights call, checked message by message, into a sink: shared by the
// single-stream pulls (client_pull.cc) and the parallel tensor-range pulls
// (client_pull_ranges.cc). Not thread-safe: one checker and one sink per call.
#ifndef DELTASERVE_CLIENT_INTERNAL_WEIGHTS_STREAM_H_
#define DELTASERVE_CLIENT_INTERNAL_WEIGHTS_STREAM_H_

#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/client.h"
#include "client/weights_sink.h"
#include "client/internal/impl.h"
#include "codec/tensor.h"
#include "common/file.h"
#include "common/tmp_files.h"

namespace deltaserve::client {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// OK if `got` (a StreamBegin's task) is the version of the task that `want` (GetTask's
// answer, or the first attempt's StreamBegin) described: the same
// TaskInfo.container_xxh3_64 (the container's content hash); for tasks stored without
// one (older servers), the same created_unix, base_hash and container_bytes; set on
// one side only counts as another version. Else ABORTED "`label`: `what` (...)",
// naming both versions. Tenant and task names are not compared.
absl::Status CheckSameTaskVersion(const v1::TaskInfo& want, const v1::TaskInfo& got,
                                  absl::string_view label, absl::string_view what);

// Forwards a stream to `inner` and counts the tensors that ended verified and their
// bytes, over every attempt of a resumed stream: the base of the sinks that check the
// begin messages of parallel ranges (client_pull_ranges.cc) and of resumes
// (client_pull_sink.cc).
class CountingSink : public WeightsSink {
 public:
  explicit CountingSink(WeightsSink* inner) : inner_(inner) {}
  absl::Status Begin(const v1::StreamBegin& begin) override { return inner_->Begin(begin); }
  absl::Status TensorBegin(const codec::TensorInfo& info) override {
    current_bytes_ = info.num_bytes();
    return inner_->TensorBegin(info);
  }
  absl::Status Data(absl::Span<const uint8_t> data) override { return inner_->Data(data); }
  absl::Status TensorEnd() override {
    ++tensors_;
    bytes_ += current_bytes_;
    return inner_->TensorEnd();
  }
  void DropUnfinished() override { inner_->DropUnfinished(); }

  uint32_t tensors() const { return tensors_; }
  uint64_t bytes() const { return bytes_; }

 private:
  WeightsSink* inner_;
  uint64_t current_bytes_ = 0;
  uint32_t tensors_ = 0;
  uint64_t bytes_ = 0;
};

// Checks the framing of a StreamWeights response stream (begin, then per tensor a header
// and chunks of exactly byte_length bytes at increasing offsets, then end) and the
// XXH3-64 of every tensor (from its header, or from its last chunk when the header has
// checksum_follows: requests set checksum_after_data), forwarding to a sink. Progress goes to
// options.progress; times count from `start`.
class WeightsStreamChecker {
 public:
  WeightsStreamChecker(std::string label, WeightsSink* sink, const PullOptions& options,
                       Clock::time_point start = Clock::now());
  ~WeightsStreamChecker();
  WeightsStreamChecker(const WeightsStreamChecker&) = delete;
  WeightsStreamChecker& operator=(const WeightsStreamChecker&) = delete;

  absl::Status Handle(const v1::StreamWeightsResponse& msg);

  const std::string& label() const { return label_; }
  bool ended() const { return ended_; }
  PullStats& stats() { return stats_; }
  // Container index (TensorHeader.index) of the last tensor whose checksum matched;
  // -1 if none yet.
  int64_t last_verified_index() const { return last_verified_index_; }
  // A tensor begun and not finished (its stream broke) with at least one byte received:
  // a new stream can resume it at byte received_bytes() (StreamWeightsRequest
  // resume_from_index = partial_index(), resume_from_offset = received_bytes()), through
  // a checker that ContinueFrom(this). -1 if none.
  int64_t partial_index() const;
  uint64_t received_bytes() const { return received_; }
  // This checker's first tensor is `previous`'s partial one (REQUIRES:
  // previous.partial_index() >= 0), resumed at previous.received_bytes(): its header
  // must describe the same tensor (else DataLoss), the sink gets no second TensorBegin,
  // the bytes already received stay and the whole tensor's XXH3-64 is checked.
  void ContinueFrom(const WeightsStreamChecker& previous);

 private:
  absl::Status Bad(absl::string_view what) const;
  absl::Status Header(const v1::TensorHeader& h);
  absl::Status Chunk(const v1::TensorChunk& c);
  void Report();
  absl::Status MaybeFinishTensor();

  const std::string label_;
  WeightsSink* sink_;
  const PullOptions& options_;
  XXH3_state_t* hash_;
  const Clock::time_point start_;
  bool began_ = false, in_tensor_ = false, ended_ = false;
  v1::StreamBegin begin_;
  v1::TensorHeader header_;
  codec::TensorInfo info_;
  uint64_t received_ = 0;
  int64_t last_verified_index_ = -1;
  // Set by ContinueFrom until the first header: the tensor being resumed.
  std::optional<v1::TensorHeader> resumed_header_;
  PullStats stats_;
  Progress progress_;
};

// Adds `values` saturated values over `tensors` tensors, the first of them `name`, to
// `stats` (PullStats::saturated_*); nothing if values is 0.
void AddSaturated(const std::string& name, uint64_t values, uint32_t tensors, PullStats* stats);
// Adds `from`'s saturated_* figures to `to`'s: the total over attempts or ranges.
inline void AddSaturated(const PullStats& from, PullStats* to) {
  AddSaturated(from.first_saturated_tensor, from.saturated_values, from.saturated_tensors, to);
}

// The request of a pull of `task` with `options` (tenant from the client options). A
// request with a string field that is not UTF-8 is InvalidArgument.
absl::StatusOr<v1::StreamWeightsRequest> MakeStreamWeightsRequest(const ClientOptions& client,
                                                                  const std::string& task,
                                                                  const PullOptions& options,
                                                                  const std::string& label);

// Runs one StreamWeights call of `request` on `stub` through `checker`; stops early
// (CANCELLED) when options.cancel or `stop` (may be null) is raised. The call's deadline
// is `deadline`, or ClientOptions::stream_deadline from now if that is infinite. Returns
// the first error: a local one (checker, cancel) before the server's status.
absl::Status RunStreamWeightsCall(const DeltaClient::Impl& impl, v1::DeltaService::Stub* stub,
                                  const v1::StreamWeightsRequest& request,
                                  const PullOptions& options, const std::atomic<bool>* stop,
                                  WeightsStreamChecker* checker,
                                  absl::Time deadline = absl::InfiniteFuture());

// Spills tensor data to a scratch file and remembers the layout.
class SpillSink : public WeightsSink {
 public:
  explicit SpillSink(std::unique_ptr<common::AtomicFileWriter> spill) : spill_(std::move(spill)) {}
  absl::Status Begin(const v1::StreamBegin& begin) override;
  absl::Status TensorBegin(const codec::TensorInfo& info) override;
  absl::Status Data(absl::Span<const uint8_t> data) override { return spill_->Append(data); }
  absl::Status TensorEnd() override;
  // The unfinished tensor's bytes stay in the scratch file, unreferenced.
  void DropUnfinished() override;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Closes and maps the scratch file; appends views of its finished tensors, in stream
  // order, to `views` (valid while this sink lives).
  absl::Status MapViews(std::vector<codec::TensorView>* views);

 private:
  std::unique_ptr<common::AtomicFileWriter> spill_;  // removed when the sink is destroyed
  std::unique_ptr<common::MappedFile> mapped_;
  std::vector<std::pair<codec::TensorInfo, uint64_t>> tensors_;
  size_t finished_ = 0;
  std::map<std::string, std::string> metadata_;
};

// Writes the finished tensors of `sinks`, one after the other, as one safetensors file
// (`out_path`) or, if `max_shard_bytes` > 0, as a sharded checkpoint directory
// `out_path`, with the first sink's metadata: codec::WriteSafetensors /
// WriteShardedSafetensors.
absl::Status WriteSpilled(const std::vector<SpillSink*>& sinks, const std::string& out_path,
                          uint64_t max_shard_bytes);

// The finished tensors of `sinks`, one after the other, as a sharded checkpoint staged
// in `staged` (codec::StageShardedSafetensors: shards, then the index), with the first
// sink's metadata. Returns the shard file names. The caller publishes.
absl::StatusOr<std::set<std::string>> StageSpilledShards(const std::vector<SpillSink*>& sinks,
                                                         common::StagedFiles* staged,
                                                         uint64_t max_shard_bytes);

// Tensors into memory (a PulledModel's tensors and metadata).
class MemorySink : public WeightsSink {
 public:
  explicit MemorySink(PulledModel* out) : out_(out) {}
  absl::Status Begin(const v1::StreamBegin& begin) override;
  absl::Status TensorBegin(const codec::TensorInfo& info) override;
  absl::Status Data(absl::Span<const uint8_t> data) override;
  absl::Status TensorEnd() override;
  void DropUnfinished() override;

 private:
  PulledModel* out_;
  size_t finished_ = 0;
};

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_WEIGHTS_STREAM_H_
