// DeltaClient downloads: StreamWeights (pull) and StreamDelta, with every byte verified.
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/internal/impl.h"
#include "client/internal/status.h"
#include "codec/safetensors.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace deltaserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Receives a verified weight stream. Data() calls of one tensor come between its
// TensorBegin() and TensorEnd(); TensorEnd() comes after the tensor's checksum matched.
class WeightsSink {
 public:
  virtual ~WeightsSink() = default;
  virtual absl::Status Begin(const v1::StreamBegin& begin) = 0;
  virtual absl::Status TensorBegin(const codec::TensorInfo& info) = 0;
  virtual absl::Status Data(absl::Span<const uint8_t> data) = 0;
  virtual absl::Status TensorEnd() { return absl::OkStatus(); }
};

// Checks the framing of a StreamWeights response stream (begin, then per tensor a header
// and chunks of exactly byte_length bytes at increasing offsets, then end) and the
// XXH3-64 of every tensor, forwarding to a sink.
class WeightsStreamChecker {
 public:
  WeightsStreamChecker(std::string label, WeightsSink* sink, const PullOptions& options)
      : label_(std::move(label)), sink_(sink), options_(options), hash_(XXH3_createState()) {}
  ~WeightsStreamChecker() { XXH3_freeState(hash_); }

  absl::Status Handle(const v1::StreamWeightsResponse& msg) {
    switch (msg.msg_case()) {
      case v1::StreamWeightsResponse::kBegin:
        if (began_) return Bad("second begin message");
        began_ = true;
        begin_ = msg.begin();
        progress_.bytes_total = begin_.total_bytes();
        progress_.tensors_total = begin_.num_tensors();
        return sink_->Begin(begin_);
      case v1::StreamWeightsResponse::kHeader:
        return Header(msg.header());
      case v1::StreamWeightsResponse::kChunk:
        return Chunk(msg.chunk());
      case v1::StreamWeightsResponse::kEnd:
        if (!began_ || in_tensor_ || ended_) return Bad("end message out of place");
        if (msg.end().num_tensors() != stats_.tensors || msg.end().total_bytes() != stats_.bytes ||
            begin_.num_tensors() != stats_.tensors || begin_.total_bytes() != stats_.bytes) {
          return Bad(absl::StrCat("received ", stats_.tensors, " tensors / ", stats_.bytes,
                                  " bytes; begin announced ", begin_.num_tensors(), " / ",
                                  begin_.total_bytes(), ", end says ", msg.end().num_tensors(),
                                  " / ", msg.end().total_bytes()));
        }
        ended_ = true;
        return absl::OkStatus();
      default:
        return Bad("empty message");
    }
  }

  bool ended() const { return ended_; }
  PullStats& stats() { return stats_; }

 private:
  absl::Status Bad(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(label_, ": malformed stream: ", what));
  }

  absl::Status Header(const v1::TensorHeader& h) {
    if (!began_ || in_tensor_ || ended_) return Bad("tensor header out of place");
    absl::StatusOr<codec::DType> dtype = proto::FromProtoDType(h.dtype());
    if (!dtype.ok())
      return Bad(absl::StrCat("tensor '", h.name(), "': ", dtype.status().message()));
    header_ = h;
    info_ = codec::TensorInfo{h.name(), *dtype, {h.shape().begin(), h.shape().end()}};
    absl::StatusOr<int64_t> n = codec::CheckedNumElements(info_.shape);
    if (!n.ok() || static_cast<uint64_t>(*n) * codec::DTypeSize(*dtype) != h.byte_length()) {
      return Bad(absl::StrCat("tensor '", h.name(), "' announces ", h.byte_length(),
                              " bytes for shape ", codec::ShapeString(info_.shape)));
    }
    if (stats_.tensors == 0) stats_.first_tensor_seconds = SecondsSince(start_);
    XXH3_64bits_reset(hash_);
    received_ = 0;
    in_tensor_ = true;
    progress_.current = h.name();
    DS_RETURN_IF_ERROR(sink_->TensorBegin(info_));
    DS_RETURN_IF_ERROR(MaybeFinishTensor());
    if (!in_tensor_) Report();  // an empty tensor has no chunks
    return absl::OkStatus();
  }

  absl::Status Chunk(const v1::TensorChunk& c) {
    if (!in_tensor_) return Bad("chunk outside a tensor");
    if (c.offset() != received_ || c.data().size() > header_.byte_length() - received_) {
      return Bad(absl::StrCat("tensor '", header_.name(), "': chunk at offset ", c.offset(), " of ",
                              c.data().size(), " bytes after ", received_, " of ",
                              header_.byte_length(), " bytes"));
    }
    const auto* data = reinterpret_cast<const uint8_t*>(c.data().data());
    XXH3_64bits_update(hash_, data, c.data().size());
    DS_RETURN_IF_ERROR(sink_->Data({data, c.data().size()}));
    received_ += c.data().size();
    stats_.bytes += c.data().size();
    DS_RETURN_IF_ERROR(MaybeFinishTensor());
    Report();
    return absl::OkStatus();
  }

  void Report() {
    if (!options_.progress) return;
    progress_.bytes_done = stats_.bytes;
    options_.progress(progress_);
  }

  absl::Status MaybeFinishTensor() {
    if (received_ != header_.byte_length()) return absl::OkStatus();
    const uint64_t got = XXH3_64bits_digest(hash_);
    if (got != header_.xxh3_64()) {
      return absl::DataLossError(absl::StrCat(label_, ": tensor '", header_.name(),
                                              "' checksum mismatch (XXH3-64 ", got,
                                              ", header says ", header_.xxh3_64(), ")"));
    }
    in_tensor_ = false;
    ++stats_.tensors;
    progress_.tensors_done = stats_.tensors;
    return sink_->TensorEnd();
  }

  const std::string label_;
  WeightsSink* sink_;
  const PullOptions& options_;
  XXH3_state_t* hash_;
  const Clock::time_point start_ = Clock::now();
  bool began_ = false, in_tensor_ = false, ended_ = false;
  v1::StreamBegin begin_;
  v1::TensorHeader header_;
  codec::TensorInfo info_;
  uint64_t received_ = 0;
  PullStats stats_;
  Progress progress_;
};

