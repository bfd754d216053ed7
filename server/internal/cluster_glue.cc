#include "server/internal/cluster_glue.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cluster/cluster_store.h"
#include "common/status_macros.h"
#include "server/internal/convert.h"
#include "server/internal/task_versions.h"

namespace deltaserve::server::internal {

absl::Status EnsureLocal(const ServiceContext& ctx, const std::string& tenant,
                         const std::string& task) {
  if (ctx.cluster == nullptr) return absl::OkStatus();
  return ctx.cluster->Ensure({tenant, task});
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
    v1::TaskInfo* out = response->add_tasks();
    FillTaskInfo(info, /*with_tensors=*/false,
                 ctx.cache->IsPinned(TaskGroup(name.tenant, name.task)), out);
    out->set_base_hash(ptr.base_hash);
    out->set_num_tensors(static_cast<uint32_t>(ptr.num_tensors));
    out->set_merged_bytes(ptr.merged_bytes);
    stored += ptr.size;
  }
  response->set_stored_bytes(stored);
  return absl::OkStatus();
}

absl::Status ClusterPublish(const ServiceContext& ctx, const std::string& tenant,
                            const std::string& task, absl::Span<const uint8_t> bytes,
                            const codec::ContainerReader& container, size_t side_files,
                            bool overwrite, uint64_t quota_bytes, storage::TaskInfo* info,
                            bool* unchanged) {
  if (side_files > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("PutDelta: task '", task,
                     "': side files are not kept in cluster mode (push the "
                     "container alone; keep tokenizer/config files next to the base)"));
  }
  // The listing fields, from the container's records (as the store's TaskInfo has them).
  storage::TaskInfo shape;
  for (size_t i = 0; i < container.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(codec::TensorRecord r, container.record(i));
    shape.tensors.push_back(storage::TensorEntry{r.info.name, r.info.dtype, r.info.shape});
  }
  cluster::TaskPointer ptr;
  ptr.base_hash = codec::BaseHashHex(container.header().base_hash);
  ptr.created_unix = absl::ToUnixSeconds(absl::Now());
  ptr.num_tensors = shape.tensors.size();
  for (const storage::TensorEntry& t : shape.tensors) {
    ptr.weights += static_cast<uint64_t>(codec::NumElements(t.shape));
  }
  ptr.merged_bytes = TaskMergedBytes(shape, std::nullopt);
  DS_ASSIGN_OR_RETURN(
      cluster::PointerOutcome outcome,
      ctx.cluster->Publish({tenant, task}, bytes, container, ptr, overwrite, quota_bytes));
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
