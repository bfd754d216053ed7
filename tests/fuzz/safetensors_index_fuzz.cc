// libFuzzer target: a model.safetensors.index.json beside two fixed valid shards
// (a.safetensors: "a" F32 [2]; b.safetensors: "b" F16 [3], "c" I64 [1]), opened with
// ModelReader::Open.
#include <cstdint>
#include <cstring>
#include <vector>

#include "codec/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void WriteShards() {
  using namespace deltaserve::codec;
  const std::string dir = deltaserve::fuzz::ScratchDir();
  const std::vector<uint8_t> a(8, 0x3f), b(6, 0x3c), c(8, 1);
  (void)WriteSafetensors(dir + "/a.safetensors", {{{"a", DType::kF32, {2}}, a}}, {{"k", "v"}});
  (void)WriteSafetensors(dir + "/b.safetensors",
                         {{{"b", DType::kF16, {3}}, b}, {{"c", DType::kI64, {1}}, c}}, {});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = (WriteShards(), true);
  (void)init;
  const std::string path =
      deltaserve::fuzz::WriteScratch("model.safetensors.index.json", data, size);
  auto reader = deltaserve::codec::ModelReader::Open(path);
  if (reader.ok()) {
    for (const auto& info : (*reader)->tensors()) (void)(*reader)->Get(info.name);
    (void)(*reader)->metadata();
  }
  return 0;
}
