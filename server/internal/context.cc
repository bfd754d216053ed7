#include "server/internal/context.h"

#include "absl/strings/str_cat.h"
#include "proto/protocol.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {

void ServiceContext::PublishTenantUsage(const std::string& tenant) const {
  absl::StatusOr<storage::TenantUsage> usage = store->GetTenantUsage(tenant);
  if (!usage.ok()) {
    LogWarn("tenant usage unavailable", {{"tenant", tenant}, {"error", usage.status().ToString()}});
    return;
  }
  metrics->SetTenantUsage(tenant, usage->tasks, usage->bytes);
}

uint32_t ServiceContext::ChunkBytes(uint32_t requested) const {
  return proto::EffectiveChunkBytes(requested, options->chunk_bytes);
}

}  // namespace deltaserve::server::internal
