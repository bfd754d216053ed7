// StreamWeights: merged tensors of a task, decoded on the pool, sent with backpressure.
//
// Parts: the plan (stream_plan.h: which tensors, which messages), the prefetcher
// (prefetcher.h: `prefetch_tensors` tensors, or `prefetch_bytes`, fetched ahead of the
// one being sent), the merged tensors themselves (merged_tensors.h: cache, decode on a miss), and
// this reactor, which only sequences them: Setup (control pool: auth, snapshot, plan) -> Pump
// sends begin, then the cursor's messages as their tensors arrive, then end. One write
// is in flight at a time (gRPC's rule) and the next message is built while it is (two
// message slots), so a slow client holds the pipeline: nothing more is decoded until the
// window moves.
//
// Rows before the whole tensor: a tensor this stream decodes is handed over when its
// buffer exists; its chunks go out as the workers make their bytes final
// (TensorFill), so a cold stream's first bytes leave after a few patch-row strips
// rather than after its largest tensor. A client that set checksum_after_data gets
// the header at once (checksum_follows, XXH3-64 in the last chunk); any other client
// gets the header, with its checksum, when the tensor is complete.
//
// Memory per stream: (1 + prefetch_tensors) merged tensors, or the one being sent +
// prefetch_bytes + one tensor if more (shared with the cache when cached), + 2 chunk
// messages.
//
// Cancellation (OnCancel, or a failed write when the client vanished) stops the
// prefetcher: fetches not yet started are skipped, and the call finishes as soon as no
// write is in flight. A decode already running on a worker completes (one tensor) and
// its result goes to the cache.
//
// Lifetime: the reactor is owned by shared_ptrs: its own (released in OnDone) and one
// per pool closure or cache callback that may still call into it.
#include <atomic>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "codec/delta_codec.h"
#include "common/status_macros.h"
#include "proto/protocol.h"
#include "server/internal/base_check.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/convert.h"
#include "server/internal/merged_tensors.h"
#include "server/internal/prefetcher.h"
#include "server/internal/service.h"
#include "server/internal/stream_plan.h"
#include "server/internal/weights_wire.h"

namespace deltaserve::server::internal {
namespace {

class StreamWeightsReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                                   public std::enable_shared_from_this<StreamWeightsReactor> {
 public:
  StreamWeightsReactor(const ServiceContext* ctx, grpc::CallbackServerContext* call,
                       const grpc::ByteBuffer* raw_request)
      : ctx_(ctx),
        call_(call),
        request_parsed_(DecodeWeightsRequest(*raw_request, &request_storage_)),
        request_(&request_storage_),
        log_(ctx->metrics, "StreamWeights") {
    ctx_->metrics->streams_in_flight().Increment();
  }

  // Takes ownership of itself until OnDone and starts the call, or finishes it at once
  // with RESOURCE_EXHAUSTED when --max-streams streams are already running.
  void Start() {
    self_ = shared_from_this();
    stall_ = ctx_->stalls->Add([this] {
      stall_timed_out_ = true;
      // Frees the write that flow control holds; the client gets the status.
      CancelCallWithStatus(*call_,
                           StalledStreamError("StreamWeights", ctx_->options->write_timeout));
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
    // Cluster mode: a missing task is fetched on the fill pool first (cluster_glue.h).
    RunWhenLocal(*ctx_, ctx_->control,
                 TargetOf(*ctx_, *call_, {&request_->tenant(), &request_->task()}),
                 [self = shared_from_this()] { self->Setup(); });
  }

  void OnWriteDone(bool ok) override {
    stall_->WriteDone();
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) {
        Cancel();  // the client is gone
      } else if (in_flight_payload_ > 0) {
        log_.add_bytes(in_flight_payload_);
        ctx_->metrics->AddStreamedBytes("StreamWeights", in_flight_payload_);
      }
      in_flight_payload_ = 0;
    }
    Pump();
  }

  void OnCancel() override {
    Cancel();
    Pump();
  }

  void OnDone() override {
    ctx_->stalls->Remove(stall_);
    if (admitted_) ctx_->streams->Release();
    log_.Finish(final_status_);  // before the gauge: a reader that saw 0 sees the count
    ctx_->metrics->streams_in_flight().Decrement();
    std::shared_ptr<StreamWeightsReactor> last = std::move(self_);  // may delete this
  }

 private:
  // Runs fn(*this) on `pool`, keeping the reactor alive meanwhile.
  void Run(ThreadPool* pool, void (*fn)(StreamWeightsReactor&)) {
    pool->Schedule([self = shared_from_this(), fn] { fn(*self); });
  }

  void Cancel() {
    cancelled_ = true;
    // Setup publishes prefetcher_ under mu_ before anything else reads it.
    if (Prefetcher* p = prefetcher_ptr_.load()) p->Stop();
  }

