#include "storage/store.h"

#include <xxhash.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/sst_file_manager.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/block_memory.h"
#include "storage/internal/disk_space.h"
#include "storage/internal/ingest.h"
#include "storage/internal/spare_fds.h"
#include "storage/internal/status.h"
#include "storage/internal/strings.h"
#include "storage/key_schema.h"

namespace deltaserve::storage {
namespace {

// Commits/deletes of tenants hashing to the same stripe are serialized. More stripes:
// less false sharing between tenants; 64 mutexes cost nothing.
constexpr size_t kTenantStripes = 64;

using common::Annotate;

absl::Status ValidateTaskNames(std::string_view tenant, std::string_view task) {
  DS_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  return ValidateName("task", task);
}

rocksdb::Slice AsSlice(absl::Span<const uint8_t> bytes) {
  return rocksdb::Slice(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// XXH3-64 of the container's bytes in file order (TaskInfo::container_xxh3_64). At
// memory speed: a few ms for the largest containers, next to their write.
uint64_t ContainerXxh3(const codec::ContainerReader& container) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  XXH3_64bits_reset(state.get());
  auto add = [&](absl::Span<const uint8_t> piece) {
    XXH3_64bits_update(state.get(), piece.data(), piece.size());
  };
  add(container.header_bytes());
  for (size_t i = 0; i < container.num_records(); ++i) add(container.record_bytes(i));
  add(container.trailer_bytes());
  return XXH3_64bits_digest(state.get());
}

}  // namespace

absl::Status StoreOptions::Validate() const {
  if (path.empty()) return absl::InvalidArgumentError("StoreOptions.path is empty");
  if (block_cache_bytes < (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("StoreOptions.block_cache_bytes must be >= 1 MiB, got ", block_cache_bytes));
  }
  if (record_cache_bytes < (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StoreOptions.record_cache_bytes must be >= 1 MiB, got ", record_cache_bytes));
  }
  if (write_buffer_bytes < (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StoreOptions.write_buffer_bytes must be >= 1 MiB, got ", write_buffer_bytes));
  }
  if (max_open_files != -1 && max_open_files < 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StoreOptions.max_open_files must be -1 or >= 16, got ", max_open_files));
  }
  if (max_background_jobs < 1 || max_background_jobs > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StoreOptions.max_background_jobs must be in [1, 64], got ", max_background_jobs));
  }
  return absl::OkStatus();
}

std::optional<size_t> TaskInfo::FindTensor(std::string_view name) const {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].name == name) return i;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// DeltaStore

struct DeltaStore::Handles {
  rocksdb::DB* db = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;     // "default"
  rocksdb::ColumnFamilyHandle* records_cf = nullptr;  // "records"
  // Serializes the read-check-write of a tenant's task meta and usage in CommitTask and
  // DeleteTask (the guarded state lives in RocksDB, so there is no field to annotate).
  std::array<absl::Mutex, kTenantStripes> tenant_mu;
  // Opened with OpenForReadOnly (too little free space at Open).
  bool read_only = false;
  // The database's Env over a file system with spare descriptors
  // (internal/spare_fds.h); outlives `db` (closed in the destructor's body).
  std::unique_ptr<rocksdb::Env> env;
  // Both column families with their options, for table files written to be ingested
  // (internal/ingest.h), and the number of the next staged file.
  std::vector<IngestFamily> families;
  std::atomic<uint64_t> next_ingest_file{0};
  // The records' block cache's allocator (also owned by that cache).
  std::shared_ptr<BlockMemory> block_memory;

  absl::Mutex& MutexFor(std::string_view tenant) {
    return tenant_mu[std::hash<std::string_view>()(tenant) % kTenantStripes];
  }

  ~Handles() {
    if (db == nullptr) return;
    if (meta_cf != nullptr) db->DestroyColumnFamilyHandle(meta_cf);
    if (records_cf != nullptr) db->DestroyColumnFamilyHandle(records_cf);
    db->Close().PermitUncheckedError();
    delete db;
  }
};

DeltaStore::DeltaStore(std::unique_ptr<Handles> handles, const StoreOptions& options)
    : h_(std::move(handles)), options_(options) {}

DeltaStore::~DeltaStore() = default;

absl::StatusOr<std::unique_ptr<DeltaStore>> DeltaStore::Open(const StoreOptions& options) {
  DS_RETURN_IF_ERROR(options.Validate());

  auto handles = std::make_unique<Handles>();
  handles->env = rocksdb::NewCompositeEnv(
      NewSpareFdFileSystem(rocksdb::FileSystem::Default(), kStoreSpareFileDescriptors));
  rocksdb::DBOptions db_options;
  db_options.env = handles->env.get();
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  db_options.max_background_jobs = options.max_background_jobs;
  db_options.max_open_files = options.max_open_files;
  // Both column families flush together: otherwise the small meta family, whose
  // memtable rarely fills, keeps every write-ahead log file alive (measured: 780 MB of
  // WAL for 744 MB of data after 1000 pushes, and 1.8 s of replay at restart).
  db_options.atomic_flush = true;
  // Tracks SST sizes and lets RocksDB recover by itself from a NoSpace error once space
  // is freed (its error handler polls free space only when an SstFileManager is set).
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(handles->env.get()));

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // XXH3 block checksums: verified on every read at memory speed.
  table.checksum = rocksdb::kXXH3;
  auto table_factory =
      std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::ColumnFamilyOptions meta_options;
  // A memtable flush must fit in the free-space reserve with room to spare.
  meta_options.write_buffer_size = std::min<uint64_t>(
      options.write_buffer_bytes, std::max<uint64_t>(options.min_free_bytes / 8, 1 << 20));
  meta_options.table_factory = table_factory;
  // Compactions run in the free-space reserve: size the levels from it so that the
  // largest compaction (L0, at most 4 memtables, into L1) fits. With the default reserve
  // these are RocksDB's defaults (L1 256 MiB, files of 64 MiB).
  const uint64_t level_base = std::max<uint64_t>(options.min_free_bytes / 4, 1 << 20);
  meta_options.max_bytes_for_level_base = level_base;
  meta_options.max_compaction_bytes = level_base;
  meta_options.target_file_size_base = std::min<uint64_t>(64 << 20, level_base / 4);

  rocksdb::ColumnFamilyOptions records_options = meta_options;
  // Records are compressed deltas already: compressing them again costs CPU for nothing.
  records_options.compression = rocksdb::kNoCompression;
  // A block cache of their own (StoreOptions::record_cache_bytes) whose blocks are
  // mappings populated at once and reused (internal/block_memory.h); same table format.
  handles->block_memory = std::make_shared<BlockMemory>(kKeptBlockBytes);
  rocksdb::LRUCacheOptions records_cache;
  records_cache.capacity = options.record_cache_bytes;
  records_cache.memory_allocator = handles->block_memory;
  rocksdb::BlockBasedTableOptions records_table = table;
  records_table.block_cache = rocksdb::NewLRUCache(records_cache);
  records_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(records_table));
  if (options.use_blob_files) {
    records_options.enable_blob_files = true;
    records_options.min_blob_size = options.min_blob_bytes;
    records_options.blob_compression_type = rocksdb::kNoCompression;
    records_options.enable_blob_garbage_collection = true;
  }

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {kDefaultColumnFamily, meta_options}, {kRecordsColumnFamily, records_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  // With too little free space, opening read-write would write (WAL replay flush, a new
  // MANIFEST) into a full disk; open read-only instead, so that reads still work.
  std::filesystem::path existing = options.path;
  std::error_code ec;
  while (!existing.empty() && !std::filesystem::exists(existing, ec)) {
    existing = existing.parent_path();
  }
  absl::StatusOr<uint64_t> free_bytes = FreeBytes(existing.empty() ? "." : existing.string());
  const bool db_exists = std::filesystem::exists(options.path + "/CURRENT", ec);
  if (free_bytes.ok() && *free_bytes < options.min_free_bytes) {
    if (!db_exists) {
      return CheckRoom(options.path, *free_bytes, 0, options.min_free_bytes,
                       "creating the store");
    }
    handles->read_only = true;
  }
  rocksdb::Status s =
      handles->read_only
          ? rocksdb::DB::OpenForReadOnly(db_options, options.path, descriptors, &cfs,
                                         &handles->db)
          : rocksdb::DB::Open(db_options, options.path, descriptors, &cfs, &handles->db);
  if (s.IsIOError() && absl::StrContains(s.ToString(), "lock")) {
    // RocksDB says "While lock file: DIR/LOCK: Resource temporarily unavailable".
    return absl::FailedPreconditionError(
        absl::StrCat("database ", options.path,
                     " is in use by another process (another deltaserved?): ", s.ToString()));
  }
  DS_RETURN_IF_ERROR(FromRocksStatus(s, absl::StrCat("opening store ", options.path)));
  handles->meta_cf = cfs[0];
  handles->records_cf = cfs[1];
  handles->families = {{handles->meta_cf, rocksdb::Options(db_options, meta_options)},
                       {handles->records_cf, rocksdb::Options(db_options, records_options)}};
  if (!handles->read_only) DS_RETURN_IF_ERROR(ClearStagingDir(options.path));
  return std::unique_ptr<DeltaStore>(new DeltaStore(std::move(handles), options));
}

absl::StatusOr<TaskInfo> DeltaStore::ReadMeta(std::string_view tenant, std::string_view task,
                                              const rocksdb::Snapshot* snapshot) const {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  rocksdb::PinnableSlice value;
  rocksdb::Status s = h_->db->Get(ro, h_->meta_cf, TaskMetaKey(tenant, task), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat(TaskName(tenant, task), " not found"));
  }
  DS_RETURN_IF_ERROR(FromRocksStatus(s, absl::StrCat("reading ", TaskName(tenant, task))));
  return DecodeTaskMeta(value.ToStringView(), tenant, task);
}

absl::StatusOr<TenantUsage> DeltaStore::ReadUsage(std::string_view tenant) const {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = h_->db->Get(rocksdb::ReadOptions(), h_->meta_cf, UsageKey(tenant), &value);
  if (s.IsNotFound()) return TenantUsage{};
  DS_RETURN_IF_ERROR(FromRocksStatus(s, absl::StrCat("reading usage of tenant ", Quoted(tenant))));
  return DecodeUsage(value.ToStringView(), tenant);
}

absl::StatusOr<TaskInfo> DeltaStore::CommitTask(std::string_view tenant, std::string_view task,
                                                const codec::ContainerReader& container,
                                                const CommitOptions& options,
                                                CommitOutcome* outcome,
                                                StagedRecords* staged) {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  const std::string what = absl::StrCat("committing ", TaskName(tenant, task));
  TaskInfo info;
  info.tenant = std::string(tenant);
  info.task = std::string(task);
  info.base_hash = container.header().base_hash;
  info.metadata = container.header().metadata;
  info.header_bytes = container.header_bytes().size();
  info.total_bytes = container.header_bytes().size() + container.trailer_bytes().size();
  info.created_unix =
      options.created_unix != 0 ? options.created_unix : absl::ToUnixSeconds(absl::Now());
  info.container_xxh3_64 = ContainerXxh3(container);
  if (staged != nullptr) {
    DS_RETURN_IF_ERROR(staged->status_);
    bool same = staged->tenant_ == tenant && staged->task_ == task &&
                staged->records() == container.num_records();
    for (size_t i = 0; same && i < container.num_records(); ++i) {
      same = staged->entries_[i].record_bytes == container.record_bytes(i).size();
    }
    if (!same) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": the staged records are not the container's"));
    }
  }
  std::set<std::string, std::less<>> names;
  for (size_t i = 0; i < container.num_records(); ++i) {
    TensorEntry entry;
    if (staged != nullptr) {
      entry = staged->entries_[i];  // parsed and verified when staged
    } else {
      absl::StatusOr<TensorEntry> parsed = RecordEntry(container.record_bytes(i));
      if (!parsed.ok()) return Annotate(parsed.status(), absl::StrCat(what, " record ", i));
      entry = *std::move(parsed);
    }
    absl::StatusOr<int64_t> n = codec::CheckedNumElements(entry.shape);
    if (!n.ok()) return Annotate(n.status(), absl::StrCat(what, " tensor ", Quoted(entry.name)));
    if (!names.insert(entry.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": tensor ", Quoted(entry.name), " appears twice"));
    }
    info.weights += static_cast<uint64_t>(*n);
    info.total_bytes += entry.record_bytes;
    info.tensors.push_back(std::move(entry));
  }
  info.side_files = DescribeSideFiles(options.side_files);
  if (absl::Status s = ValidateSideFiles(info.side_files); !s.ok()) return Annotate(s, what);
  const std::string meta_value = EncodeTaskMeta(info);
  // What GetTask will return (bits_per_weight is derived in one place: the decoder).
  DS_ASSIGN_OR_RETURN(TaskInfo stored, DecodeTaskMeta(meta_value, tenant, task));

  absl::MutexLock lock(&h_->MutexFor(tenant));
  absl::StatusOr<TaskInfo> existing = ReadMeta(tenant, task, nullptr);
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  if (existing.ok()) {
    // A retry of a commit that did happen (the client saw an unclear failure).
    bool same = existing->side_files == info.side_files;
    if (same) {
      DS_ASSIGN_OR_RETURN(same, SameContainer(*existing, container, info.total_bytes));
    }
    if (same) {
      if (outcome != nullptr) *outcome = CommitOutcome::kUnchanged;
      return *existing;
    }
  }
  DS_ASSIGN_OR_RETURN(Admission admission,
                      AdmitLocked(tenant, task, info.StoredBytes(), options, what));
  if (admission.old && !options.overwrite) {
    return absl::AlreadyExistsError(absl::StrCat(
        TaskName(tenant, task),
        " already exists with other contents (overwrite not set)"));
  }
  const std::optional<TaskInfo>& old = admission.old;

  std::vector<KeyWrite> writes;
  writes.reserve(container.num_records() + options.side_files.size() + 4 +
                 (old ? old->tensors.size() + old->side_files.size() : 0));
  auto put = [&](rocksdb::ColumnFamilyHandle* cf, std::string key, rocksdb::Slice value) {
    writes.push_back(KeyWrite{cf, std::move(key), value});
  };
  std::set<std::string, std::less<>> new_side_names;
  for (const SideFile& f : options.side_files) new_side_names.insert(f.name);
  // Deletes of the replaced task's records beyond the new count: after the new records
  // (keys in index order), in the staged file if there is one (ingested files of one
  // family must not overlap).
  std::vector<KeyWrite> stale_records;
  if (old) {
    for (size_t i = info.tensors.size(); i < old->tensors.size(); ++i) {
      stale_records.push_back(KeyWrite{h_->records_cf, RecordKey(tenant, task, i), std::nullopt});
    }
    // A key is written at most once (table files hold one entry per key): a side file
    // the new task puts again needs no delete.
    for (const SideFileEntry& f : old->side_files) {
      if (new_side_names.contains(f.name)) continue;
      writes.push_back(
          KeyWrite{h_->records_cf, SideFileKey(tenant, task, f.name), std::nullopt});
    }
  }
  put(h_->records_cf, HeaderKey(tenant, task), AsSlice(container.header_bytes()));
  for (const SideFile& f : options.side_files) {
    put(h_->records_cf, SideFileKey(tenant, task, f.name),
        rocksdb::Slice(f.data.data(), f.data.size()));
  }
  if (staged != nullptr) {
    for (const KeyWrite& w : stale_records) DS_RETURN_IF_ERROR(staged->file_->Add(w));
    DS_RETURN_IF_ERROR(staged->file_->Finish());
  } else {
    for (size_t i = 0; i < container.num_records(); ++i) {
      put(h_->records_cf, RecordKey(tenant, task, i), AsSlice(container.record_bytes(i)));
    }
    for (KeyWrite& w : stale_records) writes.push_back(std::move(w));
  }
  const std::string usage_value = EncodeUsage(admission.next);
  put(h_->meta_cf, TaskMetaKey(tenant, task), meta_value);
  put(h_->meta_cf, UsageKey(tenant), usage_value);
  DS_RETURN_IF_ERROR(ApplyWrites(
      std::move(writes), staged != nullptr || info.StoredBytes() >= options_.ingest_min_bytes,
      CommitFootprint(info.StoredBytes()), options_.min_free_bytes, what,
      staged != nullptr ? staged->file_.get() : nullptr));
  if (outcome != nullptr) *outcome = old ? CommitOutcome::kReplaced : CommitOutcome::kCreated;
  return stored;
}

