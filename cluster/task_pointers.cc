#include "cluster/task_pointers.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/status_macros.h"

namespace deltaserve::cluster {
namespace {

using json = nlohmann::json;

// Attempts of a compare-and-swap replace before giving up (another writer keeps
// replacing the same task).
constexpr int kReplaceAttempts = 8;

// Value of a gc mark while a collection deletes that blob: "deleting <unix s>".
constexpr char kTombstone[] = "deleting ";

}  // namespace

uint64_t TaskPointer::StoredBytes() const {
  uint64_t bytes = size;
  for (const SideFileRef& f : side_files) bytes += f.file.bytes;
  return bytes;
}

std::vector<std::string> TaskPointer::Digests() const {
  std::vector<std::string> out{digest};
  for (const SideFileRef& f : side_files) out.push_back(f.digest);
  return out;
}

bool TaskPointer::SameContent(const TaskPointer& o) const {
  return digest == o.digest && side_files == o.side_files;
}

absl::StatusOr<std::string> EncodePointer(const TaskPointer& p) {
  json side = json::array();
  for (const SideFileRef& f : p.side_files) {
    side.push_back({{"name", f.file.name},
                    {"bytes", f.file.bytes},
                    {"xxh3_64", absl::StrCat(absl::Hex(f.file.xxh3_64, absl::kZeroPad16))},
                    {"digest", f.digest}});
  }
  json j{{"digest", p.digest},
         {"size", p.size},
         {"base_hash", p.base_hash},
         {"created", p.created_unix},
         {"tensors", p.num_tensors},
         {"weights", p.weights},
         {"merged_bytes", p.merged_bytes},
         {"written_ms", p.written_ms}};
  if (!p.metadata.empty()) j["metadata"] = p.metadata;
  if (!p.side_files.empty()) j["side_files"] = std::move(side);
  DS_ASSIGN_OR_RETURN(std::string text, common::DumpJson(j, "task pointer"));
  if (text.size() > kMaxPointerBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("task pointer: ", text.size(), " bytes encoded, cluster mode keeps at most ",
                     kMaxPointerBytes, " (the container header's metadata is too large)"));
  }
  return text;
}

