// libFuzzer target: a delta container (.dds) as the server and decompress read it:
// ContainerReader::Parse, the storage checks (CheckContainerStorable and the upload
// scanner over every prefix split), every record verified, and every record's payload
// decoded (raw payload sizes, DCT payloads through DecodeDctMatrix when the view is
// small).
#include <cstdint>
#include <vector>

#include "codec/container.h"
#include "codec/container_checks.h"
#include "codec/delta_dct.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltaserve::codec;
  const absl::Span<const uint8_t> bytes(data, size);
  ContainerUploadScanner scanner;
  for (size_t n = 0; n < size; n += 1 + n / 2) (void)scanner.Feed(bytes.subspan(0, n));
  (void)scanner.Feed(bytes);
  auto reader = ContainerReader::Parse(bytes);
  if (!reader.ok()) return 0;
  (void)CheckContainerStorable(*reader);
  std::vector<float> out;
  for (size_t i = 0; i < reader->num_records(); ++i) {
    auto rec = reader->record(i);
    if (!rec.ok()) continue;
    (void)SerializedRecordSize(*rec);
    if (rec->encoding == Encoding::kDct && rec->rows * rec->cols <= (1 << 16)) {
      out.resize(static_cast<size_t>(rec->rows * rec->cols));
      (void)DecodeDctMatrix(rec->payload, rec->rows, rec->cols, out.data());
    }
  }
  return 0;
}
