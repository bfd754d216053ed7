// PutDelta: client-streaming upload, verified in full before one atomic commit.
//
// Flow: OnReadDone(metadata) -> control pool: Admit (auth, names, size limit, side file
// names and limits, existence and quota pre-checks; RocksDB reads; an existing task of the
// same size without overwrite is compared as the bytes arrive, so that one with other
// contents is ALREADY_EXISTS at its first difference) -> StartRead chunks
// and side file chunks, appended in the callback (a memcpy straight from gRPC's slices
// for a plain chunk message, see TakeChunk; the running XXH3-64; bounded by the declared
// sizes; the buffer is an UploadBuffer, a mapping reused from an earlier upload when one
// fits) -> end of stream -> pool: Commit (size, optional XXH3-64, container framing and
// every record checksum, base hash, every side file's XXH3-64, one atomic commit) ->
// Finish. Any error finishes the call at once and stores nothing. The whole container
// and the side files are held in memory until committed (<= --max-upload-bytes + 64 MiB).
//
// A container of at least StoreOptions::ingest_min_bytes is committed by ingestion
// (storage/store.h), and its records are staged while the upload still arrives: each
// record, once whole, is verified (its XXH3-64) and written to the staged table file by
// one job at a time on the pool (StageArrived), so that at the end of the stream only
// the header, side files and meta are left to write. The call finishes only once that
// job is idle (it may run after an error of the callback).
//
// What is validated, and why no more: the size, the client's whole-container XXH3-64
// (if sent: catches a transfer that went wrong), the container framing with every
// record's XXH3-64 and every length field in bounds (ContainerReader::Parse: the stored
// records are then byte for byte what a writer made and can be parsed without reading
// out of bounds), and the base hash (a delta for another base is useless here). The
// DCT payloads are not decoded: their checksums already prove them intact, and a
// payload's own fields are checked (ParsePayload, never over-reading) whenever it is
// decoded; decoding 0.5 G weights at upload would cost seconds of one worker.
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "codec/container.h"
#include "codec/container_checks.h"
#include "codec/delta_codec.h"
#include "codec/record_checks.h"
#include "common/status_macros.h"
#include "proto/protocol.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/convert.h"
#include "server/internal/service.h"
#include "server/internal/upload_buffer.h"
#include "storage/side_files.h"

namespace deltaserve::server::internal {
namespace {

class PutDeltaReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PutDeltaReactor(const ServiceContext* ctx, grpc::CallbackServerContext* call,
                  grpc::ByteBuffer* response)
      : ctx_(ctx),
        call_(call),
        response_bytes_(response),
        log_(ctx->metrics, "PutDelta"),
        buffer_(ctx->upload_buffers),
        hash_(XXH3_createState()) {
    XXH3_64bits_reset(hash_);
    absl::Status admitted = ctx_->uploads->Acquire();
    admitted_ = admitted.ok();
    if (!admitted_) {
      Finish(admitted);
      return;
    }
    StartRead(&request_bytes_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // End of the client's stream (or a broken call): verify and commit on the pool.
      if (!have_metadata_) return Finish(absl::InvalidArgumentError("PutDelta: empty stream"));
      bool commit_now = false;
      {
        absl::MutexLock lock(&mu_);
        ended_ = true;
        commit_now = !staging_;  // else the staging job commits when it is done
      }
      // Outside the lock: Commit may finish the call and delete this reactor.
      if (commit_now) ctx_->pool->Schedule([this] { Commit(); });
      return;
    }
    if (have_metadata_ && TakeChunk()) return;
    if (!grpc::SerializationTraits<v1::PutDeltaRequest>::Deserialize(&request_bytes_, &request_)
             .ok()) {
      return FinishWhenIdle(absl::InvalidArgumentError("PutDelta: a message does not parse"));
    }
    if (!have_metadata_) {
      if (!request_.has_metadata()) {
        return Finish(absl::InvalidArgumentError("PutDelta: the first message must be metadata"));
      }
      have_metadata_ = true;
      meta_ = request_.metadata();
      log_.set_task(meta_.task());
      ctx_->control->Schedule([this] { Admit(); });
      return;
    }
    if (request_.has_side_file_chunk()) {
      const std::string& part = request_.side_file_chunk();
      if (side_buffer_.size() + part.size() > side_total_) {
        return FinishWhenIdle(absl::InvalidArgumentError(
            absl::StrCat("PutDelta: task '", meta_.task(),
                         "': more side file bytes than the declared sizes add up to (",
                         side_total_, ")")));
      }
      side_buffer_.append(part);
      log_.add_bytes(part.size());
      StartRead(&request_bytes_);
      return;
    }
    if (!request_.has_chunk()) {
      return FinishWhenIdle(
          absl::InvalidArgumentError("PutDelta: metadata may only come first"));
    }
    const std::string_view chunk = request_.chunk();
    OnChunk({&chunk, 1}, chunk.size());
  }