  absl::Status Prepare() {
    DS_RETURN_IF_ERROR(request_parsed_);
    DS_ASSIGN_OR_RETURN(Caller caller, ctx_->auth->Authenticate(AuthorizationHeader(*call_)));
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request_, "StreamWeights"));
    DS_ASSIGN_OR_RETURN(tenant_,
                        ResolveTask(*ctx_, caller, request_->tenant(), request_->task(), log_));
    DS_ASSIGN_OR_RETURN(out_dtype_, proto::FromProtoOutDType(request_->out_dtype()));
    DS_RETURN_IF_ERROR(EnsureLocal(*ctx_, tenant_, request_->task()));
    DS_ASSIGN_OR_RETURN(snap_, ctx_->versions->Open(*ctx_->store, tenant_, request_->task()));
    const storage::TaskInfo& info = snap_.reader->info();
    DS_RETURN_IF_ERROR(CheckTaskBase(info, ctx_->base_hash));
    DS_RETURN_IF_ERROR(ctx_->CheckBase());
    DS_RETURN_IF_ERROR(CheckTaskFitsBase(info, *ctx_->base));
    DS_ASSIGN_OR_RETURN(plan_, PlanStream(*request_, info, out_dtype_));
    group_ = TaskGroup(tenant_, request_->task());
    v1::StreamWeightsResponse begin;
    FillStreamBegin(plan_, info, ctx_->cache->IsPinned(group_), begin.mutable_begin());
    slots_[0] = EncodeWeightsMessage(begin);
    prefetcher_.emplace(
        plan_.bytes, 1 + static_cast<size_t>(ctx_->options->prefetch_tensors),
        ctx_->options->prefetch_bytes,
        [this](size_t pos, Prefetcher::Done done) { Fetch(pos, std::move(done)); },
        [this] { Pump(); });
    return absl::OkStatus();
  }

  // Control pool (metadata only: the snapshot and the plan).
  void Setup() {
    absl::Status status = cancelled_ ? absl::CancelledError("cancelled") : Prepare();
    {
      absl::MutexLock lock(&mu_);
      if (!status.ok()) {
        error_ = status;
      } else {
        slot_ready_ = true;  // slots_[0] holds `begin`
        setup_done_ = true;
        cursor_.emplace(plan_.tensors.size(), ctx_->ChunkBytes(request_->chunk_bytes()),
                        request_->checksum_after_data(), plan_.first_offset);
        prefetcher_ptr_ = &*prefetcher_;
        if (cancelled_) prefetcher_->Stop();
      }
    }
    Pump();
  }

  // Prefetcher's FetchFn: the merged tensor of plan position `pos`, from the cache or
  // decoded on the pool. `done` runs on a worker (maybe another stream's, when this one
  // waits for that stream's decode of the same tensor).
  //
  // A tensor this call decodes itself is delivered as soon as its buffer exists (its
  // fill then says which bytes are final, see BuildNextLocked); the cache's result
  // that follows is then dropped. Waiters on another stream's decode get the complete
  // tensor.
  void Fetch(size_t pos, Prefetcher::Done done) {
    ctx_->pool->Schedule([self = shared_from_this(), pos, done = std::move(done)]() mutable {
      if (self->cancelled_) return done(absl::CancelledError("StreamWeights cancelled"));
      const uint32_t index = self->plan_.tensors[pos];
      const std::string key =
          MergedTensorKey(self->group_, self->snap_.version, index, self->out_dtype_);
      StreamWeightsReactor* r = self.get();
      struct Delivery {
        Prefetcher::Done done;
        std::atomic<bool> delivered{false};
        void operator()(Prefetcher::Result result) {
          if (!delivered.exchange(true)) done(std::move(result));
        }
      };
      auto deliver = std::make_shared<Delivery>();
      deliver->done = std::move(done);
      r->ctx_->cache->GetOrLoad(
          r->group_, key,
          [r, index, deliver] {
            return DecodeMergedTensor(*r->ctx_, *r->snap_.reader, index, r->out_dtype_,
                                      [&](const MergedTensorPtr& filling) { (*deliver)(filling); });
          },
          [self, deliver](const absl::StatusOr<MergedTensorPtr>& result, bool) {
            (*deliver)(result);
          });
    });
  }

