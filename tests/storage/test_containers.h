// Small in-memory containers (kRaw records) for storage tests, and the raw database.
#ifndef DELTASERVE_TESTS_STORAGE_TEST_CONTAINERS_H_
#define DELTASERVE_TESTS_STORAGE_TEST_CONTAINERS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/tensor.h"
#include "rocksdb/db.h"
#include "storage/key_schema.h"

namespace deltaserve::storage::testing {

struct TestTensor {
  std::string name;
  std::vector<int64_t> shape;
  uint8_t seed = 0;  // payload byte i is (seed + 7 * i) mod 256
};

// A container of kRaw F32 records, one per tensor, with base hash bytes all `hash_byte`.
inline std::vector<uint8_t> MakeContainer(const std::vector<TestTensor>& tensors,
                                          uint8_t hash_byte = 0x42,
                                          std::map<std::string, std::string> metadata = {
                                              {"tool", "store_test"}}) {
  codec::ContainerHeader header;
  header.base_hash.fill(hash_byte);
  header.tensor_count = static_cast<uint32_t>(tensors.size());
  header.metadata = std::move(metadata);
  std::vector<uint8_t> header_bytes = codec::SerializeHeader(header);
  std::vector<std::vector<uint8_t>> records;
  for (const TestTensor& t : tensors) {
    codec::TensorRecord r;
    r.info = codec::TensorInfo{t.name, codec::DType::kF32, t.shape};
    r.encoding = codec::Encoding::kRaw;
    std::vector<uint8_t> payload(r.info.num_bytes());
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(t.seed + 7 * i);
    r.payload = payload;
    absl::StatusOr<std::vector<uint8_t>> bytes = codec::SerializeRecord(r);
    if (!bytes.ok()) return {};  // the test then fails to parse an empty container
    records.push_back(*std::move(bytes));
  }
  std::vector<absl::Span<const uint8_t>> spans(records.begin(), records.end());
  return codec::AssembleContainer(header_bytes, spans);
}

// A store's raw database opened read-only with both column families (the store closed),
// to look at keys directly. ok() is false if it could not be opened.
class RawStore {
 public:
  explicit RawStore(const std::string& path) {
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {kDefaultColumnFamily, rocksdb::ColumnFamilyOptions()},
        {kRecordsColumnFamily, rocksdb::ColumnFamilyOptions()}};
    ok_ = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, cfs, &handles_, &db_).ok();
  }
  ~RawStore() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    delete db_;
  }
  bool ok() const { return ok_; }
  // Whether the records family holds `key`.
  bool RecordsHas(const std::string& key) const {
    std::string value;
    return ok_ && db_->Get(rocksdb::ReadOptions(), handles_[1], key, &value).ok();
  }

 private:
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  bool ok_ = false;
};

}  // namespace deltaserve::storage::testing

#endif  // DELTASERVE_TESTS_STORAGE_TEST_CONTAINERS_H_
