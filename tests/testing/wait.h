// Waiting for a condition in tests, instead of sleeping a fixed time:
//   ASSERT_TRUE(WaitUntil([&] { return watch->changed(); }));
#ifndef DELTASERVE_TESTS_TESTING_WAIT_H_
#define DELTASERVE_TESTS_TESTING_WAIT_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace deltaserve::testing {

// Calls `done` every millisecond until it returns true (then true), or until `limit`
// has passed (then `done`'s last answer). The limit only ends a test whose condition
// never comes: it is long, and no passing run's outcome depends on it.
template <typename Fn>
bool WaitUntil(Fn done, absl::Duration limit = absl::Seconds(60)) {
  for (const absl::Time end = absl::Now() + limit; absl::Now() < end;) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return done();
}

}  // namespace deltaserve::testing

#endif  // DELTASERVE_TESTS_TESTING_WAIT_H_
