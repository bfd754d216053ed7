// Runs the real deltactl binary (path compiled in as DELTACTL_BIN) from tests.
#ifndef DELTASERVE_TESTS_CLIENT_DELTACTL_TEST_UTIL_H_
#define DELTASERVE_TESTS_CLIENT_DELTACTL_TEST_UTIL_H_

#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/testing/temp_dir.h"

namespace deltaserve::testing {

struct DeltactlResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Runs `deltactl <args>` (args are shell words; quote as needed) with stdout and stderr
// captured into files of `dir`.
inline DeltactlResult RunDeltactl(const std::string& args, const ScopedTempDir& dir) {
  const std::string out = dir.File("deltactl.stdout"), err = dir.File("deltactl.stderr");
  const std::string cmd = std::string(DELTACTL_BIN) + " " + args + " >" + out + " 2>" + err;
  const int rc = std::system(cmd.c_str());
  DeltactlResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  const auto o = ReadBytes(out), e = ReadBytes(err);
  r.out.assign(o.begin(), o.end());
  r.err.assign(e.begin(), e.end());
  return r;
}

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_CLIENT_DELTACTL_TEST_UTIL_H_