  // Under mu_: fills slots_[slot_] with the next message. False if the tensor it needs
  // has not arrived (a delivery will Pump again), its bytes are not final yet (the
  // decode will Pump again) or it failed (error_ set).
  bool BuildNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // A base file changed under a --base-mapped daemon: no further message, whether its
    // tensor came from the cache or was merged since (it may hold the new bytes).
    if (absl::Status s = ctx_->CheckBase(); !s.ok()) {
      error_ = std::move(s);
      return false;
    }
    if (cursor_->needs_tensor() && !current_) {
      std::optional<Prefetcher::Result> r = prefetcher_->Take(cursor_->position());
      if (!r) return false;
      if (!r->ok()) {
        error_ = r->status();
        return false;
      }
      current_ = **std::move(r);
    }
    if (cursor_->needs_tensor() && current_->fill != nullptr) {
      const StreamCursor::Need need = cursor_->NextNeeds(*current_);
      // The wake comes on the decoding worker: the send work (serialization, sendmsg)
      // goes to the control pool so that workers only decode (perf: ~5% of the
      // workers' samples were gRPC sends when they pumped inline).
      if (!current_->fill->ReadyOr(need.bytes, need.done, [self = shared_from_this()] {
            self->ctx_->control->Schedule([self] { self->Pump(); });
          })) {
        return false;  // the decode wakes us when those bytes are final
      }
      if (absl::Status s = current_->fill->status(); !s.ok()) {
        error_ = std::move(s);
        return false;
      }
    }
    const size_t pos = cursor_->position();
    absl::Span<const uint8_t> data;
    slot_payload_ = cursor_->Next(current_.get(), &message_, &data);
    slots_[slot_] = message_.has_chunk()
                        ? EncodeWeightsChunk(message_.chunk(), data, current_)  // not copied
                        : EncodeWeightsMessage(message_);
    if (cursor_->position() != pos) current_.reset();  // that tensor is all out
    return true;
  }

  // Under mu_: finishes the call once no write is in flight. True if the call is (now)
  // finished.
  bool MaybeFinishLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (write_in_flight_) return false;  // finish after OnWriteDone
    finished_ = true;
    final_status_ = std::move(status);
    mu_.Unlock();
    Finish(ToGrpcStatus(final_status_));
    mu_.Lock();
    return true;
  }

  // Drives the stream; called after every event, from any thread, never under mu_.
  // Re-entrant calls (StartWrite may run OnWriteDone inline) just ask the running
  // Pump to loop once more.
  void Pump() {
    absl::MutexLock lock(&mu_);
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
    do {
      repump_ = false;
      if (finished_) break;
      if (cancelled_ || !error_.ok()) {
        MaybeFinishLocked(!cancelled_ ? error_
                          : stall_timed_out_
                              ? StalledStreamError("StreamWeights", ctx_->options->write_timeout)
                              : ClientEndedStatus(*call_, "StreamWeights"));
        break;
      }
      if (!setup_done_) break;
      if (!slot_ready_) {
        if (cursor_->done()) {
          MaybeFinishLocked(absl::OkStatus());
          break;
        }
        const size_t send_pos = cursor_->position();
        mu_.Unlock();
        prefetcher_->Advance(send_pos);  // may deliver inline and ask for a repump
        mu_.Lock();
        if (!BuildNextLocked()) {
          if (!error_.ok()) repump_ = true;
          continue;  // waiting: the delivery will Pump again
        }
        slot_ready_ = true;
      }
      if (!write_in_flight_) {
        write_in_flight_ = true;
        slot_ready_ = false;
        in_flight_payload_ = slot_payload_;
        const grpc::ByteBuffer* msg = &slots_[slot_];
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
  v1::StreamWeightsRequest request_storage_;
  const absl::Status request_parsed_;  // of request_storage_; Setup finishes with it
  const v1::StreamWeightsRequest* request_;
  CallLog log_;
  std::shared_ptr<StreamWeightsReactor> self_;  // gRPC's reference, released in OnDone
  bool admitted_ = false;  // holds a --max-streams slot; set in Start only
  std::atomic<bool> cancelled_{false};
  std::shared_ptr<StallWatch::Stream> stall_;
  std::atomic<bool> stall_timed_out_{false};
  std::atomic<Prefetcher*> prefetcher_ptr_{nullptr};  // for Cancel, once Setup succeeded

  // Written by Setup before setup_done_ is published under mu_; read-only afterwards
  // (prefetcher_ is thread-safe).
  std::string tenant_, group_;
  std::optional<codec::DType> out_dtype_;
  TaskSnapshot snap_;
  StreamPlan plan_;
  std::optional<Prefetcher> prefetcher_;

  absl::Mutex mu_;
  bool setup_done_ ABSL_GUARDED_BY(mu_) = false;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool repump_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_;  // set once before Finish; read in OnDone
  std::optional<StreamCursor> cursor_ ABSL_GUARDED_BY(mu_);
  MergedTensorPtr current_ ABSL_GUARDED_BY(mu_);  // the tensor the cursor is in
  // The message being built, then serialized into a slot (a chunk's data is not
  // copied: its slot refers to the tensor, which the slot keeps alive).
  v1::StreamWeightsResponse message_ ABSL_GUARDED_BY(mu_);
  // Two message slots: one on the wire, one being built.
  grpc::ByteBuffer slots_[2];
  int slot_ ABSL_GUARDED_BY(mu_) = 0;
  bool slot_ready_ ABSL_GUARDED_BY(mu_) = false;
  size_t slot_payload_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_flight_payload_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewStreamWeightsReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call, const grpc::ByteBuffer* request) {
  auto reactor = std::make_shared<StreamWeightsReactor>(ctx, call, request);
  reactor->Start();
  return reactor.get();
}

}  // namespace deltaserve::server::internal
