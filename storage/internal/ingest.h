// Commits written as table files and ingested (RocksDB SstFileWriter +
// DB::IngestExternalFiles) instead of through the write-ahead log and the memtables:
// a large task's bytes are then written once, into the level where they stay, rather
// than into the log, the memtable, a flushed L0 file and every compaction after it.
//
// Atomicity: IngestExternalFiles records the files of every column family in ONE
// MANIFEST edit; until that edit is durable none of them is part of the database, after
// it all are (a crash in between leaves only unreferenced files, which RocksDB deletes
// at the next Open). Staged files live in StagingDir(db_path) until ingested (moved by
// a hard link); ClearStagingDir removes what a crash left there.
#ifndef DELTASERVE_STORAGE_INTERNAL_INGEST_H_
#define DELTASERVE_STORAGE_INTERNAL_INGEST_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "rocksdb/db.h"
#include "absl/types/span.h"
#include "rocksdb/options.h"
#include "storage/store.h"

namespace rocksdb {
class SstFileWriter;
}  // namespace rocksdb

namespace deltaserve::storage {

// One key a commit writes: a Put of `value` (not owned: must outlive the commit), or a
// Delete when `value` is nullopt.
struct KeyWrite {
  rocksdb::ColumnFamilyHandle* cf = nullptr;
  std::string key;
  std::optional<rocksdb::Slice> value;
};

// The TensorEntry of a serialized record (codec::ParseRecord: its checksum verified).
// The parse's errors (DataLoss, InvalidArgument).
absl::StatusOr<TensorEntry> RecordEntry(absl::Span<const uint8_t> record);

// Where staged table files of the database at `db_path` are written.
std::string StagingDir(const std::string& db_path);

// Removes StagingDir(db_path) with whatever a crash left in it and creates it empty.
// Unavailable-style errors if the file system refuses.
absl::Status ClearStagingDir(const std::string& db_path);

// A column family as IngestWrites needs it: its handle and the options it was opened
// with (SstFileWriter builds tables exactly as a flush of that family would).
struct IngestFamily {
  rocksdb::ColumnFamilyHandle* cf = nullptr;
  rocksdb::Options options;
};

// One table file being written for ingestion. Destroying it removes the file (once
// ingested, the name is only a spare link). Not thread-safe.
class TableFile {
 public:
  // Creates `path` for a table of `family`. Errors as FromRocksStatus, prefixed `what`.
  static absl::StatusOr<std::unique_ptr<TableFile>> Create(const IngestFamily& family,
                                                           std::string path,
                                                           const std::string& what);
  ~TableFile();
  TableFile(const TableFile&) = delete;
  TableFile& operator=(const TableFile&) = delete;

  // REQUIRES: w.cf is the family's; keys strictly ascending over the calls.
  absl::Status Add(const KeyWrite& w);
  // Completes and syncs the file. REQUIRES: at least one Add; called once.
  absl::Status Finish();

  rocksdb::ColumnFamilyHandle* cf() const { return cf_; }
  const std::string& path() const { return path_; }

 private:
  TableFile(rocksdb::ColumnFamilyHandle* cf, std::string path, std::string what,
            std::unique_ptr<rocksdb::SstFileWriter> writer);
  rocksdb::ColumnFamilyHandle* cf_;
  std::string path_, what_;
  std::unique_ptr<rocksdb::SstFileWriter> writer_;
};

// Disk bytes that ingesting `writes` takes: the table files written for them, i.e. the
// keys and values plus kTableFileOverheadBytes per file that may be written (one per
// column family). An ingestion writes no log, and a file staged earlier (`extra` below)
// is linked into the database, not copied: it needs no further space.
inline constexpr uint64_t kTableFileOverheadBytes = 64 << 10;
uint64_t IngestFootprint(const std::vector<KeyWrite>& writes);

// Applies `writes` atomically: one table file per column family that has writes (keys
// sorted here; REQUIRES: a key at most once per family, every cf among `families`),
// written and synced under StagingDir(db_path) as "<file_id>-<family>.sst", ingested
// together with the finished files `extra` (REQUIRES: no key range of one overlaps
// another file's of the same family). Readers holding an older snapshot do not see
// them. On any error nothing is applied. Errors as FromRocksStatus (internal/status.h),
// prefixed with `what`.
absl::Status IngestWrites(rocksdb::DB* db, const std::string& db_path, uint64_t file_id,
                          const std::vector<IngestFamily>& families,
                          std::vector<KeyWrite> writes, const std::string& what,
                          const std::vector<TableFile*>& extra = {});

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_INGEST_H_
