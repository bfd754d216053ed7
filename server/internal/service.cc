#include "server/internal/service.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "codec/container_checks.h"
#include "common/status_macros.h"
#include "proto/protocol.h"
#include "server/internal/base_check.h"
#include "server/internal/cluster_glue.h"
#include "server/internal/convert.h"
#include "server/internal/merged_tensors.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

absl::StatusOr<std::string> ResolveTask(const ServiceContext& ctx, const Caller& caller,
                                        const std::string& tenant_field, const std::string& task,
                                        CallLog& log) {
  log.set_task(task);
  DS_ASSIGN_OR_RETURN(std::string tenant,
                      ctx.auth->ResolveTenant(caller, tenant_field,
                                              absl::StrCat("task '", task, "'"), false));
  log.set_tenant(tenant);
  DS_RETURN_IF_ERROR(storage::ValidateName("task", task));
  return tenant;
}

namespace {

absl::Status DrainingError() {
  return absl::UnavailableError("server is draining (shutting down); retry on another replica");
}

// Finishes a streaming call at once with `status` (a call refused while draining).
template <typename ReactorBase>
class RefusedReactor final : public ReactorBase {
 public:
  RefusedReactor(Metrics* metrics, const char* method, const absl::Status& status) {
    CallLog(metrics, method).Finish(status);
    this->Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* DeltaServiceImpl::RunUnaryOn(ThreadPool* pool,
                                                       grpc::CallbackServerContext* call,
                                                       const char* method, UnaryWork work,
                                                       TaskRef task) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  auto log = std::make_shared<CallLog>(ctx_->metrics, method);
  absl::StatusOr<Caller> caller =
      ctx_->drain->draining() ? absl::StatusOr<Caller>(DrainingError())
                              : ctx_->auth->Authenticate(AuthorizationHeader(*call));
  if (!caller.ok()) {
    log->Finish(caller.status());
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  TaskTarget target = task.task != nullptr ? TargetOf(*ctx_, *caller, task) : nullptr;
  RunWhenLocal(*ctx_, pool, std::move(target),
               [reactor, log, work = std::move(work), caller = *std::move(caller)] {
                 absl::Status status = work(caller, *log);
                 log->Finish(status);
                 reactor->Finish(ToGrpcStatus(status));
               });
  return reactor;
}

grpc::ServerUnaryReactor* DeltaServiceImpl::ListTasks(grpc::CallbackServerContext* call,
                                                      const v1::ListTasksRequest* request,
                                                      v1::ListTasksResponse* response) {
  const ServiceContext* ctx = ctx_;
  return RunUnary(call, "ListTasks", [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "ListTasks"));
    DS_ASSIGN_OR_RETURN(std::string tenant, ctx->auth->ResolveTenant(caller, request->tenant(),
                                                                     "tenant", true));
    log.set_tenant(tenant.empty() ? "*" : tenant);
    std::vector<std::string> tenants;
    if (tenant.empty()) {
      DS_ASSIGN_OR_RETURN(tenants, ctx->store->ListTenants());
    } else {
      tenants.push_back(tenant);
      response->set_quota_bytes(ctx->auth->QuotaBytes(tenant));
    }
    if (ctx->cluster != nullptr) return ClusterListTasks(*ctx, tenant, response);
    uint64_t stored = 0;
    for (const std::string& t : tenants) {
      DS_ASSIGN_OR_RETURN(std::vector<storage::TaskInfo> tasks, ctx->store->ListTasks(t));
      for (const storage::TaskInfo& info : tasks) {
        v1::TaskInfo* out = response->add_tasks();
        FillTaskInfo(info, /*with_tensors=*/false,
                     ctx->cache->IsPinned(TaskGroup(info.tenant, info.task)), out);
        MarkOtherBase(ctx->base_hash_hex, out);
        stored += info.StoredBytes();
      }
    }
    response->set_stored_bytes(stored);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DeltaServiceImpl::GetTask(grpc::CallbackServerContext* call,
                                                    const v1::GetTaskRequest* request,
                                                    v1::TaskInfo* response) {
  const ServiceContext* ctx = ctx_;
  auto work = [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "GetTask"));
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ResolveTask(*ctx, caller, request->tenant(), request->task(), log));
    DS_RETURN_IF_ERROR(EnsureLocal(*ctx, tenant, request->task()));
    DS_ASSIGN_OR_RETURN(storage::TaskInfo info, ctx->store->GetTask(tenant, request->task()));
    FillTaskInfo(info, request->include_tensors(),
                 ctx->cache->IsPinned(TaskGroup(tenant, request->task())), response);
    MarkOtherBase(ctx->base_hash_hex, response);
    return absl::OkStatus();
  };
  return RunUnaryOnTask(call, "GetTask", {&request->tenant(), &request->task()}, work);
}

grpc::ServerUnaryReactor* DeltaServiceImpl::DeleteTask(grpc::CallbackServerContext* call,
                                                       const v1::DeleteTaskRequest* request,
                                                       v1::DeleteTaskResponse* response) {
  const ServiceContext* ctx = ctx_;
  return RunUnary(call, "DeleteTask", [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "DeleteTask"));
    const std::string& task = request->task();
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ResolveTask(*ctx, caller, request->tenant(), task, log));
    uint64_t freed = 0;
    if (ctx->cluster != nullptr) {
      DS_ASSIGN_OR_RETURN(freed, ClusterDeleteTask(*ctx, tenant, task));
    } else {
      DS_RETURN_IF_ERROR(ctx->versions->Mutate(tenant, task, ctx->cache, [&]() -> absl::Status {
        DS_ASSIGN_OR_RETURN(storage::TaskInfo info, ctx->store->GetTask(tenant, task));
        freed = info.StoredBytes();
        return ctx->store->DeleteTask(tenant, task);
      }));
    }
    // A deleted task is no longer pinned (a new upload under its name starts unpinned).
    const std::string group = TaskGroup(tenant, task);
    while (ctx->cache->Unpin(group)) {
    }
    ctx->PublishTenantUsage(tenant);
    response->set_freed_bytes(freed);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DeltaServiceImpl::GetBase(grpc::CallbackServerContext* call,
                                                    const v1::GetBaseRequest* request,
                                                    v1::BaseInfo* response) {
  const ServiceContext* ctx = ctx_;
  return RunUnary(call, "GetBase", [=](const Caller&, CallLog&) -> absl::Status {
    response->set_hash(ctx->base_hash_hex);
    response->set_num_tensors(static_cast<uint32_t>(ctx->base->tensors().size()));
    response->set_total_bytes(ctx->base->total_bytes());
    uint64_t weights = 0;
    std::set<int> dtypes;
    for (const codec::TensorInfo& t : ctx->base->tensors()) {
      weights += static_cast<uint64_t>(t.num_elements());
      dtypes.insert(proto::ToProtoDType(t.dtype));
    }
    response->set_total_weights(weights);
    for (int d : dtypes) response->add_dtypes(static_cast<v1::DType>(d));
    response->set_path(ctx->options->base_path);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DeltaServiceImpl::PinTask(grpc::CallbackServerContext* call,
                                                    const v1::PinTaskRequest* request,
                                                    v1::PinTaskResponse* response) {
  const ServiceContext* ctx = ctx_;
  auto work = [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "PinTask"));
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ResolveTask(*ctx, caller, request->tenant(), request->task(), log));
    DS_ASSIGN_OR_RETURN(std::optional<codec::DType> dtype, proto::FromProtoOutDType(request->out_dtype()));
    DS_ASSIGN_OR_RETURN(uint64_t bytes,
                        internal::PinTask(*ctx, tenant, request->task(), dtype));
    response->set_pinned_bytes(bytes);
    return absl::OkStatus();
  };
  return RunUnaryOnPoolOnTask(call, "PinTask", {&request->tenant(), &request->task()}, work);
}

grpc::ServerUnaryReactor* DeltaServiceImpl::UnpinTask(grpc::CallbackServerContext* call,
                                                      const v1::UnpinTaskRequest* request,
                                                      v1::UnpinTaskResponse* response) {
  const ServiceContext* ctx = ctx_;
  return RunUnary(call, "UnpinTask", [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "UnpinTask"));
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ResolveTask(*ctx, caller, request->tenant(), request->task(), log));
    if (!ctx->cache->Unpin(TaskGroup(tenant, request->task()))) {
      return absl::NotFoundError(absl::StrCat("task '", request->task(), "' is not pinned"));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DeltaServiceImpl::Checkpoint(
    grpc::CallbackServerContext* call, const v1::AdminCheckpointRequest* request,
    v1::AdminCheckpointResponse* response) {
  const ServiceContext* ctx = ctx_;
  return RunUnaryOnPool(call, "Checkpoint", [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "Checkpoint"));
    log.set_tenant(caller.admin ? "@admin" : caller.tenant);
    if (!caller.admin && !ctx->auth->open()) {
      return absl::PermissionDeniedError("Checkpoint needs an admin token");
    }
    const std::filesystem::path dir = request->dir();
    if (!dir.is_absolute()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Checkpoint: dir '", request->dir(), "' must be an absolute path"));
    }
    std::error_code ec;
    if (std::filesystem::exists(dir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Checkpoint: '", request->dir(), "' already exists"));
    }
    const absl::Time t0 = absl::Now();
    DS_RETURN_IF_ERROR(ctx->store->CreateCheckpoint(dir.string()));
    uint64_t bytes = 0;
    uint32_t files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.is_regular_file(ec)) {
        bytes += e.file_size(ec);
        ++files;
      }
    }
    response->set_dir(dir.string());
    response->set_bytes(bytes);
    response->set_files(files);
    response->set_seconds(absl::ToDoubleSeconds(absl::Now() - t0));
    log.add_bytes(bytes);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DeltaServiceImpl::GetSideFile(grpc::CallbackServerContext* call,
                                                        const v1::GetSideFileRequest* request,
                                                        v1::GetSideFileResponse* response) {
  const ServiceContext* ctx = ctx_;
  // On the worker pool: a side file is read whole (up to 32 MiB) and hashed.
  auto work = [=](const Caller& caller, CallLog& log) -> absl::Status {
    DS_RETURN_IF_ERROR(proto::CheckTextFieldsUtf8(*request, "GetSideFile"));
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ResolveTask(*ctx, caller, request->tenant(), request->task(), log));
    const std::string& name = request->name();
    DS_RETURN_IF_ERROR(codec::CheckUtf8(name, "GetSideFile: side file name"));
    DS_RETURN_IF_ERROR(EnsureLocal(*ctx, tenant, request->task()));
    DS_ASSIGN_OR_RETURN(std::unique_ptr<storage::TaskReader> reader,
                        ctx->store->OpenTask(tenant, request->task()));
    DS_ASSIGN_OR_RETURN(std::string data, reader->ReadSideFile(name));
    if (request->offset() > data.size()) {
      return absl::OutOfRangeError(absl::StrCat("GetSideFile: side file '", name, "' has ",
                                                data.size(), " bytes, offset ",
                                                request->offset()));
    }
    const uint32_t max_bytes =
        proto::EffectiveChunkBytes(request->max_bytes(), ctx->options->chunk_bytes);
    for (const storage::SideFileEntry& f : reader->info().side_files) {
      if (f.name != name) continue;
      response->mutable_file()->set_name(f.name);
      response->mutable_file()->set_size_bytes(f.bytes);
      response->mutable_file()->set_xxh3_64(f.xxh3_64);
    }
    response->set_offset(request->offset());
    response->set_data(data.substr(request->offset(), max_bytes));
    log.add_bytes(response->data().size());
    return absl::OkStatus();
  };
  return RunUnaryOnPoolOnTask(call, "GetSideFile", {&request->tenant(), &request->task()}, work);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* DeltaServiceImpl::PutDelta(
    grpc::CallbackServerContext* call, grpc::ByteBuffer* response) {
  if (ctx_->drain->draining()) {
    return new RefusedReactor<grpc::ServerReadReactor<grpc::ByteBuffer>>(
        ctx_->metrics, "PutDelta", DrainingError());
  }
  return NewPutDeltaReactor(ctx_, call, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* DeltaServiceImpl::StreamWeights(
    grpc::CallbackServerContext* call, const grpc::ByteBuffer* request) {
  if (ctx_->drain->draining()) {
    return new RefusedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
        ctx_->metrics, "StreamWeights", DrainingError());
  }
  return NewStreamWeightsReactor(ctx_, call, request);
}

grpc::ServerWriteReactor<v1::StreamDeltaResponse>* DeltaServiceImpl::StreamDelta(
    grpc::CallbackServerContext* call, const v1::StreamDeltaRequest* request) {
  if (ctx_->drain->draining()) {
    return new RefusedReactor<grpc::ServerWriteReactor<v1::StreamDeltaResponse>>(
        ctx_->metrics, "StreamDelta", DrainingError());
  }
  return NewStreamDeltaReactor(ctx_, call, request);
}

}  // namespace deltaserve::server::internal