absl::Status DeltaStore::CheckCommit(std::string_view tenant, std::string_view task,
                                     uint64_t total_bytes, const CommitOptions& options) const {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  const std::string what = absl::StrCat("committing ", TaskName(tenant, task));
  absl::MutexLock lock(&h_->MutexFor(tenant));
  DS_ASSIGN_OR_RETURN(Admission admission,
                      AdmitLocked(tenant, task, total_bytes, options, what));
  if (admission.old && !options.overwrite && admission.old->StoredBytes() != total_bytes) {
    return absl::AlreadyExistsError(
        absl::StrCat(TaskName(tenant, task), " already exists (overwrite not set)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeltaStore::Admission> DeltaStore::AdmitLocked(
    std::string_view tenant, std::string_view task, uint64_t total_bytes,
    const CommitOptions& options, const std::string& what) const {
  if (h_->read_only) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": the store at ", options_.path,
        " was opened read-only (disk full at start: less than StoreOptions.min_free_bytes, "
        "deltaserved --db-min-free-bytes, free); free space and restart"));
  }
  Admission a;
  absl::StatusOr<TaskInfo> old = ReadMeta(tenant, task, nullptr);
  if (!old.ok() && !absl::IsNotFound(old.status())) return old.status();
  if (old.ok()) a.old = *std::move(old);
  DS_ASSIGN_OR_RETURN(TenantUsage usage, ReadUsage(tenant));
  const uint64_t freed = a.old ? std::min(a.old->StoredBytes(), usage.bytes) : 0;
  a.next = TenantUsage{usage.bytes - freed + total_bytes, usage.tasks + (a.old ? 0 : 1)};
  if (options.quota_bytes != 0 && a.next.bytes > options.quota_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": tenant quota exceeded (", usage.bytes - freed, " bytes used + ",
        total_bytes, " bytes of this task > quota ", options.quota_bytes, " bytes)"));
  }
  DS_ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(options_.path));
  DS_RETURN_IF_ERROR(CheckRoom(options_.path, free_bytes, CommitFootprint(total_bytes),
                               options_.min_free_bytes, what));
  return a;
}

