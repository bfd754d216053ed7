#include "storage/store.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/db.h"
#include "storage/internal/status.h"
#include "storage/internal/strings.h"
#include "storage/key_schema.h"

// TaskReader (storage/store.h): one task's records, header and side files read at one
// snapshot.
namespace deltaserve::storage {

StoredRecord::StoredRecord() : bytes_(std::make_unique<rocksdb::PinnableSlice>()) {}
StoredRecord::StoredRecord(StoredRecord&&) noexcept = default;
StoredRecord& StoredRecord::operator=(StoredRecord&&) noexcept = default;
StoredRecord::~StoredRecord() = default;

absl::Span<const uint8_t> StoredRecord::bytes() const {
  return {reinterpret_cast<const uint8_t*>(bytes_->data()), bytes_->size()};
}

TaskReader::~TaskReader() { db_->ReleaseSnapshot(snapshot_); }

absl::Status TaskReader::WrapError(const absl::Status& s, size_t index) const {
  // Whatever is wrong with a stored value, it is stored data that is bad: DataLoss.
  return absl::DataLossError(absl::StrCat(TaskName(info_.tenant, info_.task), " tensor ",
                                          Quoted(info_.tensors[index].name), " (record ",
                                          index, "): ", s.message()));
}

absl::StatusOr<StoredRecord> TaskReader::ReadRecord(size_t index) const {
  if (index >= info_.tensors.size()) {
    return absl::OutOfRangeError(absl::StrCat(TaskName(info_.tenant, info_.task), " has ",
                                              info_.tensors.size(), " records, asked for ",
                                              index));
  }
  const TensorEntry& entry = info_.tensors[index];
  StoredRecord out;
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  rocksdb::Status s = db_->Get(ro, records_cf_, RecordKey(info_.tenant, info_.task, index),
                               out.bytes_.get());
  if (s.IsNotFound()) return WrapError(absl::DataLossError("record value missing"), index);
  if (s.IsCorruption()) return WrapError(FromRocksStatus(s, "reading record"), index);
  DS_RETURN_IF_ERROR(FromRocksStatus(
      s, absl::StrCat("reading ", TaskName(info_.tenant, info_.task), " record ", index)));
  if (out.bytes_->size() != entry.record_bytes) {
    return WrapError(absl::DataLossError(absl::StrCat("stored record has ", out.bytes_->size(),
                                                      " bytes, meta says ",
                                                      entry.record_bytes)),
                     index);
  }
  absl::StatusOr<codec::TensorRecord> record = codec::ParseRecord(out.bytes());
  if (!record.ok()) return WrapError(record.status(), index);
  if (record->info.name != entry.name) {
    return WrapError(absl::DataLossError(absl::StrCat("stored record is of tensor ",
                                                      Quoted(record->info.name))),
                     index);
  }
  out.record_ = *std::move(record);
  if (auto it = base_alias_.find(entry.name); it != base_alias_.end()) {
    out.record_.base_name = it->second;
  }
  return out;
}

absl::StatusOr<StoredRecord> TaskReader::ReadRecordByName(std::string_view name) const {
  std::optional<size_t> index = info_.FindTensor(name);
  if (!index) {
    return absl::NotFoundError(
        absl::StrCat(TaskName(info_.tenant, info_.task), " has no tensor ", Quoted(name)));
  }
  return ReadRecord(*index);
}

absl::StatusOr<std::string> TaskReader::ReadSideFile(std::string_view name) const {
  const SideFileEntry* entry = nullptr;
  for (const SideFileEntry& f : info_.side_files) {
    if (f.name == name) entry = &f;
  }
  if (entry == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(TaskName(info_.tenant, info_.task), " has no side file ", Quoted(name)));
  }
  const std::string what =
      absl::StrCat(TaskName(info_.tenant, info_.task), " side file ", Quoted(name));
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  std::string value;
  rocksdb::Status s =
      db_->Get(ro, records_cf_, SideFileKey(info_.tenant, info_.task, name), &value);
  if (s.IsNotFound()) return absl::DataLossError(absl::StrCat(what, ": value missing"));
  DS_RETURN_IF_ERROR(FromRocksStatus(s, absl::StrCat("reading ", what)));
  if (value.size() != entry->bytes) {
    return absl::DataLossError(absl::StrCat(what, ": stored ", value.size(),
                                            " bytes, meta says ", entry->bytes));
  }
  if (SideFileChecksum(value) != entry->xxh3_64) {
    return absl::DataLossError(absl::StrCat(what, ": XXH3-64 checksum mismatch"));
  }
  return value;
}

absl::StatusOr<std::vector<uint8_t>> TaskReader::HeaderBytes() const {
  const std::string what = absl::StrCat(TaskName(info_.tenant, info_.task), " header");
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db_->Get(ro, records_cf_, HeaderKey(info_.tenant, info_.task), &value);
  if (s.IsNotFound()) return absl::DataLossError(absl::StrCat(what, ": value missing"));
  DS_RETURN_IF_ERROR(FromRocksStatus(s, absl::StrCat("reading ", what)));
  if (value.size() != info_.header_bytes) {
    return absl::DataLossError(absl::StrCat(what, ": stored ", value.size(),
                                            " bytes, meta says ", info_.header_bytes));
  }
  return std::vector<uint8_t>(value.data(), value.data() + value.size());
}

absl::StatusOr<std::vector<uint8_t>> TaskReader::AssembleContainer() const {
  std::vector<uint8_t> out;
  DS_RETURN_IF_ERROR(ForEachContainerPiece([&](absl::Span<const uint8_t> piece) {
    out.insert(out.end(), piece.begin(), piece.end());
    return absl::OkStatus();
  }));
  return out;
}

absl::Status TaskReader::ForEachContainerPiece(
    const std::function<absl::Status(absl::Span<const uint8_t>)>& fn) const {
  DS_ASSIGN_OR_RETURN(std::vector<uint8_t> header, HeaderBytes());
  codec::ContainerTrailerBuilder trailer;
  trailer.AddHeader(header);
  DS_RETURN_IF_ERROR(fn(header));
  for (size_t i = 0; i < num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(StoredRecord record, ReadRecord(i));
    trailer.AddRecord(record.bytes());
    DS_RETURN_IF_ERROR(fn(record.bytes()));
  }
  return fn(trailer.Finish());
}

}  // namespace deltaserve::storage
