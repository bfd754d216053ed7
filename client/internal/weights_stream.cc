#include "client/internal/weights_stream.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "codec/safetensors.h"
#include "common/status_macros.h"

namespace deltaserve::client {
namespace {

std::string TaskVersionText(const v1::TaskInfo& t) {
  std::string text = absl::StrCat(t.container_bytes(), " bytes committed at ", t.created_unix());
  if (t.has_container_xxh3_64()) {
    absl::StrAppend(&text, ", content ", absl::Hex(t.container_xxh3_64(), absl::kZeroPad16));
  }
  return text;
}

}  // namespace

absl::Status CheckSameTaskVersion(const v1::TaskInfo& want, const v1::TaskInfo& got,
                                  absl::string_view label, absl::string_view what) {
  // The content hash alone decides when both sides have it: created_unix has whole
  // seconds and same-size containers are common (two dct finetunes of one base), so
  // two overwrites within a second looked the same and a pull mixed their tensors.
  const bool same = want.has_container_xxh3_64() || got.has_container_xxh3_64()
                        ? want.has_container_xxh3_64() && got.has_container_xxh3_64() &&
                              want.container_xxh3_64() == got.container_xxh3_64() &&
                              want.base_hash() == got.base_hash()
                        : want.created_unix() == got.created_unix() &&
                              want.base_hash() == got.base_hash() &&
                              want.container_bytes() == got.container_bytes();
  if (same) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(label, ": ", what, " (it was ", TaskVersionText(want),
                                         ", this stream serves ", TaskVersionText(got),
                                         "); pull again"));
}

WeightsStreamChecker::WeightsStreamChecker(std::string label, WeightsSink* sink,
                                           const PullOptions& options, Clock::time_point start)
    : label_(std::move(label)),
      sink_(sink),
      options_(options),
      hash_(XXH3_createState()),
      start_(start) {}

WeightsStreamChecker::~WeightsStreamChecker() { XXH3_freeState(hash_); }

absl::Status WeightsStreamChecker::Handle(const v1::StreamWeightsResponse& msg) {
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
                                begin_.total_bytes(), ", end says ", msg.end().num_tensors(), " / ",
                                msg.end().total_bytes()));
      }
      ended_ = true;
      return absl::OkStatus();
    default:
      return Bad("empty message");
  }
}

absl::Status WeightsStreamChecker::Bad(absl::string_view what) const {
  return absl::DataLossError(absl::StrCat(label_, ": malformed stream: ", what));
}

int64_t WeightsStreamChecker::partial_index() const {
  // Still waiting for the resumed tensor's header: it is still the partial one.
  if (resumed_header_.has_value()) return static_cast<int64_t>(resumed_header_->index());
  return in_tensor_ && received_ > 0 ? static_cast<int64_t>(header_.index()) : -1;
}

void WeightsStreamChecker::ContinueFrom(const WeightsStreamChecker& previous) {
  resumed_header_ = previous.resumed_header_.value_or(previous.header_);
  received_ = previous.received_;
  XXH3_copyState(hash_, previous.hash_);
}

