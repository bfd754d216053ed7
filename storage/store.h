// DeltaStore: many tenants' task deltas (codec containers) kept in RocksDB.
//
// A task is one container (codec/container.h) committed under (tenant, task). The store
// keeps the container's pieces apart (header bytes, one value per tensor record, and a
// small task meta value) so that one tensor can be read without the others, and
// rebuilds the byte-identical container on demand. The key schema and the value formats
// are documented in storage/key_schema.h.
//
// Thread safety: DeltaStore is thread-safe; any method may be called concurrently from
// any thread. Commits and deletes of the same tenant are serialized (so quota accounting
// never races); reads never block on them and see either the whole old task or the whole
// new one (every multi-key read runs on one RocksDB snapshot). TaskReader is thread-safe
// too. Every object returned by a DeltaStore must be destroyed before the store.
//
// Errors (every message names the tenant and task, and the tensor where one is at fault):
//   InvalidArgument   bad tenant/task name (ValidateName), bad options, bad container
//   NotFound          no such task (also for another tenant's task: names do not leak)
//   AlreadyExists     commit of an existing task without CommitOptions::overwrite
//   ResourceExhausted commit would push the tenant over CommitOptions::quota_bytes
//   DataLoss          a stored value fails its checksum or framing
//   Unavailable / Internal  RocksDB I/O failures (storage/internal/status.h)
#ifndef DELTASERVE_STORAGE_STORE_H_
#define DELTASERVE_STORAGE_STORE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/container.h"
#include "codec/tensor.h"
#include "common/names.h"
#include "storage/side_files.h"

namespace rocksdb {
class DB;
class PinnableSlice;
class ColumnFamilyHandle;
class Snapshot;
class WriteBatch;
}  // namespace rocksdb

