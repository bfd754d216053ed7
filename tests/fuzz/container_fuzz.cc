// libFuzzer target: a delta container (.dds) as the server and decompress read it:
// ContainerReader::Parse, the storage checks (CheckContainerStorable and the upload
// scanner over every prefix split), every record verified, and every record's payload
// decoded (raw payload sizes, DCT payloads through DecodeDctMatrix when the view is
// small). Then, against the base of make_seeds.py's pair ("w" F32 [64, 64], "bias" F32
// [4], "ids" I64 [2], zeros here), the record checks (CheckContainerFitsBase) and, for
// each small record they pass, a merge into two buffers of different filling: the two
// must be equal, i.e. a merge that succeeds writes every byte (a record that left
// bytes unwritten served another tenant's memory).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "codec/container.h"
#include "codec/container_checks.h"
#include "codec/delta_codec.h"
#include "codec/delta_dct.h"
#include "codec/record_checks.h"

namespace {

using namespace deltaserve::codec;

// The seed pair's base, in memory.
class SeedBase final : public ModelReader {
 public:
  SeedBase() {
    Add("bias", DType::kF32, {4});
    Add("ids", DType::kI64, {2});
    Add("w", DType::kF32, {64, 64});
  }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  absl::StatusOr<TensorView> Get(const std::string& name) const override {
    for (size_t i = 0; i < infos_.size(); ++i) {
      if (infos_[i].name == name) return TensorView{infos_[i], absl::MakeConstSpan(data_[i])};
    }
    return absl::NotFoundError(name);
  }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  uint64_t total_bytes() const override { return 0; }

 private:
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape) {
    infos_.push_back({name, dtype, std::move(shape)});
    data_.emplace_back(infos_.back().num_bytes(), 0);
  }
  std::vector<TensorInfo> infos_;
  std::vector<std::vector<uint8_t>> data_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const SeedBase* const base = new SeedBase();
  const absl::Span<const uint8_t> bytes(data, size);
  ContainerUploadScanner scanner;
  for (size_t n = 0; n < size; n += 1 + n / 2) (void)scanner.Feed(bytes.subspan(0, n));
  (void)scanner.Feed(bytes);
  auto reader = ContainerReader::Parse(bytes);
  if (!reader.ok()) return 0;
  (void)CheckContainerStorable(*reader);
  (void)CheckContainerFitsBase(*reader, *base);
  std::vector<float> out;
  std::vector<uint8_t> merged_a, merged_b;
  for (size_t i = 0; i < reader->num_records(); ++i) {
    auto rec = reader->record(i);
    if (!rec.ok()) continue;
    (void)SerializedRecordSize(*rec);
    if (rec->encoding == Encoding::kDct && rec->rows * rec->cols <= (1 << 16)) {
      out.resize(static_cast<size_t>(rec->rows * rec->cols));
      (void)DecodeDctMatrix(rec->payload, rec->rows, rec->cols, out.data());
    }
    if (!CheckRecordFitsBase(*rec, base).ok() || rec->info.num_elements() > (1 << 16)) continue;
    const uint64_t n = MergedBytes(*rec, rec->info.dtype);
    merged_a.assign(n, 0xAB);
    merged_b.assign(n, 0x54);
    const bool a = MergeTensor(base, *rec, rec->info.dtype, absl::MakeSpan(merged_a)).ok();
    const bool b = MergeTensor(base, *rec, rec->info.dtype, absl::MakeSpan(merged_b)).ok();
    if (a != b || (a && merged_a != merged_b)) std::abort();  // bytes left unwritten
  }
  return 0;
}
