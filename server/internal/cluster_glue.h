// The server's side of cluster mode (cluster/cluster_store.h): what the handlers call
// when ServiceContext::cluster is set. Every function blocks on the network (S3, etcd):
// call them from a pool, never from a gRPC callback. With ctx.cluster null (single-node
// mode) EnsureLocal is a no-op and the others are not called.
#ifndef DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_
#define DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cluster/task_pointers.h"
#include "codec/container.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "server/internal/auth.h"
#include "server/internal/context.h"
#include "server/internal/thread_pool.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

// Makes the local store hold the task's current version: a no-op in single-node mode;
// in cluster mode a cache hit, or a fetch from the object store. NotFound if the
// cluster has no such task. Inside a closure that RunWhenLocal started for the same
// task it returns that fill's status without fetching again.
absl::Status EnsureLocal(const ServiceContext& ctx, const std::string& tenant,
                         const std::string& task);

// The task a call is about to read: the request's tenant field and task name (both
// outlive the call's work). Null pointers: the call names no task.
struct TaskRef {
  const std::string* tenant_field = nullptr;
  const std::string* task = nullptr;
};

// Who is calling: the authenticated caller, or the call to authenticate.
using TaskTarget = std::function<absl::StatusOr<cluster::TaskName>()>;
TaskTarget TargetOf(const ServiceContext& ctx, const Caller& caller, TaskRef ref);
TaskTarget TargetOf(const ServiceContext& ctx, const grpc::ServerContextBase& call, TaskRef ref);

// Runs `fn` on `pool`. Single-node mode, or a task this replica holds (or a target that
// does not resolve: `fn` reports the error): at once. A task it lacks (cluster mode) is
// first fetched on ctx.fills (the fill pool, ClusterOptions::fill_threads), so that a
// slow object store holds a fill thread, never a control thread or a decode worker,
// and calls on cached tasks do not wait behind it; `fn` then runs on `pool` and its
// EnsureLocal of that task returns the fill's status. (Evicted again in between, a rare
// case, `fn`'s EnsureLocal fetches it inline.)
void RunWhenLocal(const ServiceContext& ctx, ThreadPool* pool, TaskTarget target,
                  std::function<void()> fn);

// ListTasks in cluster mode: the tasks of `tenant` ("" = every tenant) from the pointer
// table, so every replica lists the same whether or not it caches them: the fields of
// a single-node listing, metadata and side files included.
absl::Status ClusterListTasks(const ServiceContext& ctx, const std::string& tenant,
                              v1::ListTasksResponse* response);

// PutDelta in cluster mode: publishes the verified container and its verified side
// files (blobs, pointer with the header metadata and the side-file list) and fills the
// local cache; `*info` is the stored task, `*unchanged` true for an identical re-push.
// AlreadyExists / ResourceExhausted as in single-node mode, decided cluster-wide;
// InvalidArgument if the header metadata is too large for a pointer.
absl::Status ClusterPublish(const ServiceContext& ctx, const std::string& tenant,
                            const std::string& task, absl::Span<const uint8_t> bytes,
                            const codec::ContainerReader& container,
                            absl::Span<const storage::SideFile> side_files, bool overwrite,
                            uint64_t quota_bytes, storage::TaskInfo* info, bool* unchanged);

// DeleteTask in cluster mode: the pointer first (NotFound if none), then the local
// copy; the other replicas drop theirs when their watch sees it. Returns the bytes freed.
absl::StatusOr<uint64_t> ClusterDeleteTask(const ServiceContext& ctx, const std::string& tenant,
                                           const std::string& task);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_
