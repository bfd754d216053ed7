// StreamDelta: the stored container, byte-identical to the upload, in chunks.
// The container is assembled once on the pool (memory: one compressed container per
// stream, ~1/16 of the fp16 model at 1 bit/weight) and then sent chunk by chunk, each
// write started only after the previous one completed (backpressure).
#include <xxhash.h>

#include <algorithm>

#include "codec/status_macros.h"
#include "server/internal/service.h"

namespace deltaserve::server::internal {
namespace {

class StreamDeltaReactor final : public grpc::ServerWriteReactor<v1::StreamDeltaResponse> {
 public:
  StreamDeltaReactor(const ServiceContext* ctx, grpc::CallbackServerContext* call,
                     const v1::StreamDeltaRequest* request)
      : ctx_(ctx), call_(call), request_(request), log_(ctx->metrics, "StreamDelta") {
    ctx_->metrics->streams_in_flight().Increment();
    chunk_bytes_ = ctx_->ChunkBytes(request->chunk_bytes());
    ctx_->pool->Schedule([this] { Setup(); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Done(ClientEndedStatus(*call_, "StreamDelta"));
    log_.add_bytes(msg_.data().size());
    ctx_->metrics->AddStreamedBytes("StreamDelta", msg_.data().size());
    WriteNext();
  }

  void OnDone() override {
    ctx_->metrics->streams_in_flight().Decrement();
    log_.Finish(status_);
    delete this;
  }

 private:
  absl::Status Load() {
    DS_ASSIGN_OR_RETURN(Caller caller, ctx_->auth->Authenticate(AuthorizationHeader(*call_)));
    DS_ASSIGN_OR_RETURN(std::string tenant, ResolveTask(*ctx_, caller, request_->tenant(),
                                                        request_->task(), log_));
    DS_ASSIGN_OR_RETURN(container_, ctx_->store->AssembleContainer(tenant, request_->task()));
    msg_.set_total_bytes(container_.size());
    msg_.set_xxh3_64(XXH3_64bits(container_.data(), container_.size()));
    return absl::OkStatus();
  }

  // Pool.
  void Setup() {
    absl::Status status = Load();
    if (!status.ok()) return Done(status);
    WriteNext();
  }

  void WriteNext() {
    if (call_->IsCancelled()) return Done(ClientEndedStatus(*call_, "StreamDelta"));
    if (offset_ == container_.size()) return Done(absl::OkStatus());
    size_t n = std::min<size_t>(chunk_bytes_, container_.size() - offset_);
    msg_.set_offset(offset_);
    msg_.set_data(container_.data() + offset_, n);
    offset_ += n;
    StartWrite(&msg_);
  }

  void Done(const absl::Status& status) {
    status_ = status;
    Finish(ToGrpcStatus(status));
  }

  const ServiceContext* ctx_;
  grpc::CallbackServerContext* call_;
  const v1::StreamDeltaRequest* request_;
  CallLog log_;
  uint32_t chunk_bytes_ = 0;
  std::vector<uint8_t> container_;
  size_t offset_ = 0;
  v1::StreamDeltaResponse msg_;
  absl::Status status_;
};

}  // namespace

grpc::ServerWriteReactor<v1::StreamDeltaResponse>* NewStreamDeltaReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call,
    const v1::StreamDeltaRequest* request) {
  return new StreamDeltaReactor(ctx, call, request);
}

}  // namespace deltaserve::server::internal
