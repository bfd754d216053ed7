// DeltaClient downloads: StreamWeights (pull) and StreamDelta, with every byte verified.
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iterator>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/internal/impl.h"
#include "client/internal/placed_output.h"
#include "client/internal/pull_ranges.h"
#include "client/internal/side_files.h"
#include "client/internal/status.h"
#include "client/internal/weights_stream.h"
#include "codec/container_checks.h"
#include "codec/safetensors.h"
#include "common/file.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"

namespace deltaserve::client {
namespace {

// Runs StreamDelta for `task`, verifying offsets, size and XXH3-64; `on_data` gets the
// bytes in order (and the announced total size).
absl::StatusOr<DeltaStats> RunStreamDelta(
    const DeltaClient::Impl& impl, const std::string& task, const ProgressFn& progress,
    const std::function<absl::Status(absl::Span<const uint8_t>, uint64_t)>& on_data) {
  const std::string label = absl::StrCat("StreamDelta ", TaskLabel(impl.options, task));
  v1::StreamDeltaRequest request;
  request.set_tenant(impl.options.tenant);
  request.set_task(task);
  DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(request, label));
  const Clock::time_point start = Clock::now();
  grpc::ClientContext ctx;
  impl.Prepare(&ctx, impl.options.stream_deadline, task);
  auto reader = impl.stub->StreamDelta(&ctx, request);
  XXH3_state_t* hash = XXH3_createState();
  XXH3_64bits_reset(hash);
  DeltaStats stats;
  uint64_t total = 0, want_hash = 0;
  bool first = true;
  absl::Status local;
  v1::StreamDeltaResponse msg;
  while (reader->Read(&msg)) {
    if (first) {
      total = msg.total_bytes();
      want_hash = msg.xxh3_64();
      first = false;
    }
    if (msg.total_bytes() != total || msg.xxh3_64() != want_hash || msg.offset() != stats.bytes ||
        msg.data().size() > total - stats.bytes) {
      local = absl::DataLossError(absl::StrCat(label, ": malformed stream at offset ", msg.offset(),
                                               " after ", stats.bytes, " of ", total, " bytes"));
    } else {
      auto data = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(msg.data().data()),
                                      msg.data().size());
      XXH3_64bits_update(hash, data.data(), data.size());
      stats.bytes += data.size();
      local = on_data(data, total);
      if (local.ok() && progress) progress(Progress{stats.bytes, total, 0, 0, task});
    }
    if (!local.ok()) {
      ctx.TryCancel();
      while (reader->Read(&msg)) {
      }
      break;
    }
  }
  grpc::Status status = reader->Finish();
  stats.xxh3_64 = XXH3_64bits_digest(hash);
  XXH3_freeState(hash);
  DS_RETURN_IF_ERROR(local);
  DS_RETURN_IF_ERROR(FromGrpcStatus(status, label));
  if (first) return absl::DataLossError(absl::StrCat(label, ": empty stream"));
  if (stats.bytes != total || stats.xxh3_64 != want_hash) {
    return absl::DataLossError(absl::StrCat(label, ": received ", stats.bytes, " of ", total,
                                            " bytes, XXH3-64 ", stats.xxh3_64, " vs ", want_hash));
  }
  stats.seconds = SecondsSince(start);
  return stats;
}

// InvalidArgument unless options.streams is in [1, 64].
absl::Status CheckStreams(const PullOptions& options) {
  if (options.streams >= 1 && options.streams <= 64) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the number of streams (deltactl pull --streams, PullOptions.streams) "
                   "must be in [1, 64], got ", options.streams));
}

// NotFound for a pull that received (or would receive) no tensor: an empty file would
// look like a successful pull.
absl::Status NoTensorsError(const DeltaClient::Impl& impl, const std::string& task,
                            const std::string& target, const PullOptions& options) {
  const bool filtered = !options.include.empty() || !options.include_regex.empty() ||
                        !options.resume_from.empty();
  return absl::NotFoundError(absl::StrCat(
      "StreamWeights ", TaskLabel(impl.options, task), ": ",
      filtered ? "no tensor matches the filter" : "the task has no tensors",
      "; nothing written to ", target));
}

