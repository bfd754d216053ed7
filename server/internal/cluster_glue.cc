#include "server/internal/cluster_glue.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cluster/cluster_store.h"
#include "common/status_macros.h"
#include "server/internal/base_check.h"
#include "server/internal/call.h"
#include "server/internal/convert.h"
#include "server/internal/task_versions.h"

namespace deltaserve::server::internal {

namespace {

// A fill RunWhenLocal made for the closure running on this thread.
struct DoneFill {
  const cluster::TaskName* name;
  const absl::Status* status;
};
thread_local const DoneFill* t_done_fill = nullptr;

// Sets t_done_fill for its lifetime.
class DoneFillScope {
 public:
  explicit DoneFillScope(const DoneFill* fill) : saved_(t_done_fill) { t_done_fill = fill; }
  ~DoneFillScope() { t_done_fill = saved_; }

 private:
  const DoneFill* saved_;
};

TaskTarget MakeTarget(const ServiceContext& ctx, std::function<absl::StatusOr<Caller>()> caller,
                      TaskRef ref) {
  return [&ctx, caller = std::move(caller), ref]() -> absl::StatusOr<cluster::TaskName> {
    DS_ASSIGN_OR_RETURN(Caller c, caller());
    DS_ASSIGN_OR_RETURN(std::string tenant,
                        ctx.auth->ResolveTenant(c, *ref.tenant_field, "task", false));
    DS_RETURN_IF_ERROR(storage::ValidateName("task", *ref.task));
    return cluster::TaskName{std::move(tenant), *ref.task};
  };
}

}  // namespace

absl::Status EnsureLocal(const ServiceContext& ctx, const std::string& tenant,
                         const std::string& task) {
  if (ctx.cluster == nullptr) return absl::OkStatus();
  if (const DoneFill* done = t_done_fill;
      done != nullptr && done->name->tenant == tenant && done->name->task == task) {
    return *done->status;
  }
  return ctx.cluster->Ensure({tenant, task});
}

TaskTarget TargetOf(const ServiceContext& ctx, const Caller& caller, TaskRef ref) {
  return MakeTarget(
      ctx, [caller] { return absl::StatusOr<Caller>(caller); }, ref);
}

TaskTarget TargetOf(const ServiceContext& ctx, const grpc::ServerContextBase& call, TaskRef ref) {
  return MakeTarget(
      ctx, [&ctx, &call] { return ctx.auth->Authenticate(AuthorizationHeader(call)); }, ref);
}

void RunWhenLocal(const ServiceContext& ctx, ThreadPool* pool, TaskTarget target,
                  std::function<void()> fn) {
  if (ctx.cluster == nullptr || ctx.fills == nullptr || target == nullptr) {
    return pool->Schedule(std::move(fn));
  }
  pool->Schedule([&ctx, pool, target = std::move(target), fn = std::move(fn)]() mutable {
    absl::StatusOr<cluster::TaskName> name = target();
    if (!name.ok() || ctx.cluster->Cached(*name)) return fn();
    ctx.fills->Schedule([&ctx, pool, name = *std::move(name), fn = std::move(fn)]() mutable {
      absl::Status status = ctx.cluster->Ensure(name);
      pool->Schedule([name = std::move(name), status = std::move(status), fn = std::move(fn)] {
        const DoneFill done{&name, &status};
        DoneFillScope scope(&done);
        fn();
      });
    });
  });
}

absl::Status ClusterListTasks(const ServiceContext& ctx, const std::string& tenant,
                              v1::ListTasksResponse* response) {
  DS_ASSIGN_OR_RETURN(auto tasks, ctx.cluster->List(tenant));
  uint64_t stored = 0;
  for (const auto& [name, ptr] : tasks) {
    storage::TaskInfo info;
    info.tenant = name.tenant;
    info.task = name.task;
    info.created_unix = ptr.created_unix;
    info.total_bytes = ptr.size;
    info.weights = ptr.weights;
    info.bits_per_weight =
        ptr.weights > 0 ? 8.0 * static_cast<double>(ptr.size) / static_cast<double>(ptr.weights)
                        : 0;
    info.metadata = ptr.metadata;
    for (const cluster::SideFileRef& f : ptr.side_files) info.side_files.push_back(f.file);
    v1::TaskInfo* out = response->add_tasks();
    FillTaskInfo(info, /*with_tensors=*/false,
                 ctx.cache->IsPinned(TaskGroup(name.tenant, name.task)), out);
    out->set_base_hash(ptr.base_hash);
    MarkOtherBase(ctx.base_hash_hex, out);
    out->set_num_tensors(static_cast<uint32_t>(ptr.num_tensors));
    out->set_merged_bytes(ptr.merged_bytes);
    stored += ptr.StoredBytes();
  }
  response->set_stored_bytes(stored);
  return absl::OkStatus();
}

absl::Status ClusterPublish(const ServiceContext& ctx, const std::string& tenant,
                            const std::string& task, absl::Span<const uint8_t> bytes,
                            const codec::ContainerReader& container,
                            absl::Span<const storage::SideFile> side_files, bool overwrite,
                            uint64_t quota_bytes, storage::TaskInfo* info, bool* unchanged) {
  // The listing fields, from the container's records (as the store's TaskInfo has them).
  storage::TaskInfo shape;
  for (size_t i = 0; i < container.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord r, container.record(i));
    shape.tensors.push_back(storage::TensorEntry{r.info.name, r.info.dtype, r.info.shape});
  }
  cluster::TaskPointer ptr;
  ptr.base_hash = codec::BaseHashHex(container.header().base_hash);
  ptr.created_unix = absl::ToUnixSeconds(absl::Now());
  ptr.metadata = container.header().metadata;
  ptr.num_tensors = shape.tensors.size();
  for (const storage::TensorEntry& t : shape.tensors) {
    ptr.weights += static_cast<uint64_t>(codec::NumElements(t.shape));
  }
  ptr.merged_bytes = TaskMergedBytes(shape, std::nullopt);
  DS_ASSIGN_OR_RETURN(cluster::PointerOutcome outcome,
                      ctx.cluster->Publish({tenant, task}, bytes, container, side_files, ptr,
                                           overwrite, quota_bytes));
  *unchanged = outcome == cluster::PointerOutcome::kUnchanged;
  DS_ASSIGN_OR_RETURN(*info, ctx.store->GetTask(tenant, task));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ClusterDeleteTask(const ServiceContext& ctx, const std::string& tenant,
                                           const std::string& task) {
  DS_ASSIGN_OR_RETURN(cluster::TaskPointer ptr, ctx.cluster->Delete({tenant, task}));
  return ptr.size;
}

}  // namespace deltaserve::server::internal
