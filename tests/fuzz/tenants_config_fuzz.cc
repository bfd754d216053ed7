// libFuzzer target: the daemon's tenants/tokens JSON (server/CONFIG.md) through
// ParseAuthConfig, with a scratch directory for token files it names.
#include <cstdint>
#include <string_view>

#include "server/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = [] {
    const char tokens[] = "acme:tok-acme\n@admin:tok-admin\n# comment\n";
    deltaserve::fuzz::WriteScratch("tokens.txt", reinterpret_cast<const uint8_t*>(tokens),
                                   sizeof(tokens) - 1);
    return true;
  }();
  (void)init;
  (void)deltaserve::server::ParseAuthConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), deltaserve::fuzz::ScratchDir());
  return 0;
}