namespace {

bool IsDigest(absl::string_view d) {
  return d.size() == 64 && d.find_first_not_of("0123456789abcdef") == absl::string_view::npos;
}

// The optional "metadata" and "side_files" of a pointer.
absl::Status DecodeExtras(const json& j, TaskPointer& p) {
  if (j.contains("metadata")) {
    const json& m = j["metadata"];
    if (!m.is_object()) return absl::InvalidArgumentError("metadata is not an object");
    for (const auto& [k, v] : m.items()) {
      DS_ASSIGN_OR_RETURN(p.metadata[k], common::JsonToString(v, "metadata value"));
    }
  }
  if (!j.contains("side_files")) return absl::OkStatus();
  const json& files = j["side_files"];
  if (!files.is_array()) return absl::InvalidArgumentError("side_files is not an array");
  for (const json& f : files) {
    if (!f.is_object()) return absl::InvalidArgumentError("side file is not an object");
    SideFileRef ref;
    DS_ASSIGN_OR_RETURN(ref.file.name, common::JsonToString(f.value("name", json()), "name"));
    DS_ASSIGN_OR_RETURN(int64_t bytes,
                        common::JsonToNonNegativeInt(f.value("bytes", json()), "bytes"));
    ref.file.bytes = static_cast<uint64_t>(bytes);
    DS_ASSIGN_OR_RETURN(std::string xxh,
                        common::JsonToString(f.value("xxh3_64", json()), "xxh3_64"));
    if (xxh.size() != 16 || !absl::SimpleHexAtoi(xxh, &ref.file.xxh3_64)) {
      return absl::InvalidArgumentError("side file xxh3_64 is not 16 hex digits");
    }
    DS_ASSIGN_OR_RETURN(ref.digest, common::JsonToString(f.value("digest", json()), "digest"));
    if (!IsDigest(ref.digest)) {
      return absl::InvalidArgumentError("side file digest is not 64 lowercase hex digits");
    }
    p.side_files.push_back(std::move(ref));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TaskPointer> DecodePointer(absl::string_view text, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("task pointer ", what, ": ", why));
  };
  absl::StatusOr<json> j = common::ParseJson(std::string_view(text.data(), text.size()),
                                             absl::StrCat("task pointer ", what));
  if (!j.ok()) return bad(j.status().message());
  if (!j->is_object()) return bad("not an object");
  TaskPointer p;
  absl::StatusOr<std::string> digest = common::JsonToString(j->value("digest", json()), "digest");
  absl::StatusOr<int64_t> size = common::JsonToNonNegativeInt(j->value("size", json()), "size");
  absl::StatusOr<std::string> base =
      common::JsonToString(j->value("base_hash", json()), "base_hash");
  absl::StatusOr<int64_t> created =
      common::JsonToNonNegativeInt(j->value("created", json()), "created");
  for (const absl::Status& s : {digest.status(), size.status(), base.status(), created.status()}) {
    if (!s.ok()) return bad(s.message());
  }
  if (!IsDigest(*digest)) {
    return bad("digest is not 64 lowercase hex digits");
  }
  p.digest = *digest;
  p.size = static_cast<uint64_t>(*size);
  p.base_hash = *base;
  p.created_unix = *created;
  uint64_t written_ms = 0;
  for (auto [field, out] : {std::pair{"tensors", &p.num_tensors}, std::pair{"weights", &p.weights},
                            std::pair{"merged_bytes", &p.merged_bytes},
                            std::pair{"written_ms", &written_ms}}) {
    if (!j->contains(field)) continue;
    absl::StatusOr<int64_t> v = common::JsonToNonNegativeInt((*j)[field], field);
    if (!v.ok()) return bad(v.status().message());
    *out = static_cast<uint64_t>(*v);
  }
  p.written_ms = static_cast<int64_t>(written_ms);
  if (absl::Status s = DecodeExtras(*j, p); !s.ok()) return bad(s.message());
  return p;
}

std::optional<TaskName> TaskPointers::ParseKey(absl::string_view key) const {
  std::string prefix = TasksPrefix();
  if (!absl::StartsWith(key, prefix)) return std::nullopt;
  key.remove_prefix(prefix.size());
  size_t slash = key.find('/');
  if (slash == absl::string_view::npos || slash == 0 || slash + 1 == key.size()) {
    return std::nullopt;
  }
  return TaskName{std::string(key.substr(0, slash)), std::string(key.substr(slash + 1))};
}

absl::StatusOr<PointerOutcome> TaskPointers::Create(const TaskName& name, const TaskPointer& ptr,
                                                    bool overwrite) const {
  std::string key = Key(name);
  DS_ASSIGN_OR_RETURN(std::string value, EncodePointer(ptr));
  for (int attempt = 0; attempt < kReplaceAttempts; ++attempt) {
    std::optional<KeyValue> existing;
    DS_ASSIGN_OR_RETURN(bool created, etcd_->PutIfAbsent(key, value, &existing));
    if (created) return PointerOutcome::kCreated;
    if (!existing.has_value()) continue;  // deleted in between: try again
    DS_ASSIGN_OR_RETURN(TaskPointer old, DecodePointer(existing->value, key));
    if (old.SameContent(ptr)) return PointerOutcome::kUnchanged;
    if (!overwrite) {
      return absl::AlreadyExistsError(
          absl::StrCat("task '", name.task, "' of tenant '", name.tenant,
                       "' exists in the cluster (push with overwrite to replace it)"));
    }
    DS_ASSIGN_OR_RETURN(bool replaced, etcd_->PutIfRevision(key, value, existing->mod_revision));
    if (replaced) {
      std::vector<std::string> freed;
      const std::vector<std::string> kept = ptr.Digests();
      for (const std::string& d : old.Digests()) {
        if (std::find(kept.begin(), kept.end(), d) == kept.end()) freed.push_back(d);
      }
      DS_RETURN_IF_ERROR(MarkGarbage(freed));
      return PointerOutcome::kReplaced;
    }
  }
  return absl::AbortedError(absl::StrCat("task '", name.task, "' of tenant '", name.tenant,
                                         "': replaced concurrently ", kReplaceAttempts,
                                         " times; try again"));
}

absl::StatusOr<TaskPointer> TaskPointers::Get(const TaskName& name) const {
  std::string key = Key(name);
  DS_ASSIGN_OR_RETURN(std::optional<KeyValue> kv, etcd_->Get(key));
  if (!kv.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("task '", name.task, "' of tenant '", name.tenant, "' not found"));
  }
  return DecodePointer(kv->value, key);
}

