// TaskPointers: the cluster's task table in etcd. A task is a pointer
//   key   "<prefix>tasks/<tenant>/<task>"
//   value {"digest": "<sha256 hex>", "size": N, "base_hash": "<hex>", "created": unix_s,
//          "tensors": N, "weights": N, "merged_bytes": N, "written_ms": N,
//          "metadata": {"key": "value", ...},
//          "side_files": [{"name": "...", "bytes": N, "xxh3_64": "<16 hex>",
//                          "digest": "<sha256 hex>"}, ...]}
//   (all after "created" optional; written_ms: the writer's clock, unix milliseconds, for
//   the watch-lag metric only; metadata: the container header's, as single-node
//   listings show it)
// to an immutable container blob and to one blob per side file (cluster/blob_store.h,
// content-addressed alike: a config.json shared by many tasks is stored once). Names are
// storage::ValidateName names (no '/'), so the key splits back unambiguously. An
// encoded pointer is at most kMaxPointerBytes (etcd refuses requests above 1.5 MiB).
//
// Consistency: etcd is linearizable; a Create is one transaction (create-only unless
// overwrite), so two replicas pushing the same new task at once see one kCreated and
// one AlreadyExists. When a pointer is replaced or deleted, the blob it named is marked
// for garbage collection under "<prefix>gc/<digest>" (value: unix seconds of the mark).
//
// Thread safety: thread-safe. Calls block on etcd.
// Errors: NotFound (no such task), AlreadyExists (Create without overwrite of an
// existing task with another blob), DataLoss (a stored pointer that does not parse),
// and EtcdClient's.
#ifndef DELTASERVE_CLUSTER_TASK_POINTERS_H_
#define DELTASERVE_CLUSTER_TASK_POINTERS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cluster/etcd_client.h"
#include "storage/side_files.h"

namespace deltaserve::cluster {

// Largest encoded pointer, bytes (the header metadata is what can make it large).
inline constexpr size_t kMaxPointerBytes = 1 << 20;

// A side file of a task: the listing fields of storage::SideFileEntry and the SHA-256
// of its bytes, which name its blob.
struct SideFileRef {
  storage::SideFileEntry file;
  std::string digest;  // lowercase hex

  bool operator==(const SideFileRef&) const = default;
};

struct TaskPointer {
  std::string digest;        // SHA-256 of the container, lowercase hex
  uint64_t size = 0;         // container bytes
  std::string base_hash;     // hex hash of the base the delta was made against
  int64_t created_unix = 0;  // push time
  // What listings show without the container (so every replica lists the same):
  // tensor count, weight count, merged bytes at the recorded dtypes. 0 if unknown.
  uint64_t num_tensors = 0, weights = 0, merged_bytes = 0;
  // When the pointer was written (writer's clock, unix ms; 0 if unknown). Only for
  // deltaserve_cluster_watch_lag_seconds: nothing decides by it.
  int64_t written_ms = 0;
  // The container header's metadata, and the side files in the order pushed.
  std::map<std::string, std::string> metadata;
  std::vector<SideFileRef> side_files;

  // Bytes in the tenant's quota: container plus side files (TaskInfo::StoredBytes).
  uint64_t StoredBytes() const;
  // The blobs this pointer keeps alive: the container's, then each side file's.
  std::vector<std::string> Digests() const;
  // Same stored content: container and side files (names, order, bytes).
  bool SameContent(const TaskPointer& o) const;

  bool operator==(const TaskPointer&) const = default;
};

// InvalidArgument if the encoding exceeds kMaxPointerBytes or holds text that is not
// UTF-8 (PutDelta checked both kinds of text before).
absl::StatusOr<std::string> EncodePointer(const TaskPointer& p);
// DataLoss naming `what` if `text` is not a pointer.
absl::StatusOr<TaskPointer> DecodePointer(absl::string_view text, absl::string_view what);

enum class PointerOutcome { kCreated, kReplaced, kUnchanged };

// A task's identity in the pointer table.
struct TaskName {
  std::string tenant, task;
  std::string Join() const { return tenant + "/" + task; }
  bool operator<(const TaskName& o) const {
    return std::tie(tenant, task) < std::tie(o.tenant, o.task);
  }
  bool operator==(const TaskName&) const = default;
};

class TaskPointers {
 public:
  // `prefix`: namespace of this deployment in etcd (e.g. "deltaserve/").
  TaskPointers(const EtcdClient* etcd, std::string prefix)
      : etcd_(etcd), prefix_(std::move(prefix)) {}

  std::string TasksPrefix() const { return prefix_ + "tasks/"; }
  std::string Key(const TaskName& name) const { return TasksPrefix() + name.Join(); }
  // The task an etcd key names, or nullopt if it is not a task key of this prefix.
  std::optional<TaskName> ParseKey(absl::string_view key) const;

  // Creates the pointer; with `overwrite` replaces an existing one (the replaced blobs
  // that the new pointer does not name are marked for GC). The same content already
  // there (TaskPointer::SameContent): kUnchanged, nothing written.
  absl::StatusOr<PointerOutcome> Create(const TaskName& name, const TaskPointer& ptr,
                                        bool overwrite) const;
  absl::StatusOr<TaskPointer> Get(const TaskName& name) const;
  // Every pointer (of `tenant`; "" = all tenants), sorted by name; `*revision` (if
  // given) is the etcd revision of the listing, to watch from revision + 1.
  absl::StatusOr<std::vector<std::pair<TaskName, TaskPointer>>> List(
      absl::string_view tenant, int64_t* revision = nullptr) const;
  // Deletes the pointer (NotFound if absent) and marks its blobs for GC.
  absl::Status Delete(const TaskName& name) const;

  // Garbage collection of blobs: digests marked at least `grace_s` seconds before
  // `now_unix` that no pointer names now. `delete_blob` is called for each; on success
  // the mark is removed. Returns the number of blobs deleted.
  // While it deletes a blob, the blob's mark is a tombstone ("deleting ..."), taken by
  // a compare-and-swap on the mark, and the pointers are read again after it: see
  // BeingCollected.
  absl::StatusOr<int> CollectGarbage(
      int64_t now_unix, int64_t grace_s,
      const std::function<absl::Status(const std::string&)>& delete_blob) const;
  // Whether a collection is deleting the blob `digest` now (its tombstone exists). A
  // push that created a pointer to an existing blob asks this afterwards: while true
  // it waits, then makes sure the blob exists (uploading it again), so a collection
  // that raced with it cannot leave the pointer without its blob.
  absl::StatusOr<bool> BeingCollected(const std::string& digest) const;

 private:
  // Marks each of `digests` for GC.
  absl::Status MarkGarbage(const std::vector<std::string>& digests) const;
  absl::StatusOr<bool> AnyPointerNames(const std::string& digest) const;

  const EtcdClient* etcd_;
  std::string prefix_;
};

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_TASK_POINTERS_H_