// Spills tensor data to a scratch file and remembers the layout.
class SpillSink : public WeightsSink {
 public:
  explicit SpillSink(std::unique_ptr<common::AtomicFileWriter> spill) : spill_(std::move(spill)) {}
  absl::Status Begin(const v1::StreamBegin& begin) override {
    metadata_.insert(begin.safetensors_metadata().begin(), begin.safetensors_metadata().end());
    return absl::OkStatus();
  }
  absl::Status TensorBegin(const codec::TensorInfo& info) override {
    tensors_.push_back({info, spill_->size()});
    return absl::OkStatus();
  }
  absl::Status Data(absl::Span<const uint8_t> data) override { return spill_->Append(data); }

  // Writes the safetensors file from the spilled data.
  absl::Status Finish(const std::string& out_path) {
    return WithViews([&](const std::vector<codec::TensorView>& views) {
      return codec::WriteSafetensors(out_path, views, metadata_);
    });
  }
  // Writes a sharded checkpoint directory from the spilled data.
  absl::Status FinishSharded(const std::string& dir, uint64_t max_shard_bytes) {
    return WithViews([&](const std::vector<codec::TensorView>& views) {
      return codec::WriteShardedSafetensors(dir, views, metadata_, max_shard_bytes);
    });
  }

 private:
  // Calls write(views of the spilled tensors, in stream order) over the mapped spill.
  absl::Status WithViews(
      const std::function<absl::Status(const std::vector<codec::TensorView>&)>& write) {
    DS_RETURN_IF_ERROR(spill_->Close());
    DS_ASSIGN_OR_RETURN(std::unique_ptr<common::MappedFile> mapped,
                        common::MappedFile::Open(spill_->tmp_path()));
    std::vector<codec::TensorView> views;
    views.reserve(tensors_.size());
    for (const auto& [info, offset] : tensors_) {
      views.push_back({info, mapped->bytes().subspan(offset, info.num_bytes())});
    }
    return write(views);
  }

  std::unique_ptr<common::AtomicFileWriter> spill_;  // removed when the sink is destroyed
  std::vector<std::pair<codec::TensorInfo, uint64_t>> tensors_;
  std::map<std::string, std::string> metadata_;
};

class MemorySink : public WeightsSink {
 public:
  explicit MemorySink(PulledModel* out) : out_(out) {}
  absl::Status Begin(const v1::StreamBegin& begin) override {
    out_->task = begin.task();
    out_->metadata.insert(begin.safetensors_metadata().begin(), begin.safetensors_metadata().end());
    return absl::OkStatus();
  }
  absl::Status TensorBegin(const codec::TensorInfo& info) override {
    out_->tensors.push_back({info, {}});
    out_->tensors.back().data.reserve(info.num_bytes());
    return absl::OkStatus();
  }
  absl::Status Data(absl::Span<const uint8_t> data) override {
    auto& buf = out_->tensors.back().data;
    buf.insert(buf.end(), data.begin(), data.end());
    return absl::OkStatus();
  }

 private:
  PulledModel* out_;
};

