// CLI11 validators for the numeric and name flags of deltactl and deltaserved.
//
// CLI11 alone converts "-1" into an unsigned option as 2^64 - 1, "nan"/"inf" into a
// double option as NaN/infinity (which then pass range checks written as "< x" or
// ">= x"), "0x10" as 16, "010" as octal 8, "1e3" as 1000 and " 8" as 8. These validators
// run on the flag's text before conversion and take only plain decimal numerals, so a bad
// value fails while parsing, with a message naming the flag (and, for deltaserved, the
// variable that set it). Header-only; thread-compatible (used once, at start-up).
#ifndef DELTASERVE_COMMON_CLI_VALIDATORS_H_
#define DELTASERVE_COMMON_CLI_VALIDATORS_H_

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/names.h"

namespace deltaserve::common {

// Whether `text` is a plain decimal numeral: ASCII digits and, with `fraction`, at most
// one '.' ("12", "0.5", "5."); no sign, exponent, "0x" prefix, space, "inf" or "nan".
// Without `fraction` a leading zero is refused too ("010"; "0" itself is fine): CLI11
// converts whole numbers with strtoull(..., 0), which reads "010" as octal 8.
inline bool IsPlainDecimal(const std::string& text, bool fraction) {
  if (text.find_first_not_of(fraction ? "0123456789." : "0123456789") != std::string::npos ||
      text.find_first_of("0123456789") == std::string::npos) {
    return false;
  }
  if (fraction) return text.find('.') == text.rfind('.');
  return text.size() == 1 || text[0] != '0';
}

// A whole number in [min, max] (a plain decimal numeral, IsPlainDecimal). The message says
// "want `what` in [min, max], got '0x10'" (or ">= min" when `max` is 2^64 - 1). Use it
// for every integer flag: the caller's own checks (Options::Validate) come after it.
inline CLI::Validator WholeNumberValidator(std::string what, uint64_t min,
                                           uint64_t max = UINT64_MAX) {
  const std::string range = max == UINT64_MAX
                                ? absl::StrCat(">= ", min, " (at most 2^64 - 1)")
                                : absl::StrCat("in [", min, ", ", max, "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        uint64_t value = 0;
        if (IsPlainDecimal(text, /*fraction=*/false) && absl::SimpleAtoi(text, &value) &&
            value >= min && value <= max) {
          return "";
        }
        return absl::StrCat("want ", what, " ", range, ", got '", text, "'",
                            text.size() > 1 && text[0] == '0' &&
                                    text.find_first_not_of("0123456789") == std::string::npos
                                ? " (no leading zero: it would be read as octal)"
                                : "");
      },
      "UINT");
}

// A byte count: a whole number of bytes >= `min`, at most 2^64 - 1 ("-1", "1e9", "12x",
// "0x10" and "010" refused).
inline CLI::Validator ByteCountValidator(uint64_t min = 0) {
  CLI::Validator v = WholeNumberValidator("a whole number of bytes", min);
  v.name("BYTES");
  return v;
}

// A duration in seconds: a plain decimal number (IsPlainDecimal) in [0, 1e9] ("nan",
// "inf", "-1", "1e3", "0x10" refused). Lower
// bounds particular to a flag (e.g. keepalive >= 1 s) are the caller's to check.
inline CLI::Validator SecondsValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!IsPlainDecimal(text, /*fraction=*/true) || !absl::SimpleAtod(text, &value) ||
            value > 1e9) {
          return "want a number of seconds in [0, 1e9], got '" + text + "'";
        }
        return "";
      },
      "SECONDS");
}

// A number in an interval: [lo, hi], with `lo_open` / `hi_open` excluding that end; a plain
// decimal numeral (IsPlainDecimal: "nan", "inf", "0x10", "1e1", "-1" refused), so `lo`
// must be >= 0. `what` names the quantity and
// `why` (may be "") says why the bounds are where they are, e.g. `want bits per weight in
// (0, 16] (above 16 a lossy code costs more than the 16-bit delta), got '100'`.
inline CLI::Validator NumberInValidator(std::string what, double lo, bool lo_open, double hi,
                                        bool hi_open, std::string why = "") {
  // Whole bounds as integers ("31536000", not StrCat's "3.1536e+07").
  auto bound = [](double x) {
    const bool whole = x >= 0 && x < 9e15 && x == static_cast<double>(static_cast<int64_t>(x));
    return whole ? absl::StrCat(static_cast<int64_t>(x)) : absl::StrCat(x);
  };
  const std::string range =
      absl::StrCat(lo_open ? "(" : "[", bound(lo), ", ", bound(hi), hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (IsPlainDecimal(text, /*fraction=*/true) && absl::SimpleAtod(text, &value) &&
            (lo_open ? value > lo : value >= lo) && (hi_open ? value < hi : value <= hi)) {
          return "";
        }
        return "want " + what + " in " + range + (why.empty() ? "" : " (" + why + ")") +
               ", got '" + text + "'";
      },
      "NUMBER");
}

// A non-negative number written as a plain decimal numeral (IsPlainDecimal), for the
// double flags whose range the caller's Options::Validate checks: "want a plain decimal
// number (digits and at most one '.'), got '1e3'".
inline CLI::Validator PlainNumberValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (IsPlainDecimal(text, /*fraction=*/true) && absl::SimpleAtod(text, &value)) return "";
        return "want a plain decimal number (digits and at most one '.'), got '" + text + "'";
      },
      "NUMBER");
}

// A boolean flag's value (`--flag=VALUE` or the flag's variable): true/false, yes/no,
// on/off or 1/0, in any case. CLI11 alone (2.1) takes any integer ("2", "-7"), single
// letters ("t", "n", "+") and enable/disable: a typo such as `--pretouch-cache=2` turned the
// flag on. A bare flag (`--pretouch-cache`) reaches the validator as "true".
inline bool IsBooleanWord(const std::string& text) {
  static const char* const kWords[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
  for (const char* word : kWords) {
    if (absl::EqualsIgnoreCase(text, word)) return true;
  }
  return false;
}

inline CLI::Validator BooleanValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (IsBooleanWord(text)) return "";
        return "want true/false, yes/no, on/off or 1/0, got '" + text + "'";
      },
      "BOOL");
}

// `app->add_flag(name, value, description)` with BooleanValidator: every boolean flag of
// deltactl and deltaserved is added through it.
inline CLI::Option* AddBooleanFlag(CLI::App* app, const std::string& name, bool& value,
                                   const std::string& description) {
  return app->add_flag(name, value, description)->check(BooleanValidator());
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
