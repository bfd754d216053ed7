#include "server/internal/task_versions.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/internal/tensor_cache.h"

namespace deltaserve::server::internal {

std::string TaskGroup(const std::string& tenant, const std::string& task) {
  return absl::StrCat(tenant, "/", task);
}

absl::Mutex& TaskVersions::Stripe(const std::string& group) {
  return stripes_[std::hash<std::string>{}(group) % stripes_.size()];
}

uint64_t TaskVersions::Version(const std::string& group) {
  absl::MutexLock lock(&mu_);
  return versions_[group];
}

absl::StatusOr<TaskSnapshot> TaskVersions::Open(const storage::DeltaStore& store,
                                                const std::string& tenant,
                                                const std::string& task) {
  const std::string group = TaskGroup(tenant, task);
  absl::ReaderMutexLock lock(&Stripe(group));
  TaskSnapshot snap;
  snap.version = Version(group);
  DS_ASSIGN_OR_RETURN(snap.reader, store.OpenTask(tenant, task));
  return snap;
}

absl::Status TaskVersions::Mutate(const std::string& tenant, const std::string& task,
                                  TensorCache* cache,
                                  const std::function<absl::Status()>& mutate) {
  const std::string group = TaskGroup(tenant, task);
  absl::WriterMutexLock lock(&Stripe(group));
  DS_RETURN_IF_ERROR(mutate());
  {
    absl::MutexLock vlock(&mu_);
    ++versions_[group];
  }
  if (cache) cache->EraseGroup(group);
  return absl::OkStatus();
}

}  // namespace deltaserve::server::internal
