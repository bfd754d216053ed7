// StagedRecords (storage/store.h): a commit's records written before the commit.
#include "absl/strings/str_cat.h"
#include "codec/container.h"
#include "common/status_macros.h"
#include "storage/internal/ingest.h"
#include "storage/key_schema.h"
#include "storage/store.h"

namespace deltaserve::storage {

absl::StatusOr<TensorEntry> RecordEntry(absl::Span<const uint8_t> record) {
  DS_ASSIGN_OR_RETURN(codec::TensorRecord parsed, codec::ParseRecord(record));
  return TensorEntry{parsed.info.name, parsed.info.dtype, parsed.info.shape, parsed.encoding,
                     record.size()};
}

StagedRecords::StagedRecords(std::string tenant, std::string task,
                             std::unique_ptr<TableFile> file)
    : tenant_(std::move(tenant)), task_(std::move(task)), file_(std::move(file)) {}

StagedRecords::~StagedRecords() = default;

absl::Status StagedRecords::Add(absl::Span<const uint8_t> record) {
  if (!status_.ok()) return status_;
  absl::StatusOr<TensorEntry> entry = RecordEntry(record);
  if (entry.ok()) {
    status_ = file_->Add(KeyWrite{file_->cf(), RecordKey(tenant_, task_, entries_.size()),
                                  rocksdb::Slice(reinterpret_cast<const char*>(record.data()),
                                                 record.size())});
    if (status_.ok()) entries_.push_back(*std::move(entry));
  } else {
    status_ = common::Annotate(entry.status(), absl::StrCat("record ", entries_.size()));
  }
  return status_;
}

}  // namespace deltaserve::storage