namespace deltaserve::storage {

struct KeyWrite;   // storage/internal/ingest.h
class TableFile;   // storage/internal/ingest.h

// Descriptors an open DeltaStore keeps spare for RocksDB's own files (StoreOptions).
inline constexpr int kStoreSpareFileDescriptors = 16;

struct StoreOptions {
  // Directory of the RocksDB database. Required.
  std::string path;
  // Create the database (and its column families) if it does not exist. Default: true.
  bool create_if_missing = true;
  // LRU block cache of the meta column family (task meta, tenant usage), in bytes.
  // Larger: more task meta served from memory. Default: 256 MiB. Must be >= 1 MiB.
  uint64_t block_cache_bytes = 256ull << 20;
  // LRU block cache of the records column family (tensor records, container headers,
  // side files), in bytes. A record is read once per cold decode; what serves repeats is
  // the server's merged-tensor cache, and a record read again (its merged tensor was
  // evicted) comes from the page cache at memory speed. Records kept here duplicate, in
  // the process's RSS, container bytes that are already decoded: sharing the 256 MiB
  // block cache, two cold pulls of the 0.5B stream_bench task left 87 MiB of them there
  // (issue 9's peak-RSS bound). A read still pins the record's block in this cache while
  // the record lives (StoredRecord: no copy), whatever its size; only the retention after
  // that is bounded. Larger: small records of recently decoded tensors stay in memory.
  // Default: 8 MiB. Must be >= 1 MiB.
  uint64_t record_cache_bytes = 8ull << 20;
  // Memtable size per column family, in bytes. Larger: fewer flushes during big
  // commits, more memory. At most min_free_bytes / 8 is used (a flush must fit in the
  // free-space reserve). Default: 64 MiB. Must be >= 1 MiB.
  uint64_t write_buffer_bytes = 64ull << 20;
  // fsync the write-ahead log on every commit/delete. false: faster commits, the last
  // commits may be lost on a machine crash (never on a process crash). Default: true.
  bool sync_writes = true;
  // Keep tensor records of at least `min_blob_bytes` in RocksDB blob files (integrated
  // BlobDB) instead of SST files: large values are then written once instead of being
  // rewritten by compactions, but every read verifies the blob's CRC32c, which Debian's
  // portable RocksDB build computes slowly: reading a 256 MiB task (64 x 4 MiB records)
  // measured 0.21-0.29 GB/s from blob files vs 0.48-0.98 GB/s from SST files (XXH3 block
  // checksums) on the loaded 2-core build machine. Tasks are written once and read
  // often. Default: false, 64 KiB.
  bool use_blob_files = false;
  uint64_t min_blob_bytes = 64ull << 10;
  // Commits of at least this many bytes (container plus side files) are not written
  // through the write-ahead log and the memtables: their keys are written as one table
  // file per column family and ingested atomically (RocksDB IngestExternalFiles; staged
  // in <path>/ingest, which Open empties). Their bytes are then written once, into the
  // level where they stay, instead of into the log, the memtable, an L0 file and each
  // compaction after it (PutDelta of a 64 MB task: see README); each such commit costs
  // a few fsyncs (its files, the directory, the MANIFEST) even with sync_writes off, and
  // may flush the memtables when they hold keys in its range. Ingested records stay in
  // table files even with use_blob_files. 0: every commit. Default: 8 MiB.
  uint64_t ingest_min_bytes = 8ull << 20;
  // RocksDB background flush/compaction threads. Default: 2. Must be in [1, 64].
  int max_background_jobs = 2;
  // Free space kept on the database's filesystem. A commit is refused with
  // ResourceExhausted ("disk full") when, after writing it (twice its size: write-ahead
  // log + flush), less than this would be left; deletes need a tenth of it. The reserve
  // is what RocksDB's flushes and compactions run in, so that RocksDB never meets a full
  // disk (Debian's librocksdb aborts on some write-path I/O errors): the LSM levels are
  // sized from it (L1 and the largest compaction = a quarter of it, memtables at most
  // an eighth). With less than this free
  // at Open, the store opens read-only. Larger: safer; disk left unused. Default: 1 GiB
  // (L1 = 256 MiB, RocksDB's default).
  uint64_t min_free_bytes = 1ull << 30;
  // RocksDB table files kept open (each holds a file descriptor); -1 = no limit. The
  // server derives it from RLIMIT_NOFILE. Default: -1. Must be -1 or >= 16.
  int max_open_files = -1;
  // Besides, an open store holds kStoreSpareFileDescriptors descriptors (on /dev/null)
  // that it gives up one by one when RocksDB cannot open one of its files for lack of
  // descriptors (EMFILE/ENFILE), which RocksDB would otherwise rate fatal (read-only
  // until reopened).

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// Tenant and task names (common/names.h: 1..128 characters of [A-Za-z0-9._-], not
// starting with '.'; InvalidArgument naming `kind` and the escaped name otherwise). The
// one rule, shared with deltactl, which checks its flags with it before any work.
using common::ValidateName;

// One tensor of a stored task, as recorded in the task meta.
struct TensorEntry {
  std::string name;
  codec::DType dtype = codec::DType::kF32;  // the finetuned tensor's (output) dtype
  std::vector<int64_t> shape;               // the finetuned tensor's shape
  codec::Encoding encoding = codec::Encoding::kRaw;
  uint64_t record_bytes = 0;                // size of its serialized record

  bool operator==(const TensorEntry&) const = default;
};

// Everything known about a stored task without reading its records.
struct TaskInfo {
  std::string tenant, task;
  std::vector<TensorEntry> tensors;            // in container order (record index)
  std::map<std::string, std::string> metadata;  // the container header's metadata
  codec::BaseHash base_hash{};                 // base the delta was computed against
  uint64_t header_bytes = 0;                   // size of the container header
  uint64_t total_bytes = 0;                    // size of the whole container
  uint64_t weights = 0;                        // sum of the tensors' element counts
  double bits_per_weight = 0;                  // 8 * total_bytes / weights (0 if none): every
                                               // byte of the container counts, as in
                                               // `deltactl inspect`
  int64_t created_unix = 0;                    // commit time, unix seconds
  std::vector<SideFileEntry> side_files;       // in the order committed
  // XXH3-64 (seed 0) of the whole container as committed (header, records, trailer;
  // the value StreamDelta reports): the identity of this version of the task, which
  // clients compare across the streams and resumes of one pull (created_unix has whole
  // seconds, and same-size containers are common). Set by every CommitTask; nullopt for
  // a task committed before it was recorded (meta versions 1 and 2).
  std::optional<uint64_t> container_xxh3_64;