  void OnDone() override {
    if (admitted_) ctx_->uploads->Release();
    XXH3_freeState(hash_);
    delete this;
  }

 private:
  // A message that is exactly PutDeltaRequest{chunk} (what DeltaClient sends) is taken
  // from gRPC's slices, with no copy into request_: false for any other message (it is
  // parsed as a message then, with protobuf's rules).
  bool TakeChunk() {
    std::vector<grpc::Slice> slices;
    if (!request_bytes_.Dump(&slices).ok()) return false;
    uint8_t head[11];  // the tag and the varint length, gathered from the first slices
    size_t have = 0;
    for (const grpc::Slice& slice : slices) {
      const size_t n = std::min(sizeof head - have, slice.size());
      std::memcpy(head + have, slice.begin(), n);
      have += n;
      if (have == sizeof head) break;
    }
    if (have < 2 || head[0] != ((v1::PutDeltaRequest::kChunkFieldNumber << 3) | 2)) return false;
    uint64_t length = 0;
    size_t at = 1;
    for (int shift = 0;; shift += 7, ++at) {
      if (at >= have || shift > 63) return false;
      length |= static_cast<uint64_t>(head[at] & 0x7f) << shift;
      if ((head[at] & 0x80) == 0) break;
    }
    ++at;  // past the length
    if (length > request_bytes_.Length() || at + length != request_bytes_.Length()) return false;
    std::vector<std::string_view> pieces;
    for (const grpc::Slice& slice : slices) {
      std::string_view piece(reinterpret_cast<const char*>(slice.begin()), slice.size());
      const size_t skip = std::min(at, piece.size());
      at -= skip;
      piece.remove_prefix(skip);
      if (!piece.empty()) pieces.push_back(piece);
    }
    OnChunk(pieces, length);
    return true;
  }

  // Callback: container bytes `pieces` (`size` in all) arrived.
  void OnChunk(absl::Span<const std::string_view> pieces, uint64_t size) {
    if (size > meta_.total_bytes() - buffer_.size()) {  // buffer_.size() <= total_bytes
      return FinishWhenIdle(absl::InvalidArgumentError(
          absl::StrCat("PutDelta: task '", meta_.task(), "': more bytes than total_bytes=",
                       meta_.total_bytes())));
    }
    // Within the capacity reserved at admission: no reallocation, so the staging job may
    // read the records below buffer_.size() meanwhile.
    for (std::string_view piece : pieces) {
      buffer_.Append(piece);
      XXH3_64bits_update(hash_, piece.data(), piece.size());
    }
    // A push without overwrite over a stored task of the same size: refused at its first
    // differing byte as existing, whatever those bytes are (as a size that differs is
    // at admission).
    if (compare_existing_) {
      if (absl::Status s = CompareWithExisting(); !s.ok()) return FinishWhenIdle(s);
    }
    // Refuse bytes that are no container, and a record that storage cannot hold, as
    // soon as they arrive (ContainerUploadScanner); then a container made against
    // another base, as soon as its header is whole.
    if (absl::Status s = scanner_.Feed(buffer_.bytes()); !s.ok()) {
      return FinishWhenIdle(absl::Status(
          s.code(), absl::StrCat("PutDelta: task '", meta_.task(), "': ", s.message())));
    }
    if (!header_checked_ && scanner_.header().has_value()) {
      header_checked_ = true;
      if (absl::Status s = CheckHeaderBase(*scanner_.header()); !s.ok()) return FinishWhenIdle(s);
    }
    if (staged_ != nullptr) PublishArrived();
    ctx_->metrics->uploaded_bytes().Increment(static_cast<double>(size));
    log_.add_bytes(size);
    StartRead(&request_bytes_);
  }