absl::StatusOr<bool> DeltaStore::SameContainer(const TaskInfo& old,
                                               const codec::ContainerReader& container,
                                               uint64_t total_bytes) const {
  if (old.total_bytes != total_bytes || old.tensors.size() != container.num_records()) {
    return false;
  }
  rocksdb::PinnableSlice value;
  const std::string what = absl::StrCat("comparing with ", TaskName(old.tenant, old.task));
  rocksdb::Status s = h_->db->Get(rocksdb::ReadOptions(), h_->records_cf,
                                  HeaderKey(old.tenant, old.task), &value);
  DS_RETURN_IF_ERROR(FromRocksStatus(s, what));
  if (value != AsSlice(container.header_bytes())) return false;
  for (size_t i = 0; i < container.num_records(); ++i) {
    value.Reset();
    s = h_->db->Get(rocksdb::ReadOptions(), h_->records_cf, RecordKey(old.tenant, old.task, i),
                    &value);
    DS_RETURN_IF_ERROR(FromRocksStatus(s, what));
    if (value != AsSlice(container.record_bytes(i))) return false;
  }
  return true;
}

absl::Status DeltaStore::WriteBatch(rocksdb::WriteBatch* batch, uint64_t footprint,
                                    uint64_t reserve, const std::string& what) {
  DS_ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(options_.path));
  DS_RETURN_IF_ERROR(CheckRoom(options_.path, free_bytes, footprint, reserve, what));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync_writes;
  rocksdb::Status s = h_->db->Write(wo, batch);
  if (!s.ok() && (s.IsIOError() || s.IsNoSpace())) {
    // A transient fault (EMFILE, EIO, ENOSPC) leaves RocksDB read-only until resumed;
    // resume now rather than refuse every later write until a restart.
    if (h_->db->Resume().ok()) s = h_->db->Write(wo, batch);
  }
  return FromRocksStatus(s, what);
}

