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
#include "server/internal/drain.h"
#include "server/internal/stall_watch.h"
#include "server/internal/metrics.h"
#include "server/internal/task_versions.h"
#include "server/internal/tensor_cache.h"
#include "server/internal/thread_pool.h"
#include "server/server.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

struct ServiceContext {
  const ServerOptions* options = nullptr;
  storage::DeltaStore* store = nullptr;
  const codec::ModelReader* base = nullptr;
  codec::BaseHash base_hash{};
  std::string base_hash_hex;
  TensorCache* cache = nullptr;
  ThreadPool* pool = nullptr;
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

  // Refreshes deltaserve_tenant_tasks / _stored_bytes of `tenant` from the store.
  void PublishTenantUsage(const std::string& tenant) const;
  // The chunk size of a stream: proto::EffectiveChunkBytes with the server's default.
  uint32_t ChunkBytes(uint32_t requested) const;
};

// Cache key of tensor `index` of a task version in `out_dtype` (nullopt: recorded).
std::string MergedTensorKey(const std::string& group, uint64_t version, size_t index,
                            std::optional<codec::DType> out_dtype);

// Reads record `index` of `reader`, merges it into the base in `out_dtype` (nullopt:
// the recorded dtype) and hashes the result. Observes deltaserve_decode_seconds and
// _merge_seconds. Errors: those of TaskReader::ReadRecord and codec::MergeTensor.
// Blocking (RocksDB read, decode): call on the worker pool only.
absl::StatusOr<MergedTensorPtr> DecodeMergedTensor(const ServiceContext& ctx,
                                                   const storage::TaskReader& reader,
                                                   size_t index,
                                                   std::optional<codec::DType> out_dtype);

// Decodes every tensor of the task into the cache and pins the task there. Blocking:
// call on the worker pool (or before serving). Returns the task's pinned bytes.
// ResourceExhausted if pinned tensors would exceed the cache budget; NotFound.
absl::StatusOr<uint64_t> PinTask(const ServiceContext& ctx, const std::string& tenant,
                                 const std::string& task,
                                 std::optional<codec::DType> out_dtype);

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_CONTEXT_H_