absl::StatusOr<std::vector<std::pair<TaskName, TaskPointer>>> TaskPointers::List(
    absl::string_view tenant, int64_t* revision) const {
  std::string prefix = TasksPrefix();
  if (!tenant.empty()) absl::StrAppend(&prefix, tenant, "/");
  DS_ASSIGN_OR_RETURN(RangeResult range, etcd_->GetPrefix(prefix));
  if (revision != nullptr) *revision = range.revision;
  std::vector<std::pair<TaskName, TaskPointer>> out;
  for (const KeyValue& kv : range.kvs) {
    std::optional<TaskName> name = ParseKey(kv.key);
    if (!name.has_value()) continue;  // not ours (a stray key under the prefix)
    DS_ASSIGN_OR_RETURN(TaskPointer p, DecodePointer(kv.value, kv.key));
    out.emplace_back(std::move(*name), std::move(p));
  }
  return out;
}

absl::Status TaskPointers::Delete(const TaskName& name) const {
  DS_ASSIGN_OR_RETURN(TaskPointer old, Get(name));
  DS_ASSIGN_OR_RETURN(int64_t deleted, etcd_->Delete(Key(name)));
  if (deleted == 0) {
    return absl::NotFoundError(
        absl::StrCat("task '", name.task, "' of tenant '", name.tenant, "' not found"));
  }
  return MarkGarbage(old.Digests());
}

absl::StatusOr<bool> TaskPointers::AnyPointerNames(const std::string& digest) const {
  DS_ASSIGN_OR_RETURN(auto pointers, List(""));
  for (const auto& [name, p] : pointers) {
    for (const std::string& d : p.Digests()) {
      if (d == digest) return true;
    }
  }
  return false;
}

absl::StatusOr<bool> TaskPointers::BeingCollected(const std::string& digest) const {
  DS_ASSIGN_OR_RETURN(std::optional<KeyValue> mark,
                      etcd_->Get(absl::StrCat(prefix_, "gc/", digest)));
  return mark.has_value() && absl::StartsWith(mark->value, kTombstone);
}

absl::Status TaskPointers::MarkGarbage(const std::vector<std::string>& digests) const {
  // A later mark of the same digest keeps the earlier time (PutIfAbsent): the grace
  // period runs from the first time the blob lost a pointer. A digest that another
  // pointer still names is marked too: collection skips it (and drops the mark).
  for (const std::string& digest : digests) {
    DS_RETURN_IF_ERROR(etcd_
                           ->PutIfAbsent(absl::StrCat(prefix_, "gc/", digest),
                                         absl::StrCat(absl::ToUnixSeconds(absl::Now())))
                           .status());
  }
  return absl::OkStatus();
}

absl::StatusOr<int> TaskPointers::CollectGarbage(
    int64_t now_unix, int64_t grace_s,
    const std::function<absl::Status(const std::string&)>& delete_blob) const {
  std::string gc_prefix = absl::StrCat(prefix_, "gc/");
  DS_ASSIGN_OR_RETURN(RangeResult marks, etcd_->GetPrefix(gc_prefix));
  DS_ASSIGN_OR_RETURN(auto pointers, List(""));
  std::set<std::string> live;
  for (const auto& [name, p] : pointers) {
    for (std::string& d : p.Digests()) live.insert(std::move(d));
  }
  int deleted = 0;
  for (const KeyValue& kv : marks.kvs) {
    std::string digest = kv.key.substr(gc_prefix.size());
    int64_t marked = 0;
    // A tombstone left by a collection that died midway: expired.
    if (!absl::SimpleAtoi(kv.value, &marked)) marked = 0;
    if (live.count(digest) > 0) {  // pushed again since: not garbage
      DS_RETURN_IF_ERROR(etcd_->Delete(kv.key).status());
      continue;
    }
    if (now_unix - marked < grace_s) continue;
    // The mark becomes a tombstone (only if nobody changed it since we read it), then
    // the pointers are read again: a push that created its pointer before the tombstone
    // is seen here (the blob stays); one that creates it later sees the tombstone and
    // uploads its blob again once it is gone (EnsureBlobAfterCollection).
    DS_ASSIGN_OR_RETURN(bool claimed,
                        etcd_->PutIfRevision(kv.key, absl::StrCat(kTombstone, now_unix),
                                             kv.mod_revision));
    if (!claimed) continue;  // another collector, or marked again: next run
    DS_ASSIGN_OR_RETURN(bool named, AnyPointerNames(digest));
    if (!named) {
      DS_RETURN_IF_ERROR(delete_blob(digest));
      ++deleted;
    }
    DS_RETURN_IF_ERROR(etcd_->Delete(kv.key).status());
  }
  return deleted;
}

}  // namespace deltaserve::cluster