absl::Status DeltaStore::ApplyWrites(std::vector<KeyWrite> writes, bool ingest,
                                     uint64_t footprint, uint64_t reserve,
                                     const std::string& what, TableFile* staged) {
  if (ingest) {
    DS_ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(options_.path));
    DS_RETURN_IF_ERROR(
        CheckRoom(options_.path, free_bytes, IngestFootprint(writes), reserve, what));
    // A database whose first writes are ingestions stays at sequence number 0 (RocksDB
    // gives a file that overlaps nothing sequence number 0), and a snapshot at 0 did not
    // keep an overwritten record from compaction (a reader opened before an overwrite
    // and a delete lost it: StoreTest.SnapshotReaderSurvivesOverwriteAndDelete/Ingest).
    // One logged write first moves the database past 0 for good.
    if (h_->db->GetLatestSequenceNumber() == 0) {
      rocksdb::WriteOptions wo;
      wo.sync = options_.sync_writes;
      DS_RETURN_IF_ERROR(
          FromRocksStatus(h_->db->Delete(wo, h_->meta_cf, kUsagePrefix), what));
    }
    std::vector<TableFile*> extra;
    if (staged != nullptr) extra.push_back(staged);
    return IngestWrites(h_->db, options_.path, h_->next_ingest_file.fetch_add(1),
                        h_->families, std::move(writes), what, extra);
  }
  // Sized up front: growing a batch of a 64 MB container by doubling copied it about
  // twice more (and faulted the new pages each time). Keys, varints and the meta values
  // fit in 256 bytes per write plus a page.
  size_t bytes = 4096;
  for (const KeyWrite& w : writes) bytes += 256 + (w.value ? w.value->size() : 0);
  rocksdb::WriteBatch batch(bytes);
  for (const KeyWrite& w : writes) {
    DS_RETURN_IF_ERROR(FromRocksStatus(
        w.value ? batch.Put(w.cf, w.key, *w.value) : batch.Delete(w.cf, w.key), what));
  }
  return WriteBatch(&batch, footprint, reserve, what);
}