  // Index of the tensor named `name`, or nullopt.
  std::optional<size_t> FindTensor(std::string_view name) const;
  // Bytes the task occupies in its tenant's quota: container plus side files.
  uint64_t StoredBytes() const { return total_bytes + SideFileBytes(side_files); }
};

struct TenantUsage {
  uint64_t bytes = 0;  // sum of TaskInfo::StoredBytes() over the tenant's tasks
  uint64_t tasks = 0;
};

// What a successful CommitTask did.
enum class CommitOutcome {
  kCreated,    // a new task
  kReplaced,   // an existing task overwritten
  kUnchanged,  // the identical container was stored already: nothing written
};

// Free space of the database's filesystem, as the commit rule sees it.
struct DiskSpace {
  uint64_t free_bytes = 0;     // available to the process (statvfs f_bavail)
  uint64_t reserve_bytes = 0;  // StoreOptions::min_free_bytes
  // True when no commit can pass (free_bytes < reserve_bytes) or the store was opened
  // read-only.
  bool writes_blocked = false;
};

// Memory RocksDB holds for the store now, in bytes (RocksDB's own estimates).
struct StoreMemory {
  // Both block caches (StoreOptions::block_cache_bytes + record_cache_bytes at most,
  // unless pinned blocks exceed them): table blocks kept for later reads, and blocks
  // pinned by live StoredRecords.
  uint64_t block_cache_bytes = 0;
  // Of which pinned (in use by a reader now; freed with the last reader of a block that
  // does not fit the cache).
  uint64_t block_cache_pinned_bytes = 0;
  // Freed record block mappings kept for the next reads (internal/block_memory.h; at
  // most 32 MiB), outside the block cache's count.
  uint64_t block_memory_kept_bytes = 0;
  // Memtables of both column families (StoreOptions::write_buffer_bytes each at most,
  // plus those being flushed).
  uint64_t memtable_bytes = 0;
  // Index and filter blocks of the open table files (held by their readers, outside
  // the block cache).
  uint64_t table_readers_bytes = 0;
};

struct CommitOptions {
  // Replace an existing task of the same name (atomically). false: AlreadyExists.
  bool overwrite = false;
  // The tenant's storage quota in bytes (usage after the commit, counting the replaced
  // task as freed, must stay <= quota). 0: unlimited. Default: 0.
  uint64_t quota_bytes = 0;
  // Recorded creation time, unix seconds. 0: now. Default: 0.
  int64_t created_unix = 0;
  // Side files stored with the task (storage/side_files.h: names, limits), replacing
  // those of a task it overwrites. Not owned: the data must outlive the call.
  // Default: none.
  absl::Span<const SideFile> side_files;
};

// One stored tensor record, checksum verified. Holds its bytes; record() views them.
// Move-only (moves keep record() valid).
//
// The bytes are not copied out of RocksDB: when the table block holding the record is in
// the block cache, the record pins it (a cache handle, released with the record) and
// bytes() points into it. A record's value is one block of its own size (17.5 MB for
// the 151936 x 896 embedding of a 0.5B model at ~1 bit per weight); its copy into a new
// string cost a second buffer of fresh pages plus the memcpy: that read, the first thing
// a cold stream of the stream_bench task waits for, took 49-64 ms with the copy and
// 28-30 ms without (a Get of it timed in a fresh process, 2-core VM, 3 reads each).
// Otherwise (a value from the memtable, or one the cache refused) RocksDB copies it
// into the record, as before.
class StoredRecord {
 public:
  StoredRecord(StoredRecord&&) noexcept;
  StoredRecord& operator=(StoredRecord&&) noexcept;
  ~StoredRecord();

  // The serialized record, exactly as in the original container.
  absl::Span<const uint8_t> bytes() const;
  // The parsed record (views bytes()).
  const codec::TensorRecord& record() const { return record_; }

 private:
  friend class TaskReader;
  StoredRecord();
  std::unique_ptr<rocksdb::PinnableSlice> bytes_;  // a stable address: record_ views it
  codec::TensorRecord record_;
};

// A consistent read-only view of one task, pinned to a RocksDB snapshot: a concurrent
// overwrite or delete of the task does not affect it. Thread-safe. Cheap to keep open
// while streaming, but it holds the snapshot (old versions are not compacted away).
// REQUIRES: destroyed before the DeltaStore that opened it.
class TaskReader {
 public:
  ~TaskReader();
  TaskReader(const TaskReader&) = delete;
  TaskReader& operator=(const TaskReader&) = delete;

