// The server's side of cluster mode (cluster/cluster_store.h): what the handlers call
// when ServiceContext::cluster is set. Every function blocks on the network (S3, etcd):
// call them from a pool, never from a gRPC callback. With ctx.cluster null (single-node
// mode) EnsureLocal is a no-op and the others are not called.
#ifndef DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_
#define DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/container.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "server/internal/context.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

// Makes the local store hold the task's current version: a no-op in single-node mode;
// in cluster mode a cache hit, or a fetch from the object store. NotFound if the
// cluster has no such task.
absl::Status EnsureLocal(const ServiceContext& ctx, const std::string& tenant,
                         const std::string& task);

// ListTasks in cluster mode: the tasks of `tenant` ("" = every tenant) from the pointer
// table, so every replica lists the same whether or not it caches them.
absl::Status ClusterListTasks(const ServiceContext& ctx, const std::string& tenant,
                              v1::ListTasksResponse* response);

// PutDelta in cluster mode: publishes the verified container (blob, pointer) and fills
// the local cache; `*info` is the stored task, `*unchanged` true for an identical
// re-push. FailedPrecondition if side files are given (not kept in cluster mode);
// AlreadyExists / ResourceExhausted as in single-node mode, decided cluster-wide.
absl::Status ClusterPublish(const ServiceContext& ctx, const std::string& tenant,
                            const std::string& task, absl::Span<const uint8_t> bytes,
                            const codec::ContainerReader& container, size_t side_files,
                            bool overwrite, uint64_t quota_bytes, storage::TaskInfo* info,
                            bool* unchanged);

// DeleteTask in cluster mode: the pointer first (NotFound if none), then the local
// copy; the other replicas drop theirs when their watch sees it. Returns the bytes freed.
absl::StatusOr<uint64_t> ClusterDeleteTask(const ServiceContext& ctx, const std::string& tenant,
                                           const std::string& task);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CLUSTER_GLUE_H_