absl::StatusOr<std::unique_ptr<StagedRecords>> DeltaStore::StageRecords(
    std::string_view tenant, std::string_view task) {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  const std::string what = absl::StrCat("staging the records of ", TaskName(tenant, task));
  if (h_->read_only) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": the store at ", options_.path, " was opened read-only"));
  }
  const std::string path = absl::StrCat(StagingDir(options_.path), "/",
                                        h_->next_ingest_file.fetch_add(1), "-staged.sst");
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TableFile> file,
                      TableFile::Create(h_->families[1], path, what));
  return std::unique_ptr<StagedRecords>(
      new StagedRecords(std::string(tenant), std::string(task), std::move(file)));
}

absl::StatusOr<TaskInfo> DeltaStore::GetTask(std::string_view tenant,
                                             std::string_view task) const {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  return ReadMeta(tenant, task, nullptr);
}

absl::StatusOr<std::vector<TaskInfo>> DeltaStore::ListTasks(std::string_view tenant) const {
  DS_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  const std::string prefix = TaskMetaPrefix(tenant);
  const std::string end = PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(h_->db->NewIterator(ro, h_->meta_cf));
  std::vector<TaskInfo> tasks;
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    DS_ASSIGN_OR_RETURN(TaskInfo info,
                        DecodeTaskMeta(it->value().ToStringView(), tenant,
                                       key.substr(prefix.size())));
    tasks.push_back(std::move(info));
  }
  DS_RETURN_IF_ERROR(
      FromRocksStatus(it->status(), absl::StrCat("listing tasks of tenant ", Quoted(tenant))));
  return tasks;
}