  const TaskInfo& info() const { return info_; }
  size_t num_records() const { return info_.tensors.size(); }

  // Record `index`, checksum verified, its base_name set from the header's tie map
  // (codec::kBaseAliasKey). OutOfRange if index >= num_records(). DataLoss
  // naming tenant, task, tensor and index if the stored value is missing, has the wrong
  // size, fails its checksum or names another tensor.
  absl::StatusOr<StoredRecord> ReadRecord(size_t index) const;
  // Same for the tensor named `name`; NotFound if the task has no such tensor.
  absl::StatusOr<StoredRecord> ReadRecordByName(std::string_view name) const;
  // The bytes of side file `name`, size and XXH3-64 verified against the meta. NotFound
  // if the task has no such side file; DataLoss naming tenant, task and file if the
  // stored value is missing, of the wrong size or fails its checksum.
  absl::StatusOr<std::string> ReadSideFile(std::string_view name) const;
  // The container's header bytes. DataLoss if missing or of the wrong size.
  absl::StatusOr<std::vector<uint8_t>> HeaderBytes() const;
  // The whole container, byte-identical to the committed one (codec::AssembleContainer),
  // every record verified. Holds the whole container in memory.
  absl::StatusOr<std::vector<uint8_t>> AssembleContainer() const;
  // The same bytes without holding them together: calls `fn` with the header bytes,
  // each record (checksum verified) in order, then the trailer; their concatenation is
  // AssembleContainer(). Stops at, and returns, the first error of a read or of `fn`.
  // Memory: one record at a time. The span passed to `fn` is valid during the call only.
  absl::Status ForEachContainerPiece(
      const std::function<absl::Status(absl::Span<const uint8_t>)>& fn) const;

 private:
  friend class DeltaStore;
  TaskReader(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* records_cf,
             const rocksdb::Snapshot* snapshot, TaskInfo info)
      : db_(db), records_cf_(records_cf), snapshot_(snapshot), info_(std::move(info)) {}
  absl::Status WrapError(const absl::Status& s, size_t index) const;

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* records_cf_;
  const rocksdb::Snapshot* snapshot_;
  TaskInfo info_;
  std::map<std::string, std::string> base_alias_;  // codec::ParseBaseAlias(info_.metadata)
};

// The records of one commit, written to a staged table file while they arrive (e.g.
// during an upload, DeltaStore::StageRecords), so that CommitTask has only the header,
// side files and meta left to write when the container is complete. Each record is
// parsed and its checksum verified as it is added. Destroying it without a commit that
// used it removes the staged file. Not thread-safe: one call at a time (successive calls
// may come from different threads).
// REQUIRES: destroyed before the DeltaStore that made it.
class StagedRecords {
 public:
  ~StagedRecords();
  StagedRecords(const StagedRecords&) = delete;
  StagedRecords& operator=(const StagedRecords&) = delete;

  // Adds the serialized record of index records() (codec/FORMAT.md, as in the
  // container); `record` is copied. DataLoss if it fails its checksum, InvalidArgument
  // if it cannot be parsed, Unavailable-style errors if the file cannot be written.
  // After an error the object only refuses (CommitTask then refuses it too).
  absl::Status Add(absl::Span<const uint8_t> record);
  size_t records() const { return entries_.size(); }

 private:
  friend class DeltaStore;
  StagedRecords(std::string tenant, std::string task, std::unique_ptr<TableFile> file);

  std::string tenant_, task_;
  std::unique_ptr<TableFile> file_;
  std::vector<TensorEntry> entries_;  // what the added records are
  absl::Status status_;               // the first error of Add
};

class DeltaStore {
 public:
  // Opens (or creates) the database at options.path. InvalidArgument for bad options;
  // FailedPrecondition if the database is locked by another process; Unavailable if it
  // cannot be read. With less than options.min_free_bytes free it opens read-only
  // (read_only(); replaying the write-ahead log without writing) rather than fail.
  static absl::StatusOr<std::unique_ptr<DeltaStore>> Open(const StoreOptions& options);
  // Closes the database (flushes nothing beyond what RocksDB does on close; committed
  // tasks are durable in the write-ahead log).
  ~DeltaStore();
  DeltaStore(const DeltaStore&) = delete;
  DeltaStore& operator=(const DeltaStore&) = delete;

