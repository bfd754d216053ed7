// StreamWeights: merged tensors of a task, decoded on the pool, sent with backpressure.
//
// Pipeline per stream: Setup (pool: auth, snapshot, plan) -> for each planned tensor a
// Fetch (pool: merged-tensor cache, single flight, decode on a miss) at most
// `prefetch_tensors` ahead of the tensor being sent -> Pump sends begin, then per tensor
// a header and its chunks, then end. One write is in flight at a time (gRPC's rule) and
// the next message is built while it is (two message slots), so a slow client holds
// the pipeline: nothing more is decoded until the window moves.
//
// Memory per stream: (1 + prefetch_tensors) merged tensors (shared with the cache when
// cached) + 2 chunk messages. The unit of decoding is a whole tensor, so the bound for
// a model is its largest tensors, not its total size.
//
// Cancellation (OnCancel, or a failed write when the client vanished) sets cancelled_:
// fetches not yet started are skipped, no new fetch is scheduled, and the call finishes
// as soon as no write is in flight. A decode already running on a worker completes
// (one tensor) and its result goes to the cache.
//
// Lifetime: refs_ counts gRPC (released in OnDone) and every scheduled pool closure;
// the reactor deletes itself when the last one lets go.
#include <fnmatch.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/delta_codec.h"
#include "common/status_macros.h"
#include "re2/re2.h"
#include "proto/protocol.h"
#include "server/internal/convert.h"
#include "server/internal/service.h"

namespace deltaserve::server::internal {
namespace {

using Response = v1::StreamWeightsResponse;

// Indices of the tensors to send, in container order. Errors: InvalidArgument (bad
// regex), NotFound (resume name), OutOfRange (resume index).
absl::StatusOr<std::vector<uint32_t>> PlanTensors(const v1::StreamWeightsRequest& req,
                                                  const storage::TaskInfo& info) {
  std::unique_ptr<RE2> regex;
  if (!req.include_regex().empty()) {
    regex = std::make_unique<RE2>(req.include_regex(), RE2::Quiet);
    if (!regex->ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("include_regex '", req.include_regex(), "': ", regex->error()));
    }
  }
  size_t first = 0;
  if (req.resume_case() == v1::StreamWeightsRequest::kResumeFromName) {
    std::optional<size_t> idx = info.FindTensor(req.resume_from_name());
    if (!idx) {
      return absl::NotFoundError(absl::StrCat("resume_from_name: task '", info.task,
                                              "' has no tensor '", req.resume_from_name(), "'"));
    }
    first = *idx;
  } else if (req.resume_case() == v1::StreamWeightsRequest::kResumeFromIndex) {
    first = req.resume_from_index();
    if (first >= info.tensors.size()) {
      return absl::OutOfRangeError(absl::StrCat("resume_from_index ", first, ": task '", info.task,
                                                "' has ", info.tensors.size(), " tensors"));
    }
  }
  std::vector<uint32_t> plan;
  for (size_t i = first; i < info.tensors.size(); ++i) {
    const std::string& name = info.tensors[i].name;
    if (req.include_size() > 0) {
      bool any = false;
      for (const std::string& glob : req.include()) {
        if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) {
          any = true;
          break;
        }
      }
      if (!any) continue;
    }
    if (regex && !RE2::FullMatch(name, *regex)) continue;
    plan.push_back(static_cast<uint32_t>(i));
  }
  return plan;
}

class StreamWeightsReactor final : public grpc::ServerWriteReactor<Response> {
 public:
  StreamWeightsReactor(const ServiceContext* ctx, grpc::CallbackServerContext* call,
                       const v1::StreamWeightsRequest* request)
      : ctx_(ctx), call_(call), request_(request), log_(ctx->metrics, "StreamWeights") {
    ctx_->metrics->streams_in_flight().Increment();
    chunk_bytes_ = ctx_->ChunkBytes(request->chunk_bytes());
    stall_ = ctx_->stalls->Add([this] {
      stall_timed_out_ = true;
      call_->TryCancel();  // frees the write that flow control holds
    });
    absl::Status admitted = ctx_->streams->Acquire();
    admitted_ = admitted.ok();
    if (!admitted_) {
      {
        absl::MutexLock lock(&mu_);
        error_ = admitted;
      }
      Pump();  // finishes with the error at once
      return;
    }
    SchedulePool([this] { Setup(); });
  }

