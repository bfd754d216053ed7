// State shared by every handler of one server. Owned by Server::Impl, which outlives
// every call; all members are thread-safe.
#ifndef DELTASERVE_SERVER_INTERNAL_CONTEXT_H_
#define DELTASERVE_SERVER_INTERNAL_CONTEXT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "codec/container.h"
#include "codec/safetensors.h"
#include "server/internal/admission.h"
#include "server/internal/auth.h"
#include "server/internal/base_watch.h"
#include "server/internal/drain.h"
#include "server/internal/stall_watch.h"
#include "server/internal/metrics.h"
#include "server/internal/task_versions.h"
#include "server/internal/tensor_cache.h"
#include "server/internal/thread_pool.h"
#include "server/internal/upload_buffer.h"
#include "server/server.h"
#include "storage/store.h"

namespace deltaserve::cluster {
class ClusterStore;
}  // namespace deltaserve::cluster

namespace deltaserve::server::internal {

struct ServiceContext {
  const ServerOptions* options = nullptr;
  storage::DeltaStore* store = nullptr;
  // Cluster mode only (else null): the object store + etcd behind `store`, which is then
  // a cache (server/internal/cluster_glue.h).
  cluster::ClusterStore* cluster = nullptr;
  const codec::ModelReader* base = nullptr;
  codec::BaseHash base_hash{};
  std::string base_hash_hex;
  // --base-mapped only (else null): notices that a mapped base file changed.
  const BaseWatch* base_watch = nullptr;
  TensorCache* cache = nullptr;
  // Data work: record reads, decode, merge, hashing, upload verification and commit.
  ThreadPool* pool = nullptr;
  // Control work: auth, metadata reads and writes (ListTasks, GetTask, GetBase,
  // DeleteTask, UnpinTask), stream set-up and upload admission. Its own few threads, so
  // that these calls never wait behind cold decodes queued on `pool`; nothing on it may
  // decode or read records.
  ThreadPool* control = nullptr;
  // Cluster mode only (else null): fetches of tasks this replica lacks from the object
  // store (RunWhenLocal in cluster_glue.h), so that they hold neither pool.
  ThreadPool* fills = nullptr;
  Metrics* metrics = nullptr;
  const Authenticator* auth = nullptr;
  TaskVersions* versions = nullptr;
  // Set while the server drains: handlers refuse new calls with UNAVAILABLE.
  const DrainGate* drain = nullptr;
  // Streams register here so that stalled clients are seen and timed out.
  StallWatch* stalls = nullptr;
  // Concurrent PutDelta calls (--max-uploads) and StreamWeights + StreamDelta calls
  // (--max-streams).
  AdmissionLimit* uploads = nullptr;
  AdmissionLimit* streams = nullptr;
  // The mappings PutDelta receives containers into, reused from one upload to the next
  // (null: each upload maps its own).
  UploadBufferPool* upload_buffers = nullptr;

  // Refreshes deltaserve_tenant_tasks / _stored_bytes of `tenant` from the store.
  void PublishTenantUsage(const std::string& tenant) const;
  // OK unless a mapped base file changed under the daemon (BaseWatch::status():
  // FailedPrecondition naming the file and what changed). Whatever merges base bytes or
  // sends merged tensors checks it (a lock-free load while nothing changed).
  absl::Status CheckBase() const {
    return base_watch == nullptr ? absl::OkStatus() : base_watch->status();
  }
  // The chunk size of a stream: proto::EffectiveChunkBytes with the server's default.
  uint32_t ChunkBytes(uint32_t requested) const;
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CONTEXT_H_
