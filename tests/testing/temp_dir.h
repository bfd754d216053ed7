// A scratch directory for one test, shared by every test that writes files.
//
//   ScopedTempDir tmp;                      // /tmp/<Suite>.<Test>.<pid>/ (under TempDir())
//   WriteSomething(tmp.File("m.safetensors"));
//
// The name carries the running test's suite and name and the process id, so that the
// same test run at once from two build trees (or by ctest -j) never shares a directory.
// Created empty in the constructor, removed with its contents in the destructor.
#ifndef DELTASERVE_TESTS_TESTING_TEMP_DIR_H_
#define DELTASERVE_TESTS_TESTING_TEMP_DIR_H_

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace deltaserve::testing {

class ScopedTempDir {
 public:
  ScopedTempDir() {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info != nullptr
                           ? std::string(info->test_suite_name()) + "." + info->name()
                           : std::string("no_test");
    for (char& c : name) {
      if (c == '/') c = '_';  // parameterized tests have '/' in their names
    }
    path_ = std::filesystem::path(::testing::TempDir()) /
            (name + "." + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Path of `name` inside the directory (not created).
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_TESTING_TEMP_DIR_H_
