#include "server/internal/context.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
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
  uint32_t want = requested ? requested : options->chunk_bytes;
  return std::clamp<uint32_t>(want, 4u << 10, 4u << 20);
}

}  // namespace deltaserve::server::internal
