#include "client/client.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "client/internal/container_file.h"
#include "client/internal/impl.h"
#include "client/internal/status.h"
#include "codec/container.h"
#include "codec/container_checks.h"
#include "common/file.h"
#include "common/status_macros.h"
#include "proto/protocol.h"

namespace deltaserve::client {
namespace {

// PushDelta's container chunks go out as raw PutDeltaRequest messages whose data are
// slices of the caller's container, not copies: the `chunk` field's tag and length, then
// the bytes themselves. (request.set_chunk costs a copy into the request and another
// into its serialization; measured: memmove was a tenth of a push's CPU.) Counts the
// data slices gRPC still holds, so that the push returns only once none refers to the
// caller's bytes.
class BorrowedChunks {
 public:
  ~BorrowedChunks() { WaitReleased(); }

  // One PutDeltaRequest{chunk: data}. REQUIRES: `data` outlives WaitReleased().
  grpc::ByteBuffer Message(absl::Span<const uint8_t> data) {
    uint8_t head[11];
    size_t n = 0;
    head[n++] = (v1::PutDeltaRequest::kChunkFieldNumber << 3) | 2;  // length-delimited
    for (uint64_t v = data.size();; v >>= 7) {
      head[n++] = static_cast<uint8_t>(v < 0x80 ? v : (v & 0x7f) | 0x80);
      if (v < 0x80) break;
    }
    {
      absl::MutexLock lock(&mu_);
      ++live_;
    }
    grpc::Slice slices[2] = {
        grpc::Slice(head, n),
        grpc::Slice(const_cast<uint8_t*>(data.data()), data.size(), &Released, this)};
    return grpc::ByteBuffer(slices, 2);
  }

  // Blocks until gRPC has let go of every data slice (soon after the call is over).
  void WaitReleased() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int64_t* live) { return *live == 0; }, &live_));
  }

 private:
  static void Released(void* self) {
    auto* chunks = static_cast<BorrowedChunks*>(self);
    absl::MutexLock lock(&chunks->mu_);
    --chunks->live_;
  }

  absl::Mutex mu_;
  int64_t live_ ABSL_GUARDED_BY(mu_) = 0;
};

// A message's wire bytes (metadata and side file chunks: small, copied).
grpc::ByteBuffer Serialized(const v1::PutDeltaRequest& request) {
  grpc::ByteBuffer out;
  bool own = false;
  (void)grpc::SerializationTraits<v1::PutDeltaRequest>::Serialize(request, &out, &own);
  return out;
}

}  // namespace

std::string TaskLabel(const ClientOptions& options, const std::string& task) {
  return options.tenant.empty() ? absl::StrCat("'", task, "'")
                                : absl::StrCat("'", options.tenant, "/", task, "'");
}

absl::Status ClientOptions::Validate() const {
  if (target.empty()) return absl::InvalidArgumentError("ClientOptions.target is empty");
  if (deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions.deadline must be positive");
  }
  if (stream_deadline < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions.stream_deadline must not be negative");
  }
  if (keepalive_time < absl::ZeroDuration() ||
      (keepalive_time > absl::ZeroDuration() && keepalive_time < absl::Milliseconds(1))) {
    return absl::InvalidArgumentError(
        "ClientOptions.keepalive_time must be zero (no keepalive) or at least 1 ms");
  }
  if (keepalive_timeout < absl::Milliseconds(1)) {
    return absl::InvalidArgumentError("ClientOptions.keepalive_timeout must be at least 1 ms");
  }
  DS_RETURN_IF_ERROR(
      proto::ValidateChunkBytes(upload_chunk_bytes, "ClientOptions.upload_chunk_bytes"));
  if (token.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("ClientOptions.token contains a line break");
  }
  return absl::OkStatus();
}

DeltaClient::DeltaClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeltaClient::~DeltaClient() = default;

absl::StatusOr<std::unique_ptr<DeltaClient>> DeltaClient::Open(const ClientOptions& options) {
  DS_RETURN_IF_ERROR(options.Validate());
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.use_tls || !options.tls_root_cert_path.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_root_cert_path.empty()) {
      absl::StatusOr<std::string> pem = common::ReadFileToString(options.tls_root_cert_path);
      if (!pem.ok()) return common::Annotate(pem.status(), "TLS root certificate");
      ssl.pem_root_certs = *std::move(pem);
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(proto::kMaxMessageBytes);
  args.SetMaxSendMessageSize(proto::kMaxMessageBytes);
  // A restarted server is found again within about a second (resumed pulls), not after
  // gRPC's default backoff of up to two minutes. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays
  // unset: gRPC (subchannel.cc) takes it as the minimum connect timeout, the time a
  // connection attempt gets for TCP and the server's HTTP/2 SETTINGS (default 20 s);
  // at 100 ms a loaded server was unreachable ("connection attempt timed out before
  // receiving SETTINGS frame") whatever the call's deadline.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (options.keepalive_time > absl::ZeroDuration()) {
    // gRPC's keepalive timer restarts whenever bytes arrive, so a busy stream sends no
    // pings. Unlimited pings without data: a pull sends no DATA frames, and gRPC's
    // default (2) would stop pinging a stalled stream after two pings.
    auto ms = [](absl::Duration d) {
      return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
    };
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_time));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = grpc::CreateCustomChannel(options.target, creds, args);
  impl->credentials = creds;
  impl->channel_args = args;
  impl->stub = v1::DeltaService::NewStub(impl->channel);
  return std::unique_ptr<DeltaClient>(new DeltaClient(std::move(impl)));
}