absl::StatusOr<std::vector<std::string>> DeltaStore::ListTenants() const {
  const std::string end = PrefixEnd(kUsagePrefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(h_->db->NewIterator(ro, h_->meta_cf));
  std::vector<std::string> tenants;
  const std::string_view prefix = kUsagePrefix;
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    std::string_view tenant = it->key().ToStringView().substr(prefix.size());
    DS_ASSIGN_OR_RETURN(TenantUsage usage, DecodeUsage(it->value().ToStringView(), tenant));
    if (usage.tasks > 0) tenants.emplace_back(tenant);
  }
  DS_RETURN_IF_ERROR(FromRocksStatus(it->status(), "listing tenants"));
  return tenants;
}

absl::Status DeltaStore::DeleteTask(std::string_view tenant, std::string_view task) {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  const std::string what = absl::StrCat("deleting ", TaskName(tenant, task));
  if (h_->read_only) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": the store at ", options_.path,
        " was opened read-only (disk full at start); free space and restart"));
  }
  absl::MutexLock lock(&h_->MutexFor(tenant));
  DS_ASSIGN_OR_RETURN(TaskInfo old, ReadMeta(tenant, task, nullptr));
  DS_ASSIGN_OR_RETURN(TenantUsage usage, ReadUsage(tenant));
  rocksdb::WriteBatch batch;
  DS_RETURN_IF_ERROR(FromRocksStatus(batch.Delete(h_->meta_cf, TaskMetaKey(tenant, task)), what));
  DS_RETURN_IF_ERROR(FromRocksStatus(batch.Delete(h_->records_cf, HeaderKey(tenant, task)), what));
  for (size_t i = 0; i < old.tensors.size(); ++i) {
    DS_RETURN_IF_ERROR(
        FromRocksStatus(batch.Delete(h_->records_cf, RecordKey(tenant, task, i)), what));
  }
  for (const SideFileEntry& f : old.side_files) {
    DS_RETURN_IF_ERROR(
        FromRocksStatus(batch.Delete(h_->records_cf, SideFileKey(tenant, task, f.name)), what));
  }
  TenantUsage next{usage.bytes - std::min(usage.bytes, old.StoredBytes()),
                   usage.tasks > 0 ? usage.tasks - 1 : 0};
  if (next.tasks == 0) {
    DS_RETURN_IF_ERROR(FromRocksStatus(batch.Delete(h_->meta_cf, UsageKey(tenant)), what));
  } else {
    DS_RETURN_IF_ERROR(
        FromRocksStatus(batch.Put(h_->meta_cf, UsageKey(tenant), EncodeUsage(next)), what));
  }
  // Deletes are how a full store gets space back: they may dig into the reserve (to a
  // tenth of it), which the compaction below then runs in.
  DS_RETURN_IF_ERROR(WriteBatch(&batch, 0, options_.min_free_bytes / 10, what));
  // Give the task's bytes back to the filesystem now rather than at some later
  // compaction (a store that hit the free-space floor recovers by deletes). Best effort.
  const std::string begin = RecordKey(tenant, task, 0);
  const std::string end = RecordKey(tenant, task, old.tensors.size());
  rocksdb::Slice b(begin), e(end);
  rocksdb::CompactRangeOptions cro;
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
  h_->db->CompactRange(cro, h_->records_cf, &b, &e).PermitUncheckedError();
  if (!old.side_files.empty()) {
    const std::string side_begin = SideFileKey(tenant, task, "");  // the task's prefix
    const std::string side_end = PrefixEnd(side_begin);
    rocksdb::Slice sb(side_begin), se(side_end);
    h_->db->CompactRange(cro, h_->records_cf, &sb, &se).PermitUncheckedError();
  }
  return absl::OkStatus();
}