// Pulls `task` (no name filter: its tensors are known from GetTask) into one safetensors
// file at `out_path` written in place (PlacedOutput): each stream writes its tensors'
// chunks at their offsets in the file as they arrive.
absl::StatusOr<PullStats> PullPlaced(const DeltaClient::Impl& impl, const std::string& task,
                                     const std::string& out_path, const PullOptions& options) {
  const std::string label = absl::StrCat("StreamWeights ", TaskLabel(impl.options, task));
  DS_ASSIGN_OR_RETURN(v1::TaskInfo info, GetTaskTensors(impl, task, label));
  DS_ASSIGN_OR_RETURN(std::vector<codec::TensorInfo> tensors, ListedTensors(info, options, label));
  if (!options.resume_from.empty()) {
    auto at = std::find_if(tensors.begin(), tensors.end(), [&](const codec::TensorInfo& t) {
      return t.name == options.resume_from;
    });
    if (at == tensors.end()) {
      return absl::NotFoundError(
          absl::StrCat(label, ": no tensor '", options.resume_from, "' to resume from"));
    }
    tensors.erase(tensors.begin(), at);
  }
  if (tensors.empty()) return NoTensorsError(impl, task, out_path, options);
  DS_ASSIGN_OR_RETURN(std::unique_ptr<PlacedOutput> out,
                      PlacedOutput::Create(out_path, std::move(tensors)));
  std::vector<std::unique_ptr<PlacedSink>> sinks;
  auto make_sink = [&](size_t) -> absl::StatusOr<WeightsSink*> {
    sinks.push_back(std::make_unique<PlacedSink>(out.get()));
    return sinks.back().get();
  };
  // One stream is one range: a dropped stream resumes the same way (at the byte where
  // it stopped, possibly on another replica behind a load balancer).
  DS_ASSIGN_OR_RETURN(PullStats stats, PullRanges(impl, task, options, make_sink, &info));
  DS_RETURN_IF_ERROR(out->Commit());
  return stats;
}

// Streams `task` into SpillSinks (one per range when options.streams > 1) whose scratch
// files are `spill_path` (+ ".<range>" after the first) + ".tmp"; NotFound (saying
// nothing was written to `target`) when no tensor arrives.
absl::StatusOr<PullStats> PullToSpill(const DeltaClient::Impl& impl, const std::string& task,
                                      const std::string& spill_path, const std::string& target,
                                      const PullOptions& options,
                                      std::vector<std::unique_ptr<SpillSink>>* sinks,
                                      const v1::TaskInfo* listed = nullptr) {
  DS_RETURN_IF_ERROR(CheckStreams(options));
  auto make_sink = [&](size_t range) -> absl::StatusOr<WeightsSink*> {
    DS_ASSIGN_OR_RETURN(std::unique_ptr<common::AtomicFileWriter> spill,
                        common::AtomicFileWriter::Open(
                            range == 0 ? spill_path : absl::StrCat(spill_path, ".", range)));
    sinks->push_back(std::make_unique<SpillSink>(std::move(spill)));
    return sinks->back().get();
  };
  DS_ASSIGN_OR_RETURN(PullStats stats, PullRanges(impl, task, options, make_sink, listed));
  // The spills are removed with `sinks`.
  if (stats.tensors == 0) return NoTensorsError(impl, task, target, options);
  return stats;
}

std::vector<SpillSink*> Pointers(const std::vector<std::unique_ptr<SpillSink>>& sinks) {
  std::vector<SpillSink*> out;
  for (const auto& sink : sinks) out.push_back(sink.get());
  return out;
}

}  // namespace

absl::StatusOr<PullStats> DeltaClient::PullWeights(const std::string& task,
                                                   const std::string& out_path,
                                                   const PullOptions& options) {
  // Checked before any byte is fetched (a pull can take minutes).
  DS_RETURN_IF_ERROR(common::CheckOutputFilePath(
      out_path,
      "a checkpoint directory is written by PullWeightsToDirectory, deltactl pull --out-dir"));
  DS_RETURN_IF_ERROR(CheckStreams(options));
  if (options.include.empty() && options.include_regex.empty()) {
    return PullPlaced(*impl_, task, out_path, options);
  }
  // A name filter is applied by the server: which tensors come, and so where each goes
  // in the file, is known only once they have all arrived.
  std::vector<std::unique_ptr<SpillSink>> sinks;
  DS_ASSIGN_OR_RETURN(PullStats stats,
                      PullToSpill(*impl_, task, out_path + ".data", out_path, options, &sinks));
  DS_RETURN_IF_ERROR(WriteSpilled(Pointers(sinks), out_path, /*max_shard_bytes=*/0));
  return stats;
}