absl::StatusOr<v1::TaskInfo> DeltaClient::PushDelta(const std::string& task,
                                                    absl::Span<const uint8_t> container,
                                                    const PushOptions& options) {
  const std::string label =
      absl::StrCat("PutDelta ", codec::Utf8OrEscaped(TaskLabel(impl_->options, task)));
  // Fail fast, before any traffic, on a file that is not a container at all, or one
  // the server would refuse to store.
  absl::StatusOr<codec::ContainerReader> parsed = codec::ContainerReader::Parse(container);
  absl::Status local = parsed.status();
  if (local.ok()) local = codec::CheckContainerStorable(*parsed);
  if (!local.ok()) {
    return absl::Status(local.code(), absl::StrCat(label, ": local container: ", local.message()));
  }

  v1::PutDeltaRequest request;
  v1::PutDeltaMetadata* meta = request.mutable_metadata();
  meta->set_tenant(impl_->options.tenant);
  meta->set_task(task);
  meta->set_overwrite(options.overwrite);
  meta->set_total_bytes(container.size());
  meta->set_xxh3_64(XXH3_64bits(container.data(), container.size()));
  const codec::BaseHash& base_hash = parsed->header().base_hash;
  meta->set_base_hash(base_hash.data(), base_hash.size());
  for (const SideFileUpload& f : options.side_files) {
    v1::SideFileDecl* info = meta->add_side_files();
    info->set_name(f.name);
    info->set_size_bytes(f.data.size());
    info->set_xxh3_64(XXH3_64bits(f.data.data(), f.data.size()));
  }
  DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(request, label));

  // Declared before the call, so that its destructor waits for gRPC to release the
  // container's slices after the call is gone.
  BorrowedChunks borrowed;
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx, impl_->options.deadline, task);
  grpc::ByteBuffer response_bytes;
  const grpc::internal::RpcMethod method(
      absl::StrCat("/", v1::DeltaService::service_full_name(), "/PutDelta").c_str(),
      grpc::internal::RpcMethod::CLIENT_STREAMING, impl_->channel);
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
      grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
          impl_->channel.get(), method, &ctx, &response_bytes));

  bool open = writer->Write(Serialized(request));
  bool cancelled = false;
  Progress progress;
  progress.bytes_total = container.size();
  if (open && options.progress) options.progress(progress);  // the upload has begun
  const size_t chunk = impl_->options.upload_chunk_bytes;
  // Side files first: they are small, and the server checks their declared sizes at
  // admission already.
  for (const SideFileUpload& f : options.side_files) {
    for (size_t offset = 0; open && offset < f.data.size(); offset += chunk) {
      request.set_side_file_chunk(f.data.substr(offset, chunk));
      open = writer->Write(Serialized(request));
    }
  }
  for (size_t offset = 0; open && offset < container.size(); offset += chunk) {
    if (Cancelled(options.cancel)) {
      cancelled = true;
      ctx.TryCancel();
      break;
    }
    const size_t n = std::min(chunk, container.size() - offset);
    open = writer->Write(borrowed.Message(container.subspan(offset, n)));
    // A written chunk may sit in gRPC's buffers while the server refuses the upload, so
    // the last one counts only once the server has committed the task (below).
    if (open && options.progress && offset + n < container.size()) {
      progress.bytes_done = offset + n;
      options.progress(progress);
    }
  }
  if (open && !cancelled) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (status.ok() && !cancelled && options.progress) {
    progress.bytes_done = container.size();
    options.progress(progress);
  }
  if (cancelled) return absl::CancelledError(absl::StrCat(label, ": cancelled by the caller"));
  if (!status.ok()) {
    // The server's messages start with its RPC name ("PutDelta: "): the label says it.
    std::string message = status.error_message();
    if (absl::StartsWith(message, "PutDelta: ")) message.erase(0, 10);
    status = grpc::Status(status.error_code(), message);
  }
  DS_RETURN_IF_ERROR(FromGrpcStatus(status, label));
  v1::PutDeltaResponse response;
  if (!grpc::SerializationTraits<v1::PutDeltaResponse>::Deserialize(&response_bytes, &response)
           .ok()) {
    return absl::DataLossError(absl::StrCat(label, ": the server's answer does not parse"));
  }
  if (options.unchanged != nullptr) *options.unchanged = response.unchanged();
  return std::move(*response.mutable_task());
}

