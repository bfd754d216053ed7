// Helpers shared by the libFuzzer targets (tests/fuzz/*_fuzz.cc): a scratch directory
// per process and whole-file writes. Only built with -DDELTASERVE_BUILD_FUZZERS=ON.
#ifndef DELTASERVE_TESTS_FUZZ_FUZZ_UTIL_H_
#define DELTASERVE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace deltaserve::fuzz {

// A directory of this process under $TMPDIR (or /tmp), created on first use, removed at
// exit.
inline const std::string& ScratchDir() {
  // Never destroyed: the atexit handler below runs after static destructors would.
  static const std::string* dir = [] {
    const char* t = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(t != nullptr ? t : "/tmp") + "/deltaserve-fuzz." +
                              std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

// Replaces the file `name` in ScratchDir() with `size` bytes; returns its path.
inline std::string WriteScratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = ScratchDir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace deltaserve::fuzz

#endif  // DELTASERVE_TESTS_FUZZ_FUZZ_UTIL_H_
