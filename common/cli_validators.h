// CLI11 validators for the numeric and name flags of deltactl and deltaserved.
//
// CLI11 alone converts "-1" into an unsigned option as 2^64 - 1 and "nan"/"inf" into a
// double option as NaN/infinity, which then pass range checks written as "< x" or ">= x".
// These validators run on the flag's text before conversion, so a bad value fails while
// parsing, with a message naming the flag. Header-only; thread-compatible (used once, at
// start-up).
#ifndef DELTASERVE_COMMON_CLI_VALIDATORS_H_
#define DELTASERVE_COMMON_CLI_VALIDATORS_H_

#include <cmath>
#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/names.h"

namespace deltaserve::common {

// A byte count: decimal digits only, fitting 64 bits ("-1", "1e9", "12x" refused), at
// least `min`.
inline CLI::Validator ByteCountValidator(uint64_t min = 0) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        uint64_t value = 0;
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
            !absl::SimpleAtoi(text, &value) || value < min) {
          return absl::StrCat("want a whole number of bytes >= ", min,
                              " (at most 2^64 - 1), got '", text, "'");
        }
        return "";
      },
      "BYTES");
}

// A duration in seconds: a finite number in [0, 1e9] ("nan", "inf", "-1" refused). Lower
// bounds particular to a flag (e.g. keepalive >= 1 s) are the caller's to check.
inline CLI::Validator SecondsValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || value < 0 ||
            value > 1e9) {
          return "want a number of seconds in [0, 1e9], got '" + text + "'";
        }
        return "";
      },
      "SECONDS");
}

// A finite number in an interval: [lo, hi], with `lo_open` / `hi_open` excluding that end
// ("nan", "inf" and text that is not a number refused). `what` names the quantity and
// `why` (may be "") says why the bounds are where they are, e.g. `want bits per weight in
// (0, 16] (above 16 a lossy code costs more than the 16-bit delta), got '100'`.
inline CLI::Validator NumberInValidator(std::string what, double lo, bool lo_open, double hi,
                                        bool hi_open, std::string why = "") {
  const std::string range = absl::StrCat(lo_open ? "(" : "[", lo, ", ", hi, hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (absl::SimpleAtod(text, &value) && std::isfinite(value) &&
            (lo_open ? value > lo : value >= lo) && (hi_open ? value < hi : value <= hi)) {
          return "";
        }
        return "want " + what + " in " + range + (why.empty() ? "" : " (" + why + ")") +
               ", got '" + text + "'";
      },
      "NUMBER");
}

// A tenant or task name (`kind`: "tenant", "task"), by the store's own rule
// (common::ValidateName), so that deltactl refuses "a/b" before it reads, encodes or
// uploads anything rather than after.
inline CLI::Validator NameValidator(std::string kind) {
  return CLI::Validator(
      [kind](std::string& text) -> std::string {
        const absl::Status status = ValidateName(kind, text);
        return status.ok() ? "" : std::string(status.message());
      },
      "NAME");
}

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_CLI_VALIDATORS_H_
