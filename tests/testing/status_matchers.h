// GoogleTest matchers for absl::Status / absl::StatusOr, shared by every test.
//
//   EXPECT_THAT(reader.status(), StatusIs(absl::StatusCode::kDataLoss));
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'w'")));
//   ASSERT_THAT(result, IsOk());
#ifndef DELTASERVE_TESTS_TESTING_STATUS_MATCHERS_H_
#define DELTASERVE_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deltaserve::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::deltaserve::testing::GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s;
  return s.ok();
}

MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::deltaserve::testing::GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::deltaserve::testing::GetStatus(arg);
  *result_listener << "status: " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()),
                                       result_listener);
}

}  // namespace deltaserve::testing

// Asserts OK and yields the value: auto v = ASSERT_OK_AND_GET(expr) is not possible in
// gtest, so use: ASSERT_OK_AND_ASSIGN(auto v, expr);
#define DS_TEST_CONCAT_INNER_(a, b) a##b
#define DS_TEST_CONCAT_(a, b) DS_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(DS_TEST_CONCAT_(_ds_test_so_, __LINE__), lhs, rexpr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(so, lhs, rexpr)              \
  auto so = (rexpr);                                            \
  ASSERT_TRUE(so.ok()) << so.status();                          \
  lhs = std::move(so).value()

#endif  // DELTASERVE_TESTS_TESTING_STATUS_MATCHERS_H_
