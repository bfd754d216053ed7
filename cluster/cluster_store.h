// ClusterStore: cluster mode of deltaserved (deploy/README.md "Scaling out").
//
//   S3 bucket  blobs/sha256/<digest>        every pushed container, immutable (BlobStore)
//   etcd       <prefix>tasks/<tenant>/<task> -> pointer to a blob (TaskPointers)
//   RocksDB    this replica's cache of containers, LRU by bytes (LruIndex)
//
// A push uploads the blobs (container, side files), then creates the pointer (one etcd transaction:
// create-only unless overwrite), then waits while a garbage collection deletes that very blob
// (identical content pushed again: TaskPointers::BeingCollected) and makes sure the
// blob exists (uploading it again), then fills the local cache. A read asks Ensure() first: the
// task's pointer (from the watched table, else from etcd) is compared with the cached copy (same
// created time and size); on a miss the blobs are fetched, checked against their digests and
// committed to the local store (side files with the task, as single-node mode keeps them, so
// GetTask and GetSideFile read them locally). A delete removes the pointer first, then the local
// copy; every other replica drops its copy when the watch reports the delete or an overwrite. Blobs
// without a pointer are deleted by CollectGarbage after a grace period (longer than any read of a
// blob), never at once.
//
// Consistency: pushes and deletes are linearizable (etcd). A replica sees another's
// delete or overwrite when its watch delivers it (typically milliseconds; measured by
// tests/cluster/cluster_test.sh); until then it may serve the old version, which is
// never mixed with the new one (the cached copy is one whole immutable container).
//
// Local writes go through the `mutate` hook the server gives (TaskVersions::Mutate), so
// the merged-tensor cache never serves a replaced task.
//
// Thread safety: thread-safe. Calls block (network): run them on a worker pool.
#ifndef DELTASERVE_CLUSTER_CLUSTER_STORE_H_
#define DELTASERVE_CLUSTER_CLUSTER_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "cluster/blob_store.h"
#include "cluster/etcd_client.h"
#include "cluster/lru_index.h"
#include "cluster/task_pointers.h"
#include "storage/store.h"

namespace deltaserve::cluster {

struct ClusterOptions {
  S3Options s3;
  BlobStoreOptions blobs;
  // etcd client URL ("http://host:port"). Required.
  std::string etcd_endpoint;
  // Namespace of this deployment's keys in etcd. Default: "deltaserve/".
  std::string etcd_prefix = "deltaserve/";
  // Bytes of tasks (containers and side files) this replica keeps in its RocksDB; least recently
  // used tasks beyond it are deleted locally (still in S3). 0 = unbounded. Default: 64 GiB.
  uint64_t cache_bytes = 64ull << 30;
  // A blob that lost its last pointer is deleted no sooner than this. Must exceed the
  // longest fetch of a blob. Default: 3600 s.
  int64_t gc_grace_s = 3600;
  // Every replica runs CollectGarbage this often (concurrent runs are harmless: marks
  // and deletes are idempotent). 0 = never (run it elsewhere). Default: 600 s.
  int64_t gc_interval_s = 600;
  // Threads that fetch missing tasks from the object store (the server's fill pool,
  // server/internal/cluster_glue.h): a slow fetch holds one of these, never a decode
  // worker or a control thread. At most this many different tasks fill at once; more
  // wait in its queue. Must be >= 1. Default: 4.
  int64_t fill_threads = 4;

  absl::Status Validate() const;
};

// Parses the cluster config file (server/CONFIG.md, "Cluster mode"):
//   {"s3": {"endpoint": "...", "region": "...", "bucket": "...", "access_key": "...",
//           "secret_key": "..." | "secret_key_file": "path", "part_bytes": N},
//    "etcd": {"endpoint": "...", "prefix": "..."},
//    "cache_bytes": N, "gc_grace_s": N, "gc_interval_s": N, "fill_threads": N}
// InvalidArgument naming the field; the result is validated.
absl::StatusOr<ClusterOptions> ParseClusterOptions(absl::string_view json_text,
                                                   const std::string& base_dir);
absl::StatusOr<ClusterOptions> LoadClusterOptions(const std::string& path);

struct ClusterStats {
  // Ensure() found the local copy / fetched the blob; bytes and seconds of those fetches
  // (download, digest check and local commit); tasks evicted by the LRU; local copies
  // dropped because the watch saw a delete or overwrite.
  uint64_t hits = 0, misses = 0, fetched_bytes = 0, evictions = 0, watch_drops = 0;
  double fill_seconds = 0;
  uint64_t gc_deleted = 0, gc_errors = 0;  // blobs deleted by the periodic GC; failed runs
  // Failed calls to the object store (fetch, upload, probe): anything but NotFound.
  uint64_t object_store_errors = 0;
  // Container bytes this replica's cache holds (LRU's count).
  uint64_t cached_bytes = 0;
  // The latest put the watch delivered: its delay from the writer's clock (written_ms)
  // to this replica applying it, seconds (clocks of replicas assumed in sync; 0 before
  // the first).
  double watch_lag_seconds = 0;
};

class ClusterStore {
 public:
  // Runs `fn` (a commit or delete in the local store of `name`) under the server's
  // per-task exclusion; returns fn's status.
  using Mutate =
      std::function<absl::Status(const TaskName& name, const std::function<absl::Status()>& fn)>;