absl::Status WeightsStreamChecker::Header(const v1::TensorHeader& h) {
  if (!began_ || in_tensor_ || ended_) return Bad("tensor header out of place");
  if (resumed_header_.has_value()) {
    // The resumed tensor: the same one, its checksum in this header (the server never
    // lets it follow a resumed tensor's data); the bytes before received_ are kept.
    const v1::TensorHeader was = *std::exchange(resumed_header_, std::nullopt);
    if (h.index() != was.index() || h.name() != was.name() || h.dtype() != was.dtype() ||
        h.byte_length() != was.byte_length() || h.checksum_follows()) {
      return Bad(absl::StrCat("resumed tensor '", was.name(), "' (index ", was.index(),
                              ") came back as '", h.name(), "' (index ", h.index(), ", ",
                              h.byte_length(), " bytes", h.checksum_follows() ? ", checksum_follows" : "",
                              ")"));
    }
    header_ = h;
    in_tensor_ = true;
    progress_.current = h.name();
    DS_RETURN_IF_ERROR(MaybeFinishTensor());
    if (!in_tensor_) Report();
    return absl::OkStatus();
  }
  absl::StatusOr<codec::DType> dtype = proto::FromProtoDType(h.dtype());
  if (!dtype.ok()) return Bad(absl::StrCat("tensor '", h.name(), "': ", dtype.status().message()));
  header_ = h;
  info_ = codec::TensorInfo{h.name(), *dtype, {h.shape().begin(), h.shape().end()}};
  absl::StatusOr<int64_t> n = codec::CheckedNumElements(info_.shape);
  if (!n.ok() || static_cast<uint64_t>(*n) * codec::DTypeSize(*dtype) != h.byte_length()) {
    return Bad(absl::StrCat("tensor '", h.name(), "' announces ", h.byte_length(),
                            " bytes for shape ", codec::ShapeString(info_.shape)));
  }
  if (h.checksum_follows() && h.byte_length() == 0) {
    return Bad(absl::StrCat("empty tensor '", h.name(), "' with checksum_follows"));
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

absl::Status WeightsStreamChecker::Chunk(const v1::TensorChunk& c) {
  if (!in_tensor_) return Bad("chunk outside a tensor");
  if (c.offset() != received_ || c.data().size() > header_.byte_length() - received_) {
    return Bad(absl::StrCat("tensor '", header_.name(), "': chunk at offset ", c.offset(), " of ",
                            c.data().size(), " bytes after ", received_, " of ",
                            header_.byte_length(), " bytes"));
  }
  // checksum_follows: the tensor's XXH3-64 rides on its last chunk, and only there.
  const bool last = received_ + c.data().size() == header_.byte_length();
  if (c.has_tensor_xxh3_64() != (header_.checksum_follows() && last)) {
    return Bad(absl::StrCat("tensor '", header_.name(), "': chunk at offset ", c.offset(),
                            c.has_tensor_xxh3_64() ? " carries" : " lacks",
                            " the tensor checksum (checksum_follows: ",
                            header_.checksum_follows() ? "yes" : "no", ")"));
  }
  if (c.has_tensor_saturated_values() && !c.has_tensor_xxh3_64()) {
    return Bad(absl::StrCat("tensor '", header_.name(), "': chunk at offset ", c.offset(),
                            " carries tensor_saturated_values without the tensor checksum"));
  }
  if (c.has_tensor_xxh3_64()) header_.set_xxh3_64(c.tensor_xxh3_64());
  if (c.has_tensor_saturated_values()) header_.set_saturated_values(c.tensor_saturated_values());
  const auto* data = reinterpret_cast<const uint8_t*>(c.data().data());
  XXH3_64bits_update(hash_, data, c.data().size());
  DS_RETURN_IF_ERROR(sink_->Data({data, c.data().size()}));
  received_ += c.data().size();
  stats_.bytes += c.data().size();
  DS_RETURN_IF_ERROR(MaybeFinishTensor());
  Report();
  return absl::OkStatus();
}

void WeightsStreamChecker::Report() {
  if (!options_.progress) return;
  progress_.bytes_done = stats_.bytes;
  options_.progress(progress_);
}

absl::Status WeightsStreamChecker::MaybeFinishTensor() {
  if (received_ != header_.byte_length()) return absl::OkStatus();
  const uint64_t got = XXH3_64bits_digest(hash_);
  if (got != header_.xxh3_64()) {
    return absl::DataLossError(absl::StrCat(
        label_, ": tensor '", header_.name(), "' checksum mismatch (XXH3-64 ", got, ", ",
        header_.checksum_follows() ? "last chunk" : "header", " says ", header_.xxh3_64(), ")"));
  }
  // Checked once the count is known (in the header, or the last chunk).
  const absl::StatusOr<codec::DType> dtype = proto::FromProtoDType(header_.dtype());
  if (const uint64_t elements = dtype.ok() ? header_.byte_length() / codec::DTypeSize(*dtype) : 0;
      header_.saturated_values() > elements) {
    return Bad(absl::StrCat("tensor '", header_.name(), "' says ", header_.saturated_values(),
                            " values saturated of ", elements));
  }
  in_tensor_ = false;
  ++stats_.tensors;
  AddSaturated(header_.name(), header_.saturated_values(), 1, &stats_);
  last_verified_index_ = header_.index();
  progress_.tensors_done = stats_.tensors;
  return sink_->TensorEnd();
}

void AddSaturated(const std::string& name, uint64_t values, uint32_t tensors, PullStats* stats) {
  if (values == 0) return;
  if (stats->saturated_tensors == 0) stats->first_saturated_tensor = name;
  stats->saturated_values += values;
  stats->saturated_tensors += tensors;
}

absl::StatusOr<v1::StreamWeightsRequest> MakeStreamWeightsRequest(const ClientOptions& client,
                                                                  const std::string& task,
                                                                  const PullOptions& options,
                                                                  const std::string& label) {
  v1::StreamWeightsRequest request;
  request.set_tenant(client.tenant);
  request.set_task(task);
  if (options.out_dtype) request.set_out_dtype(proto::ToProtoDType(*options.out_dtype));
  for (const std::string& glob : options.include) request.add_include(glob);
  request.set_include_regex(options.include_regex);
  if (!options.resume_from.empty()) request.set_resume_from_name(options.resume_from);
  request.set_chunk_bytes(options.chunk_bytes);
  // Every tensor is still verified: a tensor being decoded streams its rows at once and
  // its checksum follows in its last chunk (WeightsStreamChecker::Chunk).
  request.set_checksum_after_data(true);
  DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(request, label));
  // Refused here, as the server would refuse it, before any call is made.
  if (absl::Status s = proto::CheckIncludeRegex(options.include_regex); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": include_regex '",
                                                   options.include_regex, "': ", s.message()));
  }
  return request;
}