absl::StatusOr<std::unique_ptr<codec::MappedContainer>> OpenContainerFile(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<codec::MappedContainer>> mapped =
      codec::MappedContainer::Open(path);
  if (absl::IsDataLoss(mapped.status()) &&
      absl::StrContains(mapped.status().message(), "bad magic")) {
    // Not a damaged container but another kind of file (often the model itself).
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": not a deltaserve delta container (.dds); make one from the base and the "
                     "finetuned model with deltactl compress"));
  }
  return mapped;
}

absl::StatusOr<v1::TaskInfo> DeltaClient::PushDeltaFile(const std::string& task,
                                                        const std::string& path,
                                                        const PushOptions& options) {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<codec::MappedContainer> mapped, OpenContainerFile(path));
  return PushDelta(task, mapped->bytes(), options);
}

absl::StatusOr<v1::ListTasksResponse> DeltaClient::ListTasks(std::optional<std::string> tenant) {
  v1::ListTasksRequest request;
  request.set_tenant(tenant.value_or(impl_->options.tenant));
  return impl_->Unary(&v1::DeltaService::Stub::ListTasks, request, impl_->options.deadline,
                      request.tenant().empty()
                          ? std::string("ListTasks")
                          : absl::StrCat("ListTasks '", request.tenant(), "'"));
}

absl::StatusOr<v1::TaskInfo> DeltaClient::GetTask(const std::string& task,
                                                  bool include_tensors) {
  v1::GetTaskRequest request;
  request.set_tenant(impl_->options.tenant);
  request.set_task(task);
  request.set_include_tensors(include_tensors);
  return impl_->Unary(&v1::DeltaService::Stub::GetTask, request, impl_->options.deadline,
                      absl::StrCat("GetTask ", TaskLabel(impl_->options, task)));
}

absl::StatusOr<uint64_t> DeltaClient::DeleteTask(const std::string& task) {
  v1::DeleteTaskRequest request;
  request.set_tenant(impl_->options.tenant);
  request.set_task(task);
  DS_ASSIGN_OR_RETURN(v1::DeleteTaskResponse response,
                      impl_->Unary(&v1::DeltaService::Stub::DeleteTask, request,
                                   impl_->options.deadline,
                                   absl::StrCat("DeleteTask ", TaskLabel(impl_->options, task))));
  return response.freed_bytes();
}

absl::StatusOr<v1::BaseInfo> DeltaClient::GetBase() {
  return impl_->Unary(&v1::DeltaService::Stub::GetBase, v1::GetBaseRequest(),
                      impl_->options.deadline, "GetBase");
}

absl::StatusOr<v1::AdminCheckpointResponse> DeltaClient::Checkpoint(const std::string& dir) {
  v1::AdminCheckpointRequest request;
  request.set_dir(dir);
  // Copying a store across filesystems may take longer than a unary deadline.
  return impl_->Unary(&v1::DeltaService::Stub::Checkpoint, request,
                      impl_->options.stream_deadline, absl::StrCat("Checkpoint ", dir));
}

absl::StatusOr<uint64_t> DeltaClient::PinTask(const std::string& task,
                                              std::optional<codec::DType> out_dtype) {
  v1::PinTaskRequest request;
  request.set_tenant(impl_->options.tenant);
  request.set_task(task);
  if (out_dtype) request.set_out_dtype(proto::ToProtoDType(*out_dtype));
  // Decoding a whole task may take longer than a unary deadline: use the stream one.
  DS_ASSIGN_OR_RETURN(v1::PinTaskResponse response,
                      impl_->Unary(&v1::DeltaService::Stub::PinTask, request,
                                   impl_->options.stream_deadline,
                                   absl::StrCat("PinTask ", TaskLabel(impl_->options, task))));
  return response.pinned_bytes();
}

absl::Status DeltaClient::UnpinTask(const std::string& task) {
  v1::UnpinTaskRequest request;
  request.set_tenant(impl_->options.tenant);
  request.set_task(task);
  return impl_->Unary(&v1::DeltaService::Stub::UnpinTask, request, impl_->options.deadline,
                      absl::StrCat("UnpinTask ", TaskLabel(impl_->options, task)))
      .status();
}

}  // namespace deltaserve::client