absl::StatusOr<TenantUsage> DeltaStore::GetTenantUsage(std::string_view tenant) const {
  DS_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  return ReadUsage(tenant);
}

absl::StatusOr<std::unique_ptr<TaskReader>> DeltaStore::OpenTask(std::string_view tenant,
                                                                 std::string_view task) const {
  DS_RETURN_IF_ERROR(ValidateTaskNames(tenant, task));
  const rocksdb::Snapshot* snapshot = h_->db->GetSnapshot();
  absl::StatusOr<TaskInfo> info = ReadMeta(tenant, task, snapshot);
  if (!info.ok()) {
    h_->db->ReleaseSnapshot(snapshot);
    return info.status();
  }
  absl::StatusOr<std::map<std::string, std::string>> alias = codec::ParseBaseAlias(info->metadata);
  if (!alias.ok()) {
    h_->db->ReleaseSnapshot(snapshot);
    return absl::DataLossError(
        absl::StrCat(TaskName(tenant, task), ": stored ", alias.status().message()));
  }
  auto reader = std::unique_ptr<TaskReader>(
      new TaskReader(h_->db, h_->records_cf, snapshot, *std::move(info)));
  reader->base_alias_ = *std::move(alias);
  return reader;
}

absl::StatusOr<StoredRecord> DeltaStore::ReadRecord(std::string_view tenant,
                                                    std::string_view task, size_t index) const {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TaskReader> reader, OpenTask(tenant, task));
  return reader->ReadRecord(index);
}

