// Bearer-token authentication and tenant resolution (the rules of delta_service.proto).
// Thread-safe: immutable after construction.
#ifndef DELTASERVE_SERVER_INTERNAL_AUTH_H_
#define DELTASERVE_SERVER_INTERNAL_AUTH_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/config.h"

namespace deltaserve::server::internal {

// Who is calling: a tenant, or an admin (tenant empty).
struct Caller {
  std::string tenant;
  bool admin = false;
};

class Authenticator {
 public:
  // Without a config: one tenant "default" (no quota), every caller is that tenant
  // whatever token it sends. With a config: only its tokens are accepted.
  explicit Authenticator(std::optional<AuthConfig> config);

  bool open() const { return !config_.has_value(); }

  // `authorization` is the value of the "authorization" metadata entry (nullopt when
  // absent). Unauthenticated when it is missing, not "Bearer <token>", or unknown.
  absl::StatusOr<Caller> Authenticate(std::optional<std::string> authorization) const;

  // The tenant a request acts on. `requested` is the request's tenant field.
  //   tenant caller: "" or its own -> own; another -> NotFound naming only `what`.
  //   admin: a configured tenant (or any valid name without a config) -> it;
  //          "" -> InvalidArgument unless allow_all, then "" (meaning all tenants).
  absl::StatusOr<std::string> ResolveTenant(const Caller& caller, const std::string& requested,
                                            const std::string& what, bool allow_all) const;

  // Storage quota of `tenant` in bytes; 0 = unlimited.
  uint64_t QuotaBytes(const std::string& tenant) const;
  // Configured tenant names (just "default" without a config).
  std::vector<std::string> TenantNames() const;

 private:
  std::optional<AuthConfig> config_;
  std::unordered_map<std::string, std::string> tenant_by_token_;
  std::unordered_map<std::string, bool> admin_tokens_;
  std::unordered_map<std::string, uint64_t> quota_by_tenant_;
};

inline constexpr char kDefaultTenant[] = "default";

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_AUTH_H_
