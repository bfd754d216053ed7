#include "server/internal/base_check.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/delta_codec.h"
#include "codec/record_checks.h"
#include "common/status_macros.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {

absl::StatusOr<OtherBaseTasks> FindTasksOfAnotherBase(const storage::DeltaStore& store,
                                                      const codec::BaseHash& resident,
                                                      size_t max_examples) {
  OtherBaseTasks found;
  DS_ASSIGN_OR_RETURN(std::vector<std::string> tenants, store.ListTenants());
  for (const std::string& tenant : tenants) {
    DS_ASSIGN_OR_RETURN(std::vector<storage::TaskInfo> tasks, store.ListTasks(tenant));
    for (const storage::TaskInfo& info : tasks) {
      if (info.base_hash == resident) continue;
      if (found.count == 0) found.first_base_hex = codec::BaseHashHex(info.base_hash);
      ++found.count;
      if (found.examples.size() < max_examples) {
        found.examples.push_back(absl::StrCat(tenant, "/", info.task));
      }
    }
  }
  return found;
}

void WarnTasksOfAnotherBase(const OtherBaseTasks& found, const std::string& base_path,
                            const std::string& resident_hex) {
  if (found.count == 0) return;
  std::string names = absl::StrJoin(found.examples, ", ");
  if (found.count > found.examples.size()) {
    absl::StrAppend(&names, " and ", found.count - found.examples.size(), " more");
  }
  LogWarn(absl::StrCat("BASE MISMATCH: ", found.count, " stored task",
                       found.count == 1 ? " was" : "s were",
                       " compressed against another base than --base (", names,
                       "); pulls of them fail with FAILED_PRECONDITION. Is --base the model "
                       "this database was filled against?"),
          {{"base", base_path},
           {"hash", resident_hex},
           {"tasks", std::to_string(found.count)},
           {"first_task_base_hash", found.first_base_hex}});
}

absl::Status CheckTaskBase(const storage::TaskInfo& info, const codec::BaseHash& resident) {
  absl::Status s = codec::CheckBaseHashMatch(info.base_hash, resident,
                                             absl::StrCat("task '", info.task, "'"),
                                             "the resident base");
  if (s.ok()) return s;
  return absl::FailedPreconditionError(
      absl::StrCat(s.message(),
                   "; deltaserved serves one base (--base): pull it from a server started "
                   "with the base it was compressed against, or push it again compressed "
                   "against this one"));
}

absl::Status CheckTaskFitsBase(const storage::TaskInfo& info, const codec::ModelReader& base) {
  // A malformed tie map was refused at push (ContainerReader::Parse): none then.
  const std::map<std::string, std::string> ties =
      codec::ParseBaseAlias(info.metadata).value_or(std::map<std::string, std::string>{});
  for (const storage::TensorEntry& t : info.tensors) {
    if (t.encoding == codec::Encoding::kRaw) continue;
    codec::TensorRecord rec;
    rec.info = {t.name, t.dtype, t.shape};
    rec.encoding = t.encoding;
    if (auto it = ties.find(t.name); it != ties.end()) rec.base_name = it->second;
    absl::StatusOr<codec::TensorView> bv = base.Get(rec.base_tensor());
    if (!bv.ok() && !absl::IsNotFound(bv.status())) return bv.status();
    // An unchanged tensor's base shape is its shape; a lossy one's is not in the
    // metadata (checked at merge): the base's, so that only its dtype is checked here.
    rec.base_shape = t.encoding == codec::Encoding::kUnchanged || !bv.ok()
                         ? t.shape
                         : bv->info.shape;
    absl::Status s = codec::CheckRecordFitsBase(rec, bv.ok() ? &bv->info : nullptr);
    if (!s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("task '", info.task, "' does not fit the resident base: ", s.message(),
                       "; push it again (PutDelta now refuses such a container)"));
    }
  }
  return absl::OkStatus();
}

void MarkOtherBase(const std::string& resident_hex, v1::TaskInfo* out) {
  out->set_other_base(out->base_hash() != resident_hex);
}

}  // namespace deltaserve::server::internal