  // Commits `container` (every record checksum verified first) as task `task` of
  // `tenant`, in ONE atomic RocksDB write (a WriteBatch, or for a commit of at least
  // StoreOptions::ingest_min_bytes one ingestion of table files): until it is written the
  // task does not exist (or is the old one), afterwards all of it exists. Returns the stored TaskInfo and, in
  // `*outcome` if given, what happened. Re-committing the byte-identical container
  // (a retry after an unclear failure) writes nothing and returns the stored task with
  // kUnchanged, with or without overwrite (identical means the same container bytes and
  // the same side files). The side files of CommitOptions are written in the same batch.
  // InvalidArgument: bad names, two tensors with the same name, bad record fields, bad
  // side file names (ValidateSideFiles; ResourceExhausted above its limits).
  // DataLoss: a record fails its checksum. AlreadyExists / ResourceExhausted: see
  // CommitOptions; ResourceExhausted "disk full" (StoreOptions::min_free_bytes) or
  // "read-only"; nothing is stored then. A failed write triggers RocksDB's Resume()
  // (recovery from a transient I/O error) and is retried once if that succeeds.
  // Memory: a batch holds a copy of the container until written; an ingested commit
  // holds one table block (one record) at a time.
  //
  // `staged` (optional, from StageRecords(tenant, task)): the container's records, added
  // already; the commit then is an ingestion whatever its size and writes only the rest.
  // InvalidArgument if it holds other records than the container (count or sizes) or
  // failed; it is used up either way (destroy it after the call).
  absl::StatusOr<TaskInfo> CommitTask(std::string_view tenant, std::string_view task,
                                      const codec::ContainerReader& container,
                                      const CommitOptions& options = {},
                                      CommitOutcome* outcome = nullptr,
                                      StagedRecords* staged = nullptr);
  // Starts staging the records of a coming CommitTask of (tenant, task) (StagedRecords).
  // Worth it for large containers (StoreOptions::ingest_min_bytes): their records are
  // then written while the rest still arrives. InvalidArgument for bad names;
  // ResourceExhausted if the store is read-only; Unavailable-style I/O errors.
  absl::StatusOr<std::unique_ptr<StagedRecords>> StageRecords(std::string_view tenant,
                                                              std::string_view task);
  // The options the store was opened with (e.g. ingest_min_bytes, to decide whether
  // to StageRecords).
  const StoreOptions& options() const { return options_; }
  // Would a commit of `total_bytes` (container plus side files, TaskInfo::StoredBytes)
  // as (tenant, task) pass? The same checks
  // as CommitTask (existence vs overwrite, quota, disk space), all on one consistent
  // view (serialized with the tenant's commits), so that concurrent commits never make
  // it refuse one that fits. An existing task of the same size without overwrite passes
  // (it may be an identical re-push; CommitTask decides). Errors as CommitTask's.
  absl::Status CheckCommit(std::string_view tenant, std::string_view task,
                           uint64_t total_bytes, const CommitOptions& options) const;

  // The task's meta. NotFound if absent.
  absl::StatusOr<TaskInfo> GetTask(std::string_view tenant, std::string_view task) const;
  // All tasks of `tenant`, sorted by task name (empty for an unknown tenant).
  absl::StatusOr<std::vector<TaskInfo>> ListTasks(std::string_view tenant) const;
  // Tenants that have at least one task, sorted.
  absl::StatusOr<std::vector<std::string>> ListTenants() const;
  // Deletes the task with its side files atomically (one WriteBatch) and frees its
  // bytes from the tenant's usage. NotFound if absent.
  absl::Status DeleteTask(std::string_view tenant, std::string_view task);
  // Usage of `tenant` (zeros for an unknown tenant).
  absl::StatusOr<TenantUsage> GetTenantUsage(std::string_view tenant) const;