// Runs StreamWeights for `task` into `sink`.
absl::StatusOr<PullStats> RunStreamWeights(const DeltaClient::Impl& impl, const std::string& task,
                                           const PullOptions& options, WeightsSink* sink) {
  const std::string label = absl::StrCat("StreamWeights ", TaskLabel(impl.options, task));
  v1::StreamWeightsRequest request;
  request.set_tenant(impl.options.tenant);
  request.set_task(task);
  if (options.out_dtype) request.set_out_dtype(proto::ToProtoDType(*options.out_dtype));
  for (const std::string& glob : options.include) request.add_include(glob);
  request.set_include_regex(options.include_regex);
  if (!options.resume_from.empty()) request.set_resume_from_name(options.resume_from);
  request.set_chunk_bytes(options.chunk_bytes);
  DS_RETURN_IF_ERROR(CheckStringFieldsUtf8(request, label));

  const Clock::time_point start = Clock::now();
  grpc::ClientContext ctx;
  impl.Prepare(&ctx, impl.options.stream_deadline);
  std::unique_ptr<grpc::ClientReader<v1::StreamWeightsResponse>> reader =
      impl.stub->StreamWeights(&ctx, request);
  WeightsStreamChecker checker(label, sink, options);
  v1::StreamWeightsResponse msg;
  absl::Status local;
  while (reader->Read(&msg)) {
    if (Cancelled(options.cancel)) {
      local = absl::CancelledError(absl::StrCat(label, ": cancelled by the caller"));
    } else {
      local = checker.Handle(msg);
    }
    if (!local.ok()) {
      ctx.TryCancel();
      while (reader->Read(&msg)) {
      }
      break;
    }
  }
  grpc::Status status = reader->Finish();
  DS_RETURN_IF_ERROR(local);
  DS_RETURN_IF_ERROR(FromGrpcStatus(status, label));
  if (!checker.ended()) {
    return absl::DataLossError(absl::StrCat(label, ": stream ended without an end message"));
  }
  checker.stats().seconds = SecondsSince(start);
  return checker.stats();
}

// Runs StreamDelta for `task`, verifying offsets, size and XXH3-64; `on_data` gets the
// bytes in order (and the announced total size).
absl::StatusOr<DeltaStats> RunStreamDelta(
    const DeltaClient::Impl& impl, const std::string& task, const ProgressFn& progress,
    const std::function<absl::Status(absl::Span<const uint8_t>, uint64_t)>& on_data) {
  const std::string label = absl::StrCat("StreamDelta ", TaskLabel(impl.options, task));
  v1::StreamDeltaRequest request;
  request.set_tenant(impl.options.tenant);
  request.set_task(task);
  DS_RETURN_IF_ERROR(CheckStringFieldsUtf8(request, label));
  const Clock::time_point start = Clock::now();
  grpc::ClientContext ctx;
  impl.Prepare(&ctx, impl.options.stream_deadline);
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

// Streams `task` into a SpillSink whose scratch file is `spill_path` + ".tmp"; NotFound
// (saying nothing was written to `target`) when no tensor arrives.
absl::StatusOr<PullStats> PullToSpill(const DeltaClient::Impl& impl, const std::string& task,
                                      const std::string& spill_path, const std::string& target,
                                      const PullOptions& options, std::unique_ptr<SpillSink>* sink) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::AtomicFileWriter> spill,
                      common::AtomicFileWriter::Open(spill_path));
  *sink = std::make_unique<SpillSink>(std::move(spill));
  DS_ASSIGN_OR_RETURN(PullStats stats, RunStreamWeights(impl, task, options, sink->get()));
  if (stats.tensors == 0) {
    // An empty file would look like a successful pull; the spill is removed with `sink`.
    const bool filtered = !options.include.empty() || !options.include_regex.empty() ||
                          !options.resume_from.empty();
    return absl::NotFoundError(absl::StrCat(
        "StreamWeights ", TaskLabel(impl.options, task), ": ",
        filtered ? "no tensor matches the filter" : "the task has no tensors",
        "; nothing written to ", target));
  }
  return stats;
}

}  // namespace

absl::StatusOr<PullStats> DeltaClient::PullWeights(const std::string& task,
                                                   const std::string& out_path,
                                                   const PullOptions& options) {
  std::unique_ptr<SpillSink> sink;
  DS_ASSIGN_OR_RETURN(PullStats stats,
                      PullToSpill(*impl_, task, out_path + ".data", out_path, options, &sink));
  DS_RETURN_IF_ERROR(sink->Finish(out_path));
  return stats;
}

absl::StatusOr<PullStats> DeltaClient::PullWeightsToDirectory(const std::string& task,
                                                              const std::string& dir,
                                                              uint64_t max_shard_bytes,
                                                              const PullOptions& options) {
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max_shard_bytes must be positive");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot create directory ", dir));
  std::unique_ptr<SpillSink> sink;
  DS_ASSIGN_OR_RETURN(
      PullStats stats,
      PullToSpill(*impl_, task, (std::filesystem::path(dir) / ".pull.data").string(), dir,
                  options, &sink));
  DS_RETURN_IF_ERROR(sink->FinishSharded(dir, max_shard_bytes));
  DS_ASSIGN_OR_RETURN(stats.side_files, WriteSideFiles(task, dir));
  return stats;
}

absl::StatusOr<PulledModel> DeltaClient::PullWeightsToMemory(const std::string& task,
                                                             const PullOptions& options) {
  PulledModel model;
  MemorySink sink(&model);
  DS_ASSIGN_OR_RETURN(model.stats, RunStreamWeights(*impl_, task, options, &sink));
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