  storage::CommitOptions MakeCommitOptions() const {
    storage::CommitOptions options;
    // Cluster mode: the local store is a cache; etcd decides existence and quota
    // (ClusterPublish).
    options.overwrite = meta_.overwrite() || ctx_->cluster != nullptr;
    options.quota_bytes = ctx_->cluster != nullptr ? 0 : ctx_->auth->QuotaBytes(tenant_);
    return options;
  }

  absl::Status CheckAdmission() {
    DS_ASSIGN_OR_RETURN(Caller caller, ctx_->auth->Authenticate(AuthorizationHeader(*call_)));
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(meta_, "PutDelta"));
    DS_ASSIGN_OR_RETURN(tenant_, ResolveTask(*ctx_, caller, meta_.tenant(), meta_.task(), log_));
    const uint64_t total = meta_.total_bytes();
    if (total == 0) return absl::InvalidArgumentError("PutDelta: total_bytes must be > 0");
    for (const v1::SideFileDecl& f : meta_.side_files()) {
      declared_.push_back(storage::SideFileEntry{f.name(), f.size_bytes(), f.xxh3_64()});
    }
    if (absl::Status s = storage::ValidateSideFiles(declared_); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("PutDelta: task '", meta_.task(), "': ", s.message()));
    }
    side_total_ = storage::SideFileBytes(declared_);
    if (!meta_.base_hash().empty()) {
      const std::string& declared = meta_.base_hash();
      if (declared.size() != declared_base_hash_.size()) {
        return absl::InvalidArgumentError(absl::StrCat("PutDelta: task '", meta_.task(),
                                                       "': base_hash must be 16 bytes, got ",
                                                       declared.size()));
      }
      std::copy(declared.begin(), declared.end(), declared_base_hash_.begin());
      DS_RETURN_IF_ERROR(codec::CheckBaseHashMatch(
          declared_base_hash_, ctx_->base_hash, absl::StrCat("PutDelta: task '", meta_.task(), "'"),
          "the resident base"));
    }
    if (total > ctx_->options->max_upload_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("PutDelta: task '", meta_.task(), "': ", total,
                       " bytes exceed the server's maximum upload of ",
                       ctx_->options->max_upload_bytes));
    }
    // Early answers for the common refusals (exists, quota, disk full), before any byte
    // is sent, on one consistent view; the commit checks them again atomically.
    DS_RETURN_IF_ERROR(ctx_->store->CheckCommit(tenant_, meta_.task(), total + side_total_,
                                                MakeCommitOptions()));
    DS_RETURN_IF_ERROR(PrepareExistingComparison());
    DS_RETURN_IF_ERROR(buffer_.Reserve(total));
    side_buffer_.reserve(side_total_);
    // Cluster mode publishes to the object store instead of committing here: no staging.
    if (ctx_->cluster == nullptr && total >= ctx_->store->options().ingest_min_bytes) {
      DS_ASSIGN_OR_RETURN(staged_, ctx_->store->StageRecords(tenant_, meta_.task()));
    }
    return absl::OkStatus();
  }

  absl::Status ExistsWithOtherContents() const {
    return absl::AlreadyExistsError(absl::StrCat("tenant '", tenant_, "' task '", meta_.task(),
                                                 "' already exists with other contents "
                                                 "(overwrite not set)"));
  }

  // Control pool, at admission. The task exists with the size declared (CheckCommit
  // refused other sizes) and no overwrite: only an identical re-push can succeed
  // ("unchanged"). Decide as early as the bytes allow rather than after the whole
  // upload: other side files now, then the container header and each record's length
  // as they arrive (CompareWithExisting). These early answers are about the task as it
  // was at admission (one deleted meanwhile is still refused); an upload that passes
  // them is decided again, atomically, by the commit.
  absl::Status PrepareExistingComparison() {
    if (meta_.overwrite() || ctx_->cluster != nullptr) return absl::OkStatus();
    absl::StatusOr<storage::TaskInfo> existing = ctx_->store->GetTask(tenant_, meta_.task());
    if (absl::IsNotFound(existing.status())) return absl::OkStatus();
    DS_RETURN_IF_ERROR(existing.status());
    if (existing->side_files != declared_) return ExistsWithOtherContents();
    DS_ASSIGN_OR_RETURN(existing_header_, ctx_->store->ReadHeaderBytes(tenant_, meta_.task()));
    for (const storage::TensorEntry& t : existing->tensors) {
      existing_records_.push_back(t.record_bytes);
    }
    compare_existing_ = true;
    return absl::OkStatus();
  }

  // Callback, after each chunk: ALREADY_EXISTS at the first header byte or record
  // length that differs from the stored task's (only the new part is compared).
  absl::Status CompareWithExisting() {
    const absl::Span<const uint8_t> have = buffer_.bytes();
    const size_t n = std::min<size_t>(have.size(), existing_header_.size());
    if (compared_header_ < n) {
      if (!std::equal(have.begin() + compared_header_, have.begin() + n,
                      existing_header_.begin() + compared_header_)) {
        return ExistsWithOtherContents();
      }
      compared_header_ = n;
    }
    const auto& spans = scanner_.record_spans();
    for (; compared_records_ < spans.size(); ++compared_records_) {
      const size_t i = compared_records_;
      if (i >= existing_records_.size() || spans[i].second != existing_records_[i]) {
        return ExistsWithOtherContents();
      }
    }
    return absl::OkStatus();
  }

  // Control pool.
  void Admit() {
    absl::Status status = CheckAdmission();
    if (!status.ok()) return Finish(status);
    StartRead(&request_bytes_);
  }

  // The container's base hash against the one declared in the metadata, then against
  // the resident base's.
  absl::Status CheckHeaderBase(const codec::ContainerHeader& header) const {
    if (!meta_.base_hash().empty() && header.base_hash != declared_base_hash_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PutDelta: task '", meta_.task(), "': declared base_hash ",
          codec::BaseHashHex(declared_base_hash_), " differs from the container header's ",
          codec::BaseHashHex(header.base_hash)));
    }
    return codec::CheckBaseHashMatch(header.base_hash, ctx_->base_hash,
                                     absl::StrCat("PutDelta: task '", meta_.task(), "'"),
                                     "the resident base");
  }

  absl::Status Verify() {
    if (call_->IsCancelled()) return ClientEndedStatus(*call_, "PutDelta");
    if (buffer_.size() != meta_.total_bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PutDelta: task '", meta_.task(), "': truncated upload, got ",
                       buffer_.size(), " of ", meta_.total_bytes(), " bytes"));
    }
    if (meta_.has_xxh3_64()) {
      uint64_t got = XXH3_64bits_digest(hash_);  // summed as the chunks arrived
      if (got != meta_.xxh3_64()) {
        return absl::DataLossError(absl::StrCat("PutDelta: task '", meta_.task(),
                                                "': container XXH3-64 mismatch"));
      }
    }
    absl::Span<const uint8_t> bytes = buffer_.bytes();
    absl::StatusOr<codec::ContainerReader> container = codec::ContainerReader::Parse(bytes);
    if (!container.ok()) {
      return common::Annotate(container.status(),
                              absl::StrCat("PutDelta: task '", meta_.task(), "'"));
    }
    if (absl::Status s = codec::CheckContainerStorable(*container); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("PutDelta: task '", meta_.task(), "': ", s.message()));
    }
    DS_RETURN_IF_ERROR(CheckHeaderBase(container->header()));
    // Every record against the resident base tensor it names (dtype, shape, payload
    // header): a record whose merge would leave bytes of its output unwritten is
    // refused here, before anything is stored (the call's log and status name the task).
    DS_RETURN_IF_ERROR(codec::CheckContainerFitsBase(*container, *ctx_->base));
    DS_ASSIGN_OR_RETURN(std::vector<storage::SideFile> side_files, SplitSideFiles());
    storage::CommitOptions options = MakeCommitOptions();
    options.side_files = side_files;
    // Staged records are used only if every record was staged without error (a scanner
    // that stopped early, or a record that failed, leaves the commit to verify them).
    storage::StagedRecords* staged = staged_.get();
    bool staged_ok = false;
    {
      absl::MutexLock lock(&mu_);
      staged_ok = stage_status_.ok();
    }
    if (staged != nullptr && (!staged_ok || staged->records() != container->num_records())) {
      staged = nullptr;
    }
    storage::TaskInfo committed;
    storage::CommitOutcome outcome = storage::CommitOutcome::kCreated;
    if (ctx_->cluster != nullptr) {
      bool unchanged = false;
      DS_RETURN_IF_ERROR(ClusterPublish(*ctx_, tenant_, meta_.task(), bytes, *container, side_files,
                                        meta_.overwrite(), ctx_->auth->QuotaBytes(tenant_),
                                        &committed, &unchanged));
      if (unchanged) outcome = storage::CommitOutcome::kUnchanged;
    } else {
      DS_RETURN_IF_ERROR(ctx_->versions->Mutate(tenant_, meta_.task(), ctx_->cache,
                                                [&]() -> absl::Status {
        DS_ASSIGN_OR_RETURN(committed,
                            ctx_->store->CommitTask(tenant_, meta_.task(), *container, options,
                                                    &outcome, staged));
        return absl::OkStatus();
      }));
    }
    ctx_->PublishTenantUsage(tenant_);
    FillTaskInfo(committed, /*with_tensors=*/false,
                 ctx_->cache->IsPinned(TaskGroup(tenant_, meta_.task())),
                 response_.mutable_task());
    response_.set_unchanged(outcome == storage::CommitOutcome::kUnchanged);
    return absl::OkStatus();
  }

  // The declared side files over side_buffer_, each XXH3-64 verified.
  absl::StatusOr<std::vector<storage::SideFile>> SplitSideFiles() const {
    if (side_buffer_.size() != side_total_) {
      return absl::InvalidArgumentError(
          absl::StrCat("PutDelta: task '", meta_.task(), "': truncated upload, got ",
                       side_buffer_.size(), " of ", side_total_, " side file bytes"));
    }
    std::vector<storage::SideFile> files;
    std::string_view rest = side_buffer_;
    for (const storage::SideFileEntry& f : declared_) {
      storage::SideFile file{f.name, rest.substr(0, f.bytes)};
      rest.remove_prefix(f.bytes);
      if (storage::SideFileChecksum(file.data) != f.xxh3_64) {
        return absl::DataLossError(absl::StrCat("PutDelta: task '", meta_.task(),
                                                "': side file '", f.name, "' (", f.bytes,
                                                " bytes): XXH3-64 mismatch"));
      }
      files.push_back(std::move(file));
    }
    return files;
  }

  // Pool.
  void Commit() {
    absl::Status status = Verify();
    staged_.reset();              // removes a staged file that was not ingested
    buffer_.Release();  // free the upload before answering
    std::string().swap(side_buffer_);
    Finish(status);
  }

  // Callback: hands the records that arrived whole since the last call to the staging
  // job, starting it if it is idle.
  void PublishArrived() {
    const auto& spans = scanner_.record_spans();
    absl::MutexLock lock(&mu_);
    while (published_ < spans.size() &&
           spans[published_].first + spans[published_].second <= buffer_.size()) {
      arrived_.push_back(spans[published_++]);
    }
    if (staging_ || arrived_.empty() || !stage_status_.ok()) return;
    staging_ = true;
    ctx_->pool->Schedule([this] { StageArrived(); });
  }

  // Pool, one job at a time: stages the arrived records until none is left, then, if
  // the stream ended or the call failed meanwhile, commits or finishes.
  void StageArrived() {
    const uint8_t* base = buffer_.bytes().data();
    std::optional<absl::Status> finish;
    bool commit = false;
    for (;;) {
      std::vector<std::pair<uint64_t, uint64_t>> batch;
      {
        absl::MutexLock lock(&mu_);
        batch.swap(arrived_);
        if (batch.empty() || !stage_status_.ok() || finish_) {
          staging_ = false;
          finish = finish_;
          commit = ended_ && !finish_;
          break;
        }
      }
      for (const auto& [offset, length] : batch) {
        absl::Status s = staged_->Add({base + offset, length});
        if (!s.ok()) {
          absl::MutexLock lock(&mu_);
          stage_status_ = s;
          break;
        }
      }
    }
    // Outside the lock: Finish may delete this reactor (OnDone) before it returns.
    if (finish) {
      Finish(*finish);
    } else if (commit) {
      Commit();
    }
  }

  // Finishes now, or when the staging job is idle (it reads buffer_ and staged_).
  void FinishWhenIdle(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (staging_) {
        finish_ = status;
        return;
      }
    }
    Finish(status);
  }

  void Finish(const absl::Status& status) {
    log_.Finish(status);
    if (status.ok()) {
      bool own = false;
      (void)grpc::SerializationTraits<v1::PutDeltaResponse>::Serialize(response_, response_bytes_,
                                                                       &own);
    }
    grpc::ServerReadReactor<grpc::ByteBuffer>::Finish(ToGrpcStatus(status));
  }

  const ServiceContext* ctx_;
  grpc::CallbackServerContext* call_;
  grpc::ByteBuffer* response_bytes_;  // response_, serialized at a successful Finish
  v1::PutDeltaResponse response_;
  CallLog log_;
  grpc::ByteBuffer request_bytes_;  // the message being read
  v1::PutDeltaRequest request_;     // it parsed, unless TakeChunk took it
  v1::PutDeltaMetadata meta_;
  bool have_metadata_ = false;
  bool admitted_ = false;  // holds a --max-uploads slot
  std::string tenant_;
  // The container, capacity total_bytes (reserved at admission from ctx_->upload_buffers).
  UploadBuffer buffer_;
  codec::ContainerUploadScanner scanner_;
  bool header_checked_ = false;  // CheckHeaderBase ran on the scanner's header
  std::vector<storage::SideFileEntry> declared_;  // metadata.side_files
  uint64_t side_total_ = 0;                       // sum of their sizes
  codec::BaseHash declared_base_hash_{};          // metadata.base_hash, when given
  std::string side_buffer_;                       // their bytes, concatenated
  // An existing task of the same name and size, without overwrite (see
  // PrepareExistingComparison): its header and record lengths, and how far the arrived
  // bytes were compared with them (callback only).
  bool compare_existing_ = false;
  std::vector<uint8_t> existing_header_;
  std::vector<uint64_t> existing_records_;
  size_t compared_header_ = 0, compared_records_ = 0;
  XXH3_state_t* hash_;                            // of buffer_, chunk by chunk
  // Records staged while the upload arrives (big containers only; see the top).
  std::unique_ptr<storage::StagedRecords> staged_;
  size_t published_ = 0;  // scanner_.record_spans() handed to the job (callback only)
  absl::Mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> arrived_ ABSL_GUARDED_BY(mu_);  // to stage
  bool staging_ ABSL_GUARDED_BY(mu_) = false;  // a StageArrived job is scheduled or runs
  bool ended_ ABSL_GUARDED_BY(mu_) = false;    // the client's stream ended
  std::optional<absl::Status> finish_ ABSL_GUARDED_BY(mu_);  // error to finish with
  // The first staging error: written by the job, read by Commit once it is idle.
  absl::Status stage_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* NewPutDeltaReactor(
    const ServiceContext* ctx, grpc::CallbackServerContext* call, grpc::ByteBuffer* response) {
  return new PutDeltaReactor(ctx, call, response);
}

}  // namespace deltaserve::server::internal
