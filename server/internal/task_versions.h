// Consistency between the store and the merged-tensor cache.
//
// Cache keys carry a per-task version number that this process bumps on every commit
// and delete of the task. A reader takes the task's stripe lock shared while it reads
// the version and opens its snapshot (storage::TaskReader); a writer holds it exclusive
// across the store mutation and the bump. So the version a stream uses always names
// the data its snapshot sees, and a stream that opened the old task before an
// overwrite never reads the new task's tensors from the cache (nor the reverse).
// Thread-safe.
#ifndef DELTASERVE_SERVER_INTERNAL_TASK_VERSIONS_H_
#define DELTASERVE_SERVER_INTERNAL_TASK_VERSIONS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/store.h"

namespace deltaserve::server::internal {

class TensorCache;

// Cache group of a task: "tenant/task" ('/' cannot occur in either name).
std::string TaskGroup(const std::string& tenant, const std::string& task);

struct TaskSnapshot {
  uint64_t version = 0;
  std::unique_ptr<storage::TaskReader> reader;
};

class TaskVersions {
 public:
  // Opens a snapshot of the task with its version. Errors of DeltaStore::OpenTask.
  absl::StatusOr<TaskSnapshot> Open(const storage::DeltaStore& store, const std::string& tenant,
                                    const std::string& task);

  // Runs `mutate` (a commit or delete of this task) exclusively, then, if it succeeded,
  // bumps the version and erases the task's cache entries. Returns mutate's status.
  absl::Status Mutate(const std::string& tenant, const std::string& task, TensorCache* cache,
                      const std::function<absl::Status()>& mutate);

 private:
  absl::Mutex& Stripe(const std::string& group);
  uint64_t Version(const std::string& group);

  std::array<absl::Mutex, 64> stripes_;
  absl::Mutex mu_;
  std::unordered_map<std::string, uint64_t> versions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_TASK_VERSIONS_H_
