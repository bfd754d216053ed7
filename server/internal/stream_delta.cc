// StreamDelta: the stored container, byte-identical to the upload, in chunks.
//
// The container is never held whole: it is streamed piece by piece (header, each tensor
// record, trailer) from one storage snapshot, so memory per stream is one record plus
// one chunk message. Every message carries the container's XXH3-64, so Setup first
// walks the pieces once to hash them (records are read again, from RocksDB's block
// cache or disk, for sending). RocksDB reads run on the pool; each write starts only
// after the previous one completed (backpressure).
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>

#include "common/status_macros.h"
#include "proto/protocol.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/service.h"

namespace deltaserve::server::internal {
namespace {

class StreamDeltaReactor final : public grpc::ServerWriteReactor<v1::StreamDeltaResponse> {
 public:
  StreamDeltaReactor(const ServiceContext* ctx, grpc::CallbackServerContext* call,
                     const v1::StreamDeltaRequest* request)
      : ctx_(ctx), call_(call), request_(request), log_(ctx->metrics, "StreamDelta") {
    ctx_->metrics->streams_in_flight().Increment();
    stall_ = ctx_->stalls->Add([this] {
      stall_timed_out_ = true;
      // Frees the write that flow control holds; the client gets the status.
      CancelCallWithStatus(*call_, StalledStreamError("StreamDelta", ctx_->options->write_timeout));
    });
    chunk_bytes_ = ctx_->ChunkBytes(request->chunk_bytes());
    absl::Status admitted = ctx_->streams->Acquire();
    admitted_ = admitted.ok();
    if (!admitted_) {
      Done(admitted);
      return;
    }
    // Cluster mode: a missing task is fetched on the fill pool first (cluster_glue.h).
    RunWhenLocal(*ctx_, ctx_->pool,
                 TargetOf(*ctx_, *call_, {&request_->tenant(), &request_->task()}),
                 [this] { Setup(); });
  }

  void OnWriteDone(bool ok) override {
    stall_->WriteDone();
    if (!ok) return Done(EndedStatus());
    log_.add_bytes(msg_.data().size());
    ctx_->metrics->AddStreamedBytes("StreamDelta", msg_.data().size());
    WriteNext();
  }

  void OnDone() override {
    ctx_->stalls->Remove(stall_);
    if (admitted_) ctx_->streams->Release();
    ctx_->metrics->streams_in_flight().Decrement();
    log_.Finish(status_);
    delete this;
  }

 private:
  // Pieces: 0 = header, 1..num_records = records, num_records + 1 = trailer.
  size_t num_pieces() const { return reader_->num_records() + 2; }

  // Pool: opens the snapshot and hashes the whole container once.
  absl::Status Open() {
    DS_ASSIGN_OR_RETURN(Caller caller, ctx_->auth->Authenticate(AuthorizationHeader(*call_)));
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request_, "StreamDelta"));
    DS_ASSIGN_OR_RETURN(std::string tenant, ResolveTask(*ctx_, caller, request_->tenant(),
                                                        request_->task(), log_));
    DS_RETURN_IF_ERROR(EnsureLocal(*ctx_, tenant, request_->task()));
    DS_ASSIGN_OR_RETURN(reader_, ctx_->store->OpenTask(tenant, request_->task()));
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                   &XXH3_freeState);
    XXH3_64bits_reset(state.get());
    uint64_t total = 0;
    size_t index = 0;
    DS_RETURN_IF_ERROR(reader_->ForEachContainerPiece([&](absl::Span<const uint8_t> piece) {
      XXH3_64bits_update(state.get(), piece.data(), piece.size());
      total += piece.size();
      if (++index == num_pieces()) trailer_.assign(piece.begin(), piece.end());
      return absl::OkStatus();
    }));
    msg_.set_total_bytes(total);
    msg_.set_xxh3_64(XXH3_64bits_digest(state.get()));
    return absl::OkStatus();
  }

  // Pool: makes piece_ the bytes of piece `index`.
  absl::Status LoadPiece(size_t index) {
    record_.reset();
    if (index == 0) {
      DS_ASSIGN_OR_RETURN(header_, reader_->HeaderBytes());
      piece_ = header_;
    } else if (index + 1 < num_pieces()) {
      DS_ASSIGN_OR_RETURN(storage::StoredRecord record, reader_->ReadRecord(index - 1));
      record_.emplace(std::move(record));
      piece_ = record_->bytes();
    } else {
      piece_ = trailer_;
    }
    piece_index_ = index;
    piece_offset_ = 0;
    return absl::OkStatus();
  }

  // Pool.
  void Setup() {
    absl::Status status = Open();
    if (status.ok()) status = LoadPiece(0);
    if (!status.ok()) return Done(status);
    WriteNext();
  }

  // Pool.
  void LoadAndWrite(size_t index) {
    absl::Status status = LoadPiece(index);
    if (!status.ok()) return Done(status);
    WriteNext();
  }

  // Sends the next chunk of piece_, or moves to the next piece (read on the pool).
  void WriteNext() {
    if (call_->IsCancelled()) return Done(EndedStatus());
    if (piece_offset_ == piece_.size()) {
      const size_t next = piece_index_ + 1;
      if (next == num_pieces()) return Done(absl::OkStatus());
      ctx_->pool->Schedule([this, next] { LoadAndWrite(next); });
      return;
    }
    const size_t n = std::min<size_t>(chunk_bytes_, piece_.size() - piece_offset_);
    msg_.set_offset(offset_);
    msg_.set_data(piece_.data() + piece_offset_, n);
    piece_offset_ += n;
    offset_ += n;
    stall_->WriteStarted();
    StartWrite(&msg_);
  }

  // Why a cancelled call ended: the write timeout, or the client.
  absl::Status EndedStatus() const {
    return stall_timed_out_ ? StalledStreamError("StreamDelta", ctx_->options->write_timeout)
                            : ClientEndedStatus(*call_, "StreamDelta");
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
  bool admitted_ = false;  // holds a --max-streams slot
  std::shared_ptr<StallWatch::Stream> stall_;
  std::atomic<bool> stall_timed_out_{false};
  // Touched by one thread at a time: the pool task or the gRPC callback that runs the
  // single in-flight step (a write is started only after the previous one is done).
  std::unique_ptr<storage::TaskReader> reader_;
  std::vector<uint8_t> header_, trailer_;
  std::optional<storage::StoredRecord> record_;
  absl::Span<const uint8_t> piece_;
  size_t piece_index_ = 0;
  size_t piece_offset_ = 0;
  uint64_t offset_ = 0;  // in the container
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
