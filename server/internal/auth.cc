#include "server/internal/auth.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

Authenticator::Authenticator(std::optional<AuthConfig> config) : config_(std::move(config)) {
  if (!config_) {
    quota_by_tenant_[kDefaultTenant] = 0;
    return;
  }
  for (const TenantConfig& t : config_->tenants) {
    quota_by_tenant_[t.name] = t.quota_bytes;
    for (const std::string& tok : t.tokens) tenant_by_token_[tok] = t.name;
  }
  for (const std::string& tok : config_->admin_tokens) admin_tokens_[tok] = true;
}

absl::StatusOr<Caller> Authenticator::Authenticate(
    std::optional<std::string> authorization) const {
  if (!config_) return Caller{kDefaultTenant, false};
  if (!authorization) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kBearer = "bearer ";
  if (value.size() <= kBearer.size() || !absl::StartsWithIgnoreCase(value, kBearer)) {
    return absl::UnauthenticatedError("authorization metadata is not 'Bearer <token>'");
  }
  std::string token(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
  if (admin_tokens_.count(token)) return Caller{"", true};
  auto it = tenant_by_token_.find(token);
  if (it == tenant_by_token_.end()) return absl::UnauthenticatedError("unknown token");
  return Caller{it->second, false};
}

absl::StatusOr<std::string> Authenticator::ResolveTenant(const Caller& caller,
                                                         const std::string& requested,
                                                         const std::string& what,
                                                         bool allow_all) const {
  if (!caller.admin) {
    if (requested.empty() || requested == caller.tenant) return caller.tenant;
    // Never say that the tenant exists: the answer is the same as for a missing task.
    return absl::NotFoundError(absl::StrCat(what, " not found"));
  }
  if (requested.empty()) {
    if (allow_all) return std::string();
    return absl::InvalidArgumentError("an admin token must name the tenant in the request");
  }
  DS_RETURN_IF_ERROR(storage::ValidateName("tenant", requested));
  if (config_ && !quota_by_tenant_.count(requested)) {
    return absl::NotFoundError(absl::StrCat("tenant '", requested, "' not found"));
  }
  return std::string(requested);
}

uint64_t Authenticator::QuotaBytes(const std::string& tenant) const {
  auto it = quota_by_tenant_.find(tenant);
  return it == quota_by_tenant_.end() ? 0 : it->second;
}

std::vector<std::string> Authenticator::TenantNames() const {
  std::vector<std::string> names;
  for (const auto& [name, quota] : quota_by_tenant_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace deltaserve::server::internal