namespace {

// gRPC's status for a stream the peer reset (RST_STREAM) rather than finished: what a
// client behind a proxy sees when the server the proxy forwarded to goes away.
bool StreamWasReset(const grpc::Status& s) {
  const std::string& m = s.error_message();
  return (s.error_code() == grpc::StatusCode::UNKNOWN && m == "Stream removed") ||
         (s.error_code() == grpc::StatusCode::INTERNAL &&
          absl::StartsWith(m, "Received RST_STREAM"));
}

}  // namespace

absl::Status RunStreamWeightsCall(const DeltaClient::Impl& impl, v1::DeltaService::Stub* stub,
                                  const v1::StreamWeightsRequest& request,
                                  const PullOptions& options, const std::atomic<bool>* stop,
                                  WeightsStreamChecker* checker, absl::Time deadline) {
  grpc::ClientContext ctx;
  impl.Prepare(&ctx, impl.options.stream_deadline, request.task());
  if (deadline != absl::InfiniteFuture()) ctx.set_deadline(absl::ToChronoTime(deadline));
  std::unique_ptr<grpc::ClientReader<v1::StreamWeightsResponse>> reader =
      stub->StreamWeights(&ctx, request);
  v1::StreamWeightsResponse msg;
  absl::Status local;
  while (reader->Read(&msg)) {
    if (Cancelled(options.cancel) || Cancelled(stop)) {
      local = absl::CancelledError(absl::StrCat(checker->label(), ": cancelled by the caller"));
    } else {
      local = checker->Handle(msg);
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
  if (!checker->ended() && StreamWasReset(status)) {
    // A proxy in front of the server (HAProxy) resets the stream when the replica
    // behind it dies: as transient as a dropped connection, so resumable.
    return absl::UnavailableError(
        absl::StrCat(checker->label(),
                     ": connection dropped (the stream was reset: ", status.error_message(), ")"));
  }
  DS_RETURN_IF_ERROR(FromGrpcStatus(status, checker->label()));
  if (!checker->ended()) {
    return absl::DataLossError(
        absl::StrCat(checker->label(), ": stream ended without an end message"));
  }
  return absl::OkStatus();
}

absl::Status SpillSink::Begin(const v1::StreamBegin& begin) {
  metadata_.insert(begin.safetensors_metadata().begin(), begin.safetensors_metadata().end());
  return absl::OkStatus();
}

absl::Status SpillSink::TensorBegin(const codec::TensorInfo& info) {
  tensors_.push_back({info, spill_->size()});
  return absl::OkStatus();
}

absl::Status SpillSink::TensorEnd() {
  finished_ = tensors_.size();
  return absl::OkStatus();
}

void SpillSink::DropUnfinished() { tensors_.resize(finished_); }

absl::Status SpillSink::MapViews(std::vector<codec::TensorView>* views) {
  DS_RETURN_IF_ERROR(spill_->Close());
  DS_ASSIGN_OR_RETURN(mapped_, common::MappedFile::Open(spill_->tmp_path()));
  for (size_t i = 0; i < finished_; ++i) {
    const auto& [info, offset] = tensors_[i];
    views->push_back({info, mapped_->bytes().subspan(offset, info.num_bytes())});
  }
  return absl::OkStatus();
}

absl::Status WriteSpilled(const std::vector<SpillSink*>& sinks, const std::string& out_path,
                          uint64_t max_shard_bytes) {
  std::vector<codec::TensorView> views;
  for (SpillSink* sink : sinks) DS_RETURN_IF_ERROR(sink->MapViews(&views));
  const std::map<std::string, std::string>& metadata = sinks.front()->metadata();
  if (max_shard_bytes == 0) return codec::WriteSafetensors(out_path, views, metadata);
  return codec::WriteShardedSafetensors(out_path, views, metadata, max_shard_bytes);
}

absl::StatusOr<std::set<std::string>> StageSpilledShards(const std::vector<SpillSink*>& sinks,
                                                         common::StagedFiles* staged,
                                                         uint64_t max_shard_bytes) {
  std::vector<codec::TensorView> views;
  for (SpillSink* sink : sinks) DS_RETURN_IF_ERROR(sink->MapViews(&views));
  return codec::StageShardedSafetensors(staged, views, sinks.front()->metadata(),
                                        max_shard_bytes);
}

absl::Status MemorySink::Begin(const v1::StreamBegin& begin) {
  out_->task = begin.task();
  out_->metadata.insert(begin.safetensors_metadata().begin(), begin.safetensors_metadata().end());
  return absl::OkStatus();
}

absl::Status MemorySink::TensorBegin(const codec::TensorInfo& info) {
  out_->tensors.push_back({info, {}});
  out_->tensors.back().data.reserve(info.num_bytes());
  return absl::OkStatus();
}

absl::Status MemorySink::Data(absl::Span<const uint8_t> data) {
  auto& buf = out_->tensors.back().data;
  buf.insert(buf.end(), data.begin(), data.end());
  return absl::OkStatus();
}

absl::Status MemorySink::TensorEnd() {
  finished_ = out_->tensors.size();
  return absl::OkStatus();
}

void MemorySink::DropUnfinished() { out_->tensors.resize(finished_); }

}  // namespace deltaserve::client
