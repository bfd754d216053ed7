#include "server/config.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "storage/store.h"

namespace deltaserve::server {
namespace {

using json = nlohmann::json;

// A file the config names (the config itself, a token file), errors prefixed "config: ".
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  absl::StatusOr<std::string> text = common::ReadFileToString(path);
  if (!text.ok()) return common::Annotate(text.status(), "config");
  return text;
}

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / path).string();
}

// A token entry: "tok" or {"token_file": "path"}.
absl::StatusOr<std::string> ParseToken(const json& j, const std::string& where,
                                       const std::string& base_dir) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.size() == 1 && j.contains("token_file") &&
      j["token_file"].is_string()) {
    std::string path = Resolve(base_dir, j["token_file"].get<std::string>());
    DS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    std::string token(absl::StripAsciiWhitespace(text));
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("config: ", where, ": token file '",
                                                     path, "' is empty"));
    }
    return token;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "config: ", where, ": a token must be a string or {\"token_file\": path}"));
}

absl::Status ParseTokenList(const json& j, const std::string& where,
                            const std::string& base_dir, std::vector<std::string>* out) {
  if (!j.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", where, " must be an array"));
  }
  for (size_t i = 0; i < j.size(); ++i) {
    DS_ASSIGN_OR_RETURN(std::string tok,
                        ParseToken(j[i], absl::StrCat(where, "[", i, "]"), base_dir));
    out->push_back(std::move(tok));
  }
  return absl::OkStatus();
}

// Lines "<tenant>:<token>" / "@admin:<token>".
absl::Status ReadTokensFile(const std::string& path, AuthConfig* config) {
  DS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0 || colon + 1 == line.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: tokens file '", path, "' line ", line_no, ": want <tenant>:<token>"));
    }
    std::string tenant(line.substr(0, colon));
    std::string token(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (tenant == "@admin") {
      config->admin_tokens.push_back(token);
      continue;
    }
    bool found = false;
    for (TenantConfig& t : config->tenants) {
      if (t.name == tenant) {
        t.tokens.push_back(token);
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrCat("config: tokens file '", path, "' line ",
                                                     line_no, ": unknown tenant '", tenant,
                                                     "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckKeys(const json& obj, const std::string& where,
                       const std::vector<std::string>& allowed) {
  return common::CheckJsonKeys(obj, absl::StrCat("config: ", where), allowed);
}

absl::StatusOr<AuthConfig> ParseJson(const json& root, const std::string& base_dir) {
  AuthConfig config;
  if (!root.is_object()) return absl::InvalidArgumentError("config: top level must be an object");
  DS_RETURN_IF_ERROR(CheckKeys(root, "top level", {"tenants", "admin_tokens", "tokens_files"}));
  if (root.contains("tenants")) {
    const json& tenants = root["tenants"];
    if (!tenants.is_array()) return absl::InvalidArgumentError("config: tenants must be an array");
    for (size_t i = 0; i < tenants.size(); ++i) {
      const json& t = tenants[i];
      std::string where = absl::StrCat("tenants[", i, "]");
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config: ", where, " needs a string \"name\""));
      }
      TenantConfig tc;
      tc.name = t["name"].get<std::string>();
      where = absl::StrCat("tenant '", tc.name, "'");
      DS_RETURN_IF_ERROR(CheckKeys(t, where, {"name", "tokens", "quota_bytes"}));
      if (t.contains("tokens")) {
        DS_RETURN_IF_ERROR(ParseTokenList(t["tokens"], where + " tokens", base_dir, &tc.tokens));
      }
      if (t.contains("quota_bytes")) {
        const json& q = t["quota_bytes"];
        if (!q.is_number_unsigned() && !(q.is_number_integer() && q.get<int64_t>() >= 0)) {
          return absl::InvalidArgumentError(
              absl::StrCat("config: ", where, ": quota_bytes must be an integer >= 0"));
        }
        tc.quota_bytes = q.get<uint64_t>();
      }
      config.tenants.push_back(std::move(tc));
    }
  }
  if (root.contains("admin_tokens")) {
    DS_RETURN_IF_ERROR(
        ParseTokenList(root["admin_tokens"], "admin_tokens", base_dir, &config.admin_tokens));
  }
  if (root.contains("tokens_files")) {
    const json& files = root["tokens_files"];
    if (!files.is_array()) {
      return absl::InvalidArgumentError("config: tokens_files must be an array of paths");
    }
    for (const json& f : files) {
      if (!f.is_string()) {
        return absl::InvalidArgumentError("config: tokens_files entries must be strings");
      }
      DS_RETURN_IF_ERROR(ReadTokensFile(Resolve(base_dir, f.get<std::string>()), &config));
    }
  }
  DS_RETURN_IF_ERROR(config.Validate());
  if (config.tenants.empty() && config.admin_tokens.empty()) {
    return absl::InvalidArgumentError(
        "config: no tenants and no admin_tokens: nobody could authenticate (leave out "
        "--config for an open single-tenant server)");
  }
  return config;
}

}  // namespace

absl::Status AuthConfig::Validate() const {
  std::set<std::string> names, tokens;
  auto add_token = [&](const std::string& tok, const std::string& owner) -> absl::Status {
    if (tok.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("config: ", owner, ": empty token"));
    }
    if (!tokens.insert(tok).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: ", owner, ": a token is used twice in the config"));
    }
    return absl::OkStatus();
  };
  for (const TenantConfig& t : tenants) {
    DS_RETURN_IF_ERROR(storage::ValidateName("tenant", t.name));
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: tenant '", t.name, "' is listed twice"));
    }
    if (t.tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: tenant '", t.name, "' has no tokens"));
    }
    for (const std::string& tok : t.tokens) {
      DS_RETURN_IF_ERROR(add_token(tok, absl::StrCat("tenant '", t.name, "'")));
    }
  }
  for (const std::string& tok : admin_tokens) DS_RETURN_IF_ERROR(add_token(tok, "admin_tokens"));
  return absl::OkStatus();
}

std::vector<std::string> AuthConfig::PlaceholderTokenOwners() const {
  auto placeholder = [](const std::vector<std::string>& toks) {
    for (const std::string& tok : toks) {
      if (absl::StrContains(tok, "CHANGE-ME")) return true;
    }
    return false;
  };
  std::vector<std::string> owners;
  for (const TenantConfig& t : tenants) {
    if (placeholder(t.tokens)) owners.push_back(absl::StrCat("tenant '", t.name, "'"));
  }
  if (placeholder(admin_tokens)) owners.push_back("admin_tokens");
  return owners;
}

absl::StatusOr<AuthConfig> ParseAuthConfig(std::string_view json_text,
                                           const std::string& base_dir) {
  absl::StatusOr<json> root = common::ParseJson(json_text, "config");
  if (!root.ok()) return root.status();
  try {
    return ParseJson(*root, base_dir);
  } catch (const json::exception& e) {  // type errors from get<>()
    return absl::InvalidArgumentError(absl::StrCat("config: ", e.what()));
  }
}

absl::StatusOr<AuthConfig> LoadAuthConfig(const std::string& path) {
  DS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto config = ParseAuthConfig(text, std::filesystem::path(path).parent_path().string());
  if (!config.ok()) return common::Annotate(config.status(), path);
  return config;
}

}  // namespace deltaserve::server
