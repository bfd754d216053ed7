// libFuzzer target: one .safetensors file (8-byte length, JSON header, data) through
// ModelReader::Open, then every tensor read as the codec reads it.
#include <cstdint>
#include <vector>

#include "codec/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltaserve::codec;
  const std::string path = deltaserve::fuzz::WriteScratch("m.safetensors", data, size);
  auto reader = ModelReader::Open(path);
  if (!reader.ok()) return 0;
  std::vector<float> f;
  for (const TensorInfo& info : (*reader)->tensors()) {
    auto view = (*reader)->Get(info.name);
    if (!view.ok() || !IsCastable(view->info.dtype)) continue;
    const int64_t n = std::min<int64_t>(view->info.num_elements(), 1024);
    f.resize(static_cast<size_t>(n));
    ToFloat32(view->data.data(), view->info.dtype, n, f.data());
  }
  (void)(*reader)->total_bytes();
  return 0;
}