  // Creates the bucket if needed, lists the pointers, drops local copies that no
  // pointer matches, indexes the rest in the LRU and starts the watch thread.
  // Errors: InvalidArgument (options), those of S3 and etcd (Unavailable when down).
  static absl::StatusOr<std::unique_ptr<ClusterStore>> Open(const ClusterOptions& options,
                                                            storage::DeltaStore* local,
                                                            Mutate mutate);
  ~ClusterStore();  // stops the watch thread

  // Publishes a verified container and its side files (already validated:
  // storage::ValidateSideFiles) as (tenant, task): blobs, then pointer. `quota_bytes`
  // (0 = none): the tenant's pointed-to bytes (containers and side files) after the
  // push, counting a replaced task as freed, must stay within it (ResourceExhausted).
  // `ptr` carries base_hash, created_unix, metadata and the listing fields; digest, size
  // and side_files are filled in. Then the local cache is filled (`container` and the
  // side files committed under `mutate`).
  absl::StatusOr<PointerOutcome> Publish(const TaskName& name,
                                         absl::Span<const uint8_t> container_bytes,
                                         const codec::ContainerReader& container,
                                         absl::Span<const storage::SideFile> side_files,
                                         TaskPointer ptr, bool overwrite, uint64_t quota_bytes);
  // Makes the local store hold the task's current version (fetching it on a miss).
  // NotFound if the task has no pointer (a stale local copy is dropped then).
  absl::Status Ensure(const TaskName& name);
  // Whether the local store holds the current version the watch has seen (no network:
  // one local read). False for a task the watch has not seen; Ensure decides then.
  bool Cached(const TaskName& name) const;
  // Pointers of `tenant` ("" = all), from etcd.
  absl::StatusOr<std::vector<std::pair<TaskName, TaskPointer>>> List(
      absl::string_view tenant) const;
  // Deletes the pointer (NotFound if none), then the local copy. Returns the pointer.
  absl::StatusOr<TaskPointer> Delete(const TaskName& name);
  // Deletes blobs that lost their pointer at least gc_grace_s ago. Returns how many.
  absl::StatusOr<int> CollectGarbage();
  // Reachability of etcd and the object store, for health checks: one etcd read and one
  // S3 HEAD, each with a 2 s timeout. OK, or Unavailable naming the one that failed.
  absl::Status Probe();

  ClusterStats stats() const;
  const BlobStore& blobs() const { return blobs_; }

 private:
  ClusterStore(const ClusterOptions& options, storage::DeltaStore* local, Mutate mutate);
  // The local copy matches `ptr`.
  bool LocalMatches(const TaskName& name, const TaskPointer& ptr) const;
  // Commits `container` and `side_files` locally as `ptr`'s version and records it in
  // the LRU, evicting.
  absl::Status Fill(const TaskName& name, const codec::ContainerReader& container,
                    absl::Span<const storage::SideFile> side_files, const TaskPointer& ptr);
  // Fetches the blobs of `ptr` (container, side files), checks them and Fills.
  absl::Status FetchAndFill(const TaskName& name, const TaskPointer& ptr);
  // Uploads every blob of a push (Put skips those already stored); returns their
  // digests: the container's, then each side file's.
  absl::StatusOr<std::vector<std::string>> PutBlobs(absl::Span<const uint8_t> container_bytes,
                                                    absl::Span<const storage::SideFile> side_files);
  // Drops the local copy (OK if none).
  absl::Status DropLocal(const TaskName& name);
  // Watch thread: list, then watch from the listing's revision; again on errors.
  void WatchLoop();
  // GC thread: CollectGarbage every gc_interval_s until stopped.
  void GcLoop();
  // Counts an object-store error (not NotFound); returns `s`.
  absl::Status CountS3Error(absl::Status s);
  // Applies the current pointer table `now` (nullopt entry = deleted) to the watched
  // table and the local copies.
  void Apply(const TaskName& name, const std::optional<TaskPointer>& ptr);

  ClusterOptions options_;
  storage::DeltaStore* local_;
  Mutate mutate_;
  EtcdClient etcd_;
  EtcdClient probe_etcd_;  // short timeouts (Probe)
  S3Client probe_s3_;
  TaskPointers pointers_;
  BlobStore blobs_;
  LruIndex lru_;

  mutable absl::Mutex mu_;
  std::map<TaskName, TaskPointer> watched_ ABSL_GUARDED_BY(mu_);
  ClusterStats stats_ ABSL_GUARDED_BY(mu_);
  // Single flight per task: two misses of the same task fetch it once; fills of
  // different tasks run at once. An entry lives while a fill of its task holds it.
  struct FillSlot {
    absl::Mutex mu;
    int users = 0;  // guarded by ClusterStore::mu_
  };
  std::map<TaskName, std::unique_ptr<FillSlot>> fills_ ABSL_GUARDED_BY(mu_);
  // Holds `name`'s fill slot for its lifetime.
  class FillLock {
   public:
    FillLock(ClusterStore* store, const TaskName& name);
    ~FillLock();

   private:
    ClusterStore* store_;
    TaskName name_;
    FillSlot* slot_;
  };

  std::atomic<bool> stop_{false};
  std::thread watcher_, collector_;
};

}  // namespace deltaserve::cluster

#endif  // DELTASERVE_CLUSTER_CLUSTER_STORE_H_