absl::StatusOr<PullStats> DeltaClient::PullWeightsToDirectory(const std::string& task,
                                                              const std::string& dir,
                                                              uint64_t max_shard_bytes,
                                                              const PullOptions& options) {
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max_shard_bytes must be positive");
  // A failed or interrupted pull (a missing task, a full disk, Ctrl-C in deltactl)
  // leaves no directory of its own making behind, and an earlier checkpoint in one that
  // was there as it was: every file (side files, shards, the index last) is staged and
  // fsynced first, and renamed into `dir` only when all are complete (StagedFiles). The
  // spill lies in the staging directory too, under a name no side file can take.
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::ScopedOutputDir> out,
                      common::ScopedOutputDir::Create(dir));
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::StagedFiles> staged,
                      common::StagedFiles::Create(dir));
  const std::string label = absl::StrCat("StreamWeights ", TaskLabel(impl_->options, task));
  // Every stream, and the side files, must be this version of the task.
  DS_ASSIGN_OR_RETURN(v1::TaskInfo info, GetTaskTensors(*impl_, task, label));
  std::vector<std::unique_ptr<SpillSink>> sinks;
  DS_ASSIGN_OR_RETURN(PullStats stats, PullToSpill(*impl_, task, staged->ScratchPath("weights"),
                                                   dir, options, &sinks, &info));
  for (const v1::SideFileInfo& f : info.side_files()) {
    DS_RETURN_IF_ERROR(CheckSideFileName(f.name(), label));
    DS_ASSIGN_OR_RETURN(std::string data, GetSideFile(task, f.name()));
    if (data.size() != f.size_bytes() || XXH3_64bits(data.data(), data.size()) != f.xxh3_64()) {
      return absl::AbortedError(absl::StrCat(label, ": the task changed during the pull (side file '",
                                             codec::Utf8OrEscaped(f.name()),
                                             "' is not the one GetTask listed); pull again"));
    }
    DS_RETURN_IF_ERROR(common::WriteFileAtomically(
        staged->Add(f.name()),
        {absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size())}));
    stats.side_files.push_back(f.name());
  }
  DS_ASSIGN_OR_RETURN(std::set<std::string> shards,
                      StageSpilledShards(Pointers(sinks), staged.get(), max_shard_bytes));
  sinks.clear();  // the spill files go before the renames
  DS_RETURN_IF_ERROR(staged->Publish());
  out->Keep();
  DS_RETURN_IF_ERROR(codec::RemoveReplacedWeightFiles(dir, shards));
  return stats;
}

absl::StatusOr<PulledModel> DeltaClient::PullWeightsToMemory(const std::string& task,
                                                             const PullOptions& options) {
  DS_RETURN_IF_ERROR(CheckStreams(options));
  PulledModel model;
  std::vector<PulledModel> parts;
  std::vector<std::unique_ptr<MemorySink>> sinks;
  parts.reserve(options.streams);  // the sinks point into it
  DS_ASSIGN_OR_RETURN(model.stats, PullRanges(*impl_, task, options, [&](size_t) -> WeightsSink* {
                        parts.emplace_back();
                        sinks.push_back(std::make_unique<MemorySink>(&parts.back()));
                        return sinks.back().get();
                      }));
  for (PulledModel& part : parts) {
    if (model.metadata.empty()) {
      model.metadata = std::move(part.metadata);
      model.task = std::move(part.task);
    }
    std::move(part.tensors.begin(), part.tensors.end(), std::back_inserter(model.tensors));
  }
  return model;
}

absl::StatusOr<DeltaStats> DeltaClient::StreamDelta(const std::string& task,
                                                    const std::string& out_path,
                                                    const ProgressFn& progress) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::AtomicFileWriter> out,
                      common::AtomicFileWriter::Open(out_path));
  DS_ASSIGN_OR_RETURN(
      DeltaStats stats,
      RunStreamDelta(*impl_, task, progress,
                     [&](absl::Span<const uint8_t> data, uint64_t) { return out->Append(data); }));
  DS_RETURN_IF_ERROR(out->Commit());
  return stats;
}

absl::StatusOr<std::vector<uint8_t>> DeltaClient::FetchDelta(const std::string& task,
                                                             const ProgressFn& progress) {
  std::vector<uint8_t> bytes;
  DS_RETURN_IF_ERROR(
      RunStreamDelta(*impl_, task, progress, [&](absl::Span<const uint8_t> data, uint64_t total) {
        if (bytes.empty()) bytes.reserve(total);
        bytes.insert(bytes.end(), data.begin(), data.end());
        return absl::OkStatus();
      }).status());
  return bytes;
}

}  // namespace deltaserve::client