  // A snapshot view of the task for reading its records. NotFound if absent.
  absl::StatusOr<std::unique_ptr<TaskReader>> OpenTask(std::string_view tenant,
                                                       std::string_view task) const;
  // Shortcuts that open a TaskReader for one read.
  absl::StatusOr<StoredRecord> ReadRecord(std::string_view tenant, std::string_view task,
                                          size_t index) const;
  absl::StatusOr<StoredRecord> ReadRecordByName(std::string_view tenant,
                                                std::string_view task,
                                                std::string_view tensor) const;
  absl::StatusOr<std::vector<uint8_t>> ReadHeaderBytes(std::string_view tenant,
                                                       std::string_view task) const;
  absl::StatusOr<std::vector<uint8_t>> AssembleContainer(std::string_view tenant,
                                                         std::string_view task) const;
  absl::StatusOr<std::string> ReadSideFile(std::string_view tenant, std::string_view task,
                                           std::string_view name) const;

  // Flushes memtables to SST/blob files. Optional.
  absl::Status Flush();
  // Free space and whether writes are blocked (see StoreOptions::min_free_bytes).
  // Unavailable if statvfs fails.
  absl::StatusOr<DiskSpace> GetDiskSpace() const;
  // True if Open found less than min_free_bytes free and opened the database
  // read-only: commits and deletes are ResourceExhausted until a restart with space.
  bool read_only() const;
  // What RocksDB holds in memory for this store now (StoreMemory). Thread-safe.
  StoreMemory MemoryUsage() const;
  // Online backup: a consistent copy of the whole database in the new directory `dir`
  // (RocksDB Checkpoint: files hard-linked when `dir` is on the same filesystem, copied
  // otherwise), openable with StoreOptions{.path = dir}. Concurrent commits are either
  // wholly in it or not at all. InvalidArgument if `dir` exists; Unavailable-style I/O
  // errors if it cannot be written.
  absl::Status CreateCheckpoint(const std::string& dir);

 private:
  struct Handles;
  explicit DeltaStore(std::unique_ptr<Handles> handles, const StoreOptions& options);
  // Meta of (tenant, task) at `snapshot` (nullptr: latest). NotFound if absent.
  absl::StatusOr<TaskInfo> ReadMeta(std::string_view tenant, std::string_view task,
                                    const rocksdb::Snapshot* snapshot) const;
  absl::StatusOr<TenantUsage> ReadUsage(std::string_view tenant) const;
  // CheckCommit's checks; REQUIRES: the tenant's mutex held. Returns the task being
  // replaced (nullopt: none) and the usage after the commit.
  struct Admission {
    std::optional<TaskInfo> old;
    TenantUsage next;
  };
  absl::StatusOr<Admission> AdmitLocked(std::string_view tenant, std::string_view task,
                                        uint64_t total_bytes, const CommitOptions& options,
                                        const std::string& what) const;
  // True if the stored task `old` holds exactly `container`'s bytes.
  absl::StatusOr<bool> SameContainer(const TaskInfo& old,
                                     const codec::ContainerReader& container,
                                     uint64_t total_bytes) const;
  // Writes `batch` (sync per options) if `footprint` more disk bytes leave `reserve`
  // free (else ResourceExhausted "disk full"); on a failed write asks RocksDB to
  // Resume() and retries once if it did.
  absl::Status WriteBatch(rocksdb::WriteBatch* batch, uint64_t footprint, uint64_t reserve,
                          const std::string& what);
  // Applies `writes` atomically: ingested as table files if `ingest`
  // (StoreOptions::ingest_min_bytes), else as one WriteBatch (WriteBatch above, needing
  // `footprint` free). An ingestion needs only IngestFootprint(writes) free: it writes
  // no log, and a staged file is already on disk (counting it again, as 2 x the task's
  // bytes, refused commits whose staged records had already been written: new-user
  // trial, 30 MB free for a 16.8 MB task).
  // `staged`: a finished table file ingested with them (REQUIRES: ingest).
  absl::Status ApplyWrites(std::vector<KeyWrite> writes, bool ingest, uint64_t footprint,
                           uint64_t reserve, const std::string& what,
                           TableFile* staged = nullptr);

  std::unique_ptr<Handles> h_;
  StoreOptions options_;
};

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_STORE_H_