  void OnWriteDone(bool ok) override {
    stall_->WriteDone();
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) {
        cancelled_ = true;  // the client is gone
      } else if (in_flight_payload_ > 0) {
        log_.add_bytes(in_flight_payload_);
        ctx_->metrics->AddStreamedBytes("StreamWeights", in_flight_payload_);
      }
      in_flight_payload_ = 0;
    }
    Pump();
  }

  void OnCancel() override {
    cancelled_ = true;
    Pump();
  }

  void OnDone() override {
    ctx_->stalls->Remove(stall_);
    if (admitted_) ctx_->streams->Release();
    ctx_->metrics->streams_in_flight().Decrement();
    log_.Finish(final_status_);
    Unref();
  }

 private:
  enum class Next { kMessage, kWait, kDone };

  void SchedulePool(std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      ++refs_;
    }
    ctx_->pool->Schedule([this, fn = std::move(fn)] {
      fn();
      Unref();
    });
  }

  void Unref() {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  absl::Status Prepare() {
    DS_ASSIGN_OR_RETURN(Caller caller, ctx_->auth->Authenticate(AuthorizationHeader(*call_)));
    DS_ASSIGN_OR_RETURN(tenant_,
                        ResolveTask(*ctx_, caller, request_->tenant(), request_->task(), log_));
    DS_ASSIGN_OR_RETURN(out_dtype_, proto::FromProtoOutDType(request_->out_dtype()));
    DS_ASSIGN_OR_RETURN(snap_, ctx_->versions->Open(*ctx_->store, tenant_, request_->task()));
    const storage::TaskInfo& info = snap_.reader->info();
    DS_RETURN_IF_ERROR(codec::CheckBaseHashMatch(info.base_hash, ctx_->base_hash,
                                                 absl::StrCat("task '", info.task, "'"),
                                                 "the resident base"));
    DS_ASSIGN_OR_RETURN(plan_, PlanTensors(*request_, info));
    group_ = TaskGroup(tenant_, request_->task());
    v1::StreamBegin* begin = slots_[0].mutable_begin();
    FillTaskInfo(info, /*with_tensors=*/false, ctx_->cache->IsPinned(group_),
                 begin->mutable_task());
    uint64_t total = 0;
    for (uint32_t i : plan_) {
      const storage::TensorEntry& t = info.tensors[i];
      total += static_cast<uint64_t>(codec::NumElements(t.shape)) *
               codec::DTypeSize(out_dtype_.value_or(t.dtype));
    }
    begin->set_num_tensors(static_cast<uint32_t>(plan_.size()));
    begin->set_total_bytes(total);
    // What codec::DecompressModel writes, so that a client writing the tensors in stream
    // order produces the same file.
    for (const auto& [key, value] : codec::MergedModelMetadata(info.base_hash)) {
      (*begin->mutable_safetensors_metadata())[key] = value;
    }
    return absl::OkStatus();
  }

  // Pool.
  void Setup() {
    absl::Status status = cancelled_ ? absl::CancelledError("cancelled") : Prepare();
    {
      absl::MutexLock lock(&mu_);
      if (!status.ok()) {
        error_ = status;
      } else {
        slot_ready_ = true;  // slots_[0] holds `begin`
        setup_done_ = true;
      }
    }
    Pump();
  }

  // Pool: the merged tensor for plan_[pos].
  void Fetch(size_t pos) {
    if (cancelled_) return;
    const size_t index = plan_[pos];
    {
      absl::MutexLock lock(&mu_);
      ++refs_;  // held until the cache delivers (maybe later, on another worker)
    }
    ctx_->cache->GetOrLoad(
        group_, MergedTensorKey(group_, snap_.version, index, out_dtype_),
        [this, index] { return DecodeMergedTensor(*ctx_, *snap_.reader, index, out_dtype_); },
        [this, pos](const absl::StatusOr<MergedTensorPtr>& result, bool) {
          {
            absl::MutexLock lock(&mu_);
            fetched_.emplace(pos, result);
          }
          Pump();
          Unref();
        });
  }

  // Under mu_: fills slots_[slot_] with the next message.
  Next NextMessageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Response& msg = slots_[slot_];
    if (send_pos_ == plan_.size()) {
      if (end_sent_) return Next::kDone;
      end_sent_ = true;
      v1::StreamEnd* end = msg.mutable_end();
      end->set_num_tensors(static_cast<uint32_t>(plan_.size()));
      end->set_total_bytes(sent_total_);
      return Next::kMessage;
    }
    if (!current_) {
      auto it = fetched_.find(send_pos_);
      if (it == fetched_.end()) return Next::kWait;
      if (!it->second.ok()) {
        error_ = it->second.status();
        return Next::kWait;
      }
      current_ = *it->second;
      fetched_.erase(it);
      offset_ = 0;
      v1::TensorHeader* h = msg.mutable_header();
      h->set_name(current_->info.name);
      h->set_dtype(proto::ToProtoDType(current_->info.dtype));
      h->mutable_shape()->Clear();
      for (int64_t d : current_->info.shape) h->add_shape(d);
      h->set_byte_length(current_->data.size());
      h->set_xxh3_64(current_->xxh3_64);
      h->set_index(current_->index);
      if (current_->data.empty()) AdvanceLocked();
      return Next::kMessage;
    }
    size_t n = std::min<size_t>(chunk_bytes_, current_->data.size() - offset_);
    v1::TensorChunk* chunk = msg.mutable_chunk();
    chunk->set_offset(offset_);
    chunk->set_data(current_->data.data() + offset_, n);
    offset_ += n;
    slot_payload_ = n;
    sent_total_ += n;
    if (offset_ == current_->data.size()) AdvanceLocked();
    return Next::kMessage;
  }

  void AdvanceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    current_.reset();
    ++send_pos_;
  }

  // Drives the stream; called after every event, from any thread, never under mu_.
  // Re-entrant calls (StartWrite may run OnWriteDone inline) just ask the running
  // Pump to loop once more.
  void Pump() {
    std::vector<size_t> to_fetch;
    absl::MutexLock lock(&mu_);
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
    do {
      repump_ = false;
      if (finished_) break;
      const bool stop = cancelled_ || !error_.ok();
      if (stop) {
        if (write_in_flight_) break;  // finish after OnWriteDone
        finished_ = true;
        final_status_ =
            !cancelled_        ? error_
            : stall_timed_out_ ? StalledStreamError("StreamWeights", ctx_->options->write_timeout)
                               : ClientEndedStatus(*call_, "StreamWeights");
        mu_.Unlock();
        Finish(ToGrpcStatus(final_status_));
        mu_.Lock();
        break;
      }
      if (!setup_done_) break;
      // Keep up to prefetch_tensors decoded ahead of the one being sent.
      size_t window = 1 + static_cast<size_t>(ctx_->options->prefetch_tensors);
      while (next_fetch_ < plan_.size() && next_fetch_ < send_pos_ + window) {
        to_fetch.push_back(next_fetch_++);
      }
      if (!to_fetch.empty()) {
        refs_ += to_fetch.size();
        mu_.Unlock();
        for (size_t pos : to_fetch) {
          ctx_->pool->Schedule([this, pos] {
            Fetch(pos);
            Unref();
          });
        }
        to_fetch.clear();
        mu_.Lock();
        repump_ = true;
        continue;
      }
      if (!slot_ready_) {
        slot_payload_ = 0;
        Next next = NextMessageLocked();
        if (next == Next::kMessage) {
          slot_ready_ = true;
        } else if (next == Next::kDone) {
          if (write_in_flight_) break;
          finished_ = true;
          final_status_ = absl::OkStatus();
          mu_.Unlock();
          Finish(grpc::Status::OK);
          mu_.Lock();
          break;
        } else {
          if (!error_.ok()) repump_ = true;
          continue;  // kWait: a fetch will Pump again
        }
      }
      if (slot_ready_ && !write_in_flight_) {
        write_in_flight_ = true;
        slot_ready_ = false;
        in_flight_payload_ = slot_payload_;
        const Response* msg = &slots_[slot_];
        slot_ ^= 1;
        mu_.Unlock();
        stall_->WriteStarted();
        StartWrite(msg);
        mu_.Lock();
        repump_ = true;  // build the next message while this one is on the wire
      }
    } while (repump_);
    pumping_ = false;
  }

  const ServiceContext* ctx_;
  grpc::CallbackServerContext* call_;
  const v1::StreamWeightsRequest* request_;
  CallLog log_;
  uint32_t chunk_bytes_ = 0;
  bool admitted_ = false;  // holds a --max-streams slot; set in the constructor only
  std::atomic<bool> cancelled_{false};
  std::shared_ptr<StallWatch::Stream> stall_;
  std::atomic<bool> stall_timed_out_{false};

  // Written by Setup before setup_done_ is published under mu_; read-only afterwards.
  std::string tenant_, group_;
  std::optional<codec::DType> out_dtype_;
  TaskSnapshot snap_;
  std::vector<uint32_t> plan_;

  absl::Mutex mu_;
  int refs_ ABSL_GUARDED_BY(mu_) = 1;  // gRPC's, released in OnDone
  bool setup_done_ ABSL_GUARDED_BY(mu_) = false;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool repump_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool end_sent_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_;  // set once before Finish; read in OnDone
  size_t next_fetch_ ABSL_GUARDED_BY(mu_) = 0;
  size_t send_pos_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<size_t, absl::StatusOr<MergedTensorPtr>> fetched_ ABSL_GUARDED_BY(mu_);
  MergedTensorPtr current_ ABSL_GUARDED_BY(mu_);
  size_t offset_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_total_ ABSL_GUARDED_BY(mu_) = 0;
  // Two message slots: one on the wire, one being built.
  Response slots_[2];
  int slot_ ABSL_GUARDED_BY(mu_) = 0;
  bool slot_ready_ ABSL_GUARDED_BY(mu_) = false;
  size_t slot_payload_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_flight_payload_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

grpc::ServerWriteReactor<v1::StreamWeightsResponse>* NewStreamWeightsReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call,
    const v1::StreamWeightsRequest* request) {
  return new StreamWeightsReactor(ctx, call, request);
}

}  // namespace deltaserve::server::internal
