#include "storage/internal/ingest.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/sst_file_writer.h"
#include "storage/internal/status.h"

namespace deltaserve::storage {

std::string StagingDir(const std::string& db_path) { return db_path + "/ingest"; }

uint64_t IngestFootprint(const std::vector<KeyWrite>& writes) {
  uint64_t bytes = 0;
  std::vector<rocksdb::ColumnFamilyHandle*> families;
  for (const KeyWrite& w : writes) {
    bytes += w.key.size() + (w.value ? w.value->size() : 0);
    if (std::find(families.begin(), families.end(), w.cf) == families.end()) {
      families.push_back(w.cf);
    }
  }
  return bytes + kTableFileOverheadBytes * families.size();
}

absl::Status ClearStagingDir(const std::string& db_path) {
  const std::string dir = StagingDir(db_path);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!ec) std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("preparing ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

TableFile::TableFile(rocksdb::ColumnFamilyHandle* cf, std::string path, std::string what,
                     std::unique_ptr<rocksdb::SstFileWriter> writer)
    : cf_(cf), path_(std::move(path)), what_(std::move(what)), writer_(std::move(writer)) {}

TableFile::~TableFile() {
  writer_.reset();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

absl::StatusOr<std::unique_ptr<TableFile>> TableFile::Create(const IngestFamily& family,
                                                             std::string path,
                                                             const std::string& what) {
  // invalidate_page_cache = false: the task is read back soon (its first pull), from
  // the page cache rather than the disk.
  rocksdb::EnvOptions env(family.options);
  // Write-back starts as the file grows (sync_file_range every MiB, not waiting), so
  // that Finish's fsync, which a commit waits for, has only the last MiB left to write
  // rather than the whole task (tens of ms for 64 MB on this class of disk).
  env.bytes_per_sync = 1 << 20;
  auto writer = std::make_unique<rocksdb::SstFileWriter>(env, family.options, family.cf,
                                                         /*invalidate_page_cache=*/false);
  auto file = std::unique_ptr<TableFile>(new TableFile(family.cf, path, what, nullptr));
  DS_RETURN_IF_ERROR(FromRocksStatus(writer->Open(path), what));
  file->writer_ = std::move(writer);
  return file;
}

absl::Status TableFile::Add(const KeyWrite& w) {
  rocksdb::Status s = w.value ? writer_->Put(w.key, *w.value) : writer_->Delete(w.key);
  return FromRocksStatus(s, what_);
}

absl::Status TableFile::Finish() { return FromRocksStatus(writer_->Finish(), what_); }

absl::Status IngestWrites(rocksdb::DB* db, const std::string& db_path, uint64_t file_id,
                          const std::vector<IngestFamily>& families,
                          std::vector<KeyWrite> writes, const std::string& what,
                          const std::vector<TableFile*>& extra) {
  std::sort(writes.begin(), writes.end(),
            [](const KeyWrite& a, const KeyWrite& b) { return a.key < b.key; });
  std::vector<std::unique_ptr<TableFile>> own;
  std::vector<rocksdb::IngestExternalFileArg> args;
  for (size_t f = 0; f < families.size(); ++f) {
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = families[f].cf;
    std::unique_ptr<TableFile> file;
    for (const KeyWrite& w : writes) {
      if (w.cf != families[f].cf) continue;
      if (file == nullptr) {
        DS_ASSIGN_OR_RETURN(
            file, TableFile::Create(families[f],
                                    absl::StrCat(StagingDir(db_path), "/", file_id, "-", f, ".sst"),
                                    what));
      }
      DS_RETURN_IF_ERROR(file->Add(w));
    }
    if (file != nullptr) {
      DS_RETURN_IF_ERROR(file->Finish());  // syncs the file
      arg.external_files.push_back(file->path());
      own.push_back(std::move(file));
    }
    for (TableFile* e : extra) {
      if (e->cf() == families[f].cf) arg.external_files.push_back(e->path());
    }
    if (arg.external_files.empty()) continue;
    // Hard-linked into the database, not copied.
    arg.options.move_files = true;
    // The sequence number goes to the MANIFEST only: no write into the linked file.
    arg.options.write_global_seqno = false;
    arg.options.snapshot_consistency = true;
    args.push_back(std::move(arg));
  }
  if (args.empty()) return absl::OkStatus();
  return FromRocksStatus(db->IngestExternalFiles(args), what);
}

}  // namespace deltaserve::storage
