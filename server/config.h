// Tenants, tokens and quotas of deltaserved: the --config JSON file (server/CONFIG.md).
//
//   {"tenants": [{"name": "acme", "tokens": ["tok-acme-1", {"token_file": "/run/x"}],
//                 "quota_bytes": 10737418240}],
//    "admin_tokens": ["tok-admin"],
//    "tokens_files": ["/run/secrets/deltaserve-tokens"]}
//
// Pure data plus parsing; no gRPC types. Thread-safe (immutable after parsing).
#ifndef DELTASERVE_SERVER_CONFIG_H_
#define DELTASERVE_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace deltaserve::server {

struct TenantConfig {
  // Tenant name; same rule as task names (storage::ValidateName).
  std::string name;
  // Bearer tokens that authenticate as this tenant. At least one (after token files
  // are read), each non-empty and unique across the whole config.
  std::vector<std::string> tokens;
  // Storage quota: sum of the tenant's stored container bytes. 0 = unlimited.
  uint64_t quota_bytes = 0;
};

struct AuthConfig {
  std::vector<TenantConfig> tenants;
  // Tokens that may act on any tenant and list all of them.
  std::vector<std::string> admin_tokens;

  // InvalidArgument naming the tenant/field: bad or duplicate tenant name, a tenant
  // without tokens, an empty token, a token used twice.
  absl::Status Validate() const;

  // Who holds a placeholder token, one still holding "CHANGE-ME" as the example config
  // (deploy/secrets.example/tenants.json) ships it: "tenant 'acme'", "admin_tokens", in
  // config order, each once. The server logs a warning naming them at start: anyone who
  // read the example can use such a token.
  std::vector<std::string> PlaceholderTokenOwners() const;
};

// Parses the JSON text of a config file. Relative `token_file` / `tokens_files` paths
// are resolved against `base_dir` (the config file's directory). Token files hold one
// token (surrounding whitespace trimmed). A `tokens_files` file holds lines
// "<tenant>:<token>" ("@admin:<token>" for an admin token); '#' starts a comment line.
// InvalidArgument (bad JSON, unknown field type, unknown tenant in a tokens file;
// message names the field or file and line), NotFound (a token file is missing).
// The result is validated.
absl::StatusOr<AuthConfig> ParseAuthConfig(std::string_view json_text,
                                           const std::string& base_dir);

// Reads and parses the file at `path`. NotFound if it does not exist.
absl::StatusOr<AuthConfig> LoadAuthConfig(const std::string& path);

}  // namespace deltaserve::server

#endif  // DELTASERVE_SERVER_CONFIG_H_