absl::StatusOr<StoredRecord> DeltaStore::ReadRecordByName(std::string_view tenant,
                                                          std::string_view task,
                                                          std::string_view tensor) const {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TaskReader> reader, OpenTask(tenant, task));
  return reader->ReadRecordByName(tensor);
}

absl::StatusOr<std::vector<uint8_t>> DeltaStore::ReadHeaderBytes(std::string_view tenant,
                                                                 std::string_view task) const {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TaskReader> reader, OpenTask(tenant, task));
  return reader->HeaderBytes();
}

absl::StatusOr<std::vector<uint8_t>> DeltaStore::AssembleContainer(std::string_view tenant,
                                                                   std::string_view task) const {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TaskReader> reader, OpenTask(tenant, task));
  return reader->AssembleContainer();
}

absl::StatusOr<std::string> DeltaStore::ReadSideFile(std::string_view tenant,
                                                     std::string_view task,
                                                     std::string_view name) const {
  DS_ASSIGN_OR_RETURN(std::unique_ptr<TaskReader> reader, OpenTask(tenant, task));
  return reader->ReadSideFile(name);
}

absl::Status DeltaStore::Flush() {
  rocksdb::FlushOptions fo;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs = {h_->meta_cf, h_->records_cf};
  return FromRocksStatus(h_->db->Flush(fo, cfs), "flushing store");
}

absl::StatusOr<DiskSpace> DeltaStore::GetDiskSpace() const {
  DiskSpace d;
  DS_ASSIGN_OR_RETURN(d.free_bytes, FreeBytes(options_.path));
  d.reserve_bytes = options_.min_free_bytes;
  d.writes_blocked = h_->read_only || d.free_bytes < d.reserve_bytes;
  return d;
}

bool DeltaStore::read_only() const { return h_->read_only; }

StoreMemory DeltaStore::MemoryUsage() const {
  StoreMemory m;
  // Each column family has a block cache of its own.
  for (rocksdb::ColumnFamilyHandle* cf : {h_->meta_cf, h_->records_cf}) {
    uint64_t usage = 0, pinned = 0;
    h_->db->GetIntProperty(cf, rocksdb::DB::Properties::kBlockCacheUsage, &usage);
    h_->db->GetIntProperty(cf, rocksdb::DB::Properties::kBlockCachePinnedUsage, &pinned);
    m.block_cache_bytes += usage;
    m.block_cache_pinned_bytes += pinned;
  }
  m.block_memory_kept_bytes = h_->block_memory->stats().kept_bytes;
  h_->db->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables,
                                   &m.memtable_bytes);
  h_->db->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem,
                                   &m.table_readers_bytes);
  return m;
}

absl::Status DeltaStore::CreateCheckpoint(const std::string& dir) {
  const std::string what = absl::StrCat("checkpoint of ", options_.path, " into ", dir);
  rocksdb::Checkpoint* raw = nullptr;
  DS_RETURN_IF_ERROR(FromRocksStatus(rocksdb::Checkpoint::Create(h_->db, &raw), what));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocksStatus(checkpoint->CreateCheckpoint(dir), what);
}

}  // namespace deltaserve::storage
