#include "server/internal/base_check.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/delta_codec.h"
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

void MarkOtherBase(const std::string& resident_hex, v1::TaskInfo* out) {
  out->set_other_base(out->base_hash() != resident_hex);
}

}  // namespace deltaserve::server::internal
