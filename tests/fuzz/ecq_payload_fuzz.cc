// libFuzzer target: an entropy-coded (ecq, encoding 3) payload (codec/FORMAT.md,
// "Entropy-coded payload", with or without low-rank factors) decoded for a view chosen
// by the first 4 bytes (rows, cols in [1, 256]), alone and fused with a merge of a row
// range into an F16 base.
#include <cstdint>
#include <vector>

#include "codec/delta_ecq.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltaserve::codec;
  if (size < 4) return 0;
  const int64_t rows = 1 + ((data[0] | data[1] << 8) % 256);
  const int64_t cols = 1 + ((data[2] | data[3] << 8) % 256);
  const absl::Span<const uint8_t> payload(data + 4, size - 4);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  (void)DecodeEcqMatrix(payload, rows, cols, out.data());
  std::vector<uint8_t> base(static_cast<size_t>(rows * cols) * 2, 0x3c), merged(base.size());
  (void)DecodeEcqMatrixMergeRows(payload, rows, cols, rows / 3, rows, base.data(), DType::kF16,
                                 DType::kF16, merged.data());
  return 0;
}
