// libFuzzer target: a TF.js model.json (weightsManifest) beside fixed weight files
// (w.bin: 256 bytes; group1-shard1of1: 4096 bytes), through ImportTfjsGraphModel.
#include <cstdint>
#include <vector>

#include "codec/tfjs.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = [] {
    std::vector<uint8_t> bytes(4096);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 37);
    deltaserve::fuzz::WriteScratch("w.bin", bytes.data(), 256);
    deltaserve::fuzz::WriteScratch("group1-shard1of1", bytes.data(), bytes.size());
    return true;
  }();
  (void)init;
  const std::string path = deltaserve::fuzz::WriteScratch("model.json", data, size);
  (void)deltaserve::codec::ImportTfjsGraphModel(path);
  return 0;
}
