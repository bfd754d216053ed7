// The cluster config file (ParseClusterOptions in cluster/cluster_store.h).
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cluster/cluster_store.h"
#include "common/file.h"
#include "common/json.h"
#include "common/status_macros.h"

namespace deltaserve::cluster {
namespace {

using json = nlohmann::json;

absl::Status CheckKeys(const json& obj, const std::string& where,
                       const std::vector<std::string>& allowed) {
  return common::CheckJsonKeys(obj, absl::StrCat("cluster config: ", where), allowed);
}

absl::Status GetString(const json& obj, const char* key, const std::string& where,
                       std::string* out) {
  if (!obj.contains(key)) return absl::OkStatus();
  absl::StatusOr<std::string> v =
      common::JsonToString(obj[key], absl::StrCat("cluster config: ", where, ".", key));
  if (!v.ok()) return v.status();
  *out = *v;
  return absl::OkStatus();
}

template <typename T>
absl::Status GetInt(const json& obj, const char* key, const std::string& where, T* out) {
  if (!obj.contains(key)) return absl::OkStatus();
  absl::StatusOr<int64_t> v =
      common::JsonToNonNegativeInt(obj[key], absl::StrCat("cluster config: ", where, ".", key));
  if (!v.ok()) return v.status();
  *out = static_cast<T>(*v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClusterOptions> ParseClusterOptions(absl::string_view json_text,
                                                   const std::string& base_dir) {
  DS_ASSIGN_OR_RETURN(
      json root,
      common::ParseJson(std::string_view(json_text.data(), json_text.size()), "cluster config"));
  DS_RETURN_IF_ERROR(
      CheckKeys(root, "top level",
                {"s3", "etcd", "cache_bytes", "gc_grace_s", "gc_interval_s", "fill_threads"}));
  ClusterOptions o;
  const json s3 = root.value("s3", json::object());
  DS_RETURN_IF_ERROR(CheckKeys(s3, "s3",
                               {"endpoint", "region", "bucket", "access_key", "secret_key",
                                "secret_key_file", "part_bytes"}));
  DS_RETURN_IF_ERROR(GetString(s3, "endpoint", "s3", &o.s3.endpoint));
  DS_RETURN_IF_ERROR(GetString(s3, "region", "s3", &o.s3.region));
  DS_RETURN_IF_ERROR(GetString(s3, "bucket", "s3", &o.s3.bucket));
  DS_RETURN_IF_ERROR(GetString(s3, "access_key", "s3", &o.s3.access_key));
  DS_RETURN_IF_ERROR(GetString(s3, "secret_key", "s3", &o.s3.secret_key));
  std::string secret_file;
  DS_RETURN_IF_ERROR(GetString(s3, "secret_key_file", "s3", &secret_file));
  if (!secret_file.empty()) {
    if (secret_file[0] != '/' && !base_dir.empty()) {
      secret_file = (std::filesystem::path(base_dir) / secret_file).string();
    }
    absl::StatusOr<std::string> text = common::ReadFileToString(secret_file);
    if (!text.ok()) return common::Annotate(text.status(), "cluster config: s3.secret_key_file");
    o.s3.secret_key = std::string(absl::StripAsciiWhitespace(*text));
  }
  DS_RETURN_IF_ERROR(GetInt(s3, "part_bytes", "s3", &o.blobs.part_bytes));
  const json etcd = root.value("etcd", json::object());
  DS_RETURN_IF_ERROR(CheckKeys(etcd, "etcd", {"endpoint", "prefix"}));
  DS_RETURN_IF_ERROR(GetString(etcd, "endpoint", "etcd", &o.etcd_endpoint));
  DS_RETURN_IF_ERROR(GetString(etcd, "prefix", "etcd", &o.etcd_prefix));
  DS_RETURN_IF_ERROR(GetInt(root, "cache_bytes", "top level", &o.cache_bytes));
  DS_RETURN_IF_ERROR(GetInt(root, "gc_grace_s", "top level", &o.gc_grace_s));
  DS_RETURN_IF_ERROR(GetInt(root, "gc_interval_s", "top level", &o.gc_interval_s));
  DS_RETURN_IF_ERROR(GetInt(root, "fill_threads", "top level", &o.fill_threads));
  DS_RETURN_IF_ERROR(o.Validate());
  return o;
}

absl::StatusOr<ClusterOptions> LoadClusterOptions(const std::string& path) {
  DS_ASSIGN_OR_RETURN(std::string text, common::ReadFileToString(path));
  absl::StatusOr<ClusterOptions> o =
      ParseClusterOptions(text, std::filesystem::path(path).parent_path().string());
  if (!o.ok()) return common::Annotate(o.status(), path);
  return o;
}

}  // namespace deltaserve::cluster
