#include "common/json.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/utf8.h"

namespace deltaserve::common {
namespace {

// nlohmann's message without its internal prefix ("[json.exception.parse_error.101] ")
// and, for a parse error, without its own position ("parse error at line 1, column 2: "),
// which ParseJson states once, as line, column and byte. Bytes of the input that are not
// UTF-8 (nlohmann quotes the last token read) are escaped as \xNN.
std::string NlohmannMessage(const nlohmann::json::exception& e) {
  std::string_view m = e.what();
  if (m.substr(0, 16) == "[json.exception.") {
    if (const size_t end = m.find("] "); end != std::string_view::npos) m.remove_prefix(end + 2);
  }
  if (m.substr(0, 11) == "parse error") {
    if (const size_t colon = m.find(": "); colon != std::string_view::npos) {
      m.remove_prefix(colon + 2);
    }
  }
  return Utf8OrEscaped(m);
}

}  // namespace

namespace {

// The duplicate-key check, as a SAX pass that builds nothing: nlohmann's callback parser
// (parse with a parser_callback_t) rescans the enclosing object's members at the end of
// every nested object, which made a header of n tensor entries cost O(n^2) (new-user
// trial: 20,000 tensors in one safetensors file took 7 s of CPU to open, 40,000 took 58 s).
// One frame per open object or array: the keys seen so far (objects) and the key under
// which the container sits, for messages.
class DuplicateKeyCheck : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit DuplicateKeyCheck(absl::string_view top_key_kind) : top_key_kind_(top_key_kind) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return Open(); }
  bool start_array(std::size_t) override { return Open(); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }
  bool key(string_t& key) override {
    last_key_ = key;
    if (!stack_.empty() && !stack_.back().keys.insert(key).second && duplicate_.empty()) {
      duplicate_ = stack_.size() == 1
                       ? absl::StrCat("duplicate ", top_key_kind_, " '", key, "'")
                       : absl::StrCat("duplicate key '", key, "' in '", stack_.back().parent_key,
                                      "'");
    }
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& e) override {
    // A syntax error is a parse_error, with its byte; a number out of range is not.
    const auto* syntax = dynamic_cast<const nlohmann::json::parse_error*>(&e);
    error_byte_ = syntax != nullptr ? syntax->byte : 0;
    error_ = NlohmannMessage(e);
    failed_ = true;
    return false;
  }

  bool failed() const { return failed_; }
  size_t error_byte() const { return error_byte_; }
  const std::string& error() const { return error_; }
  const std::string& duplicate() const { return duplicate_; }

 private:
  struct Frame {
    std::string parent_key;
    std::set<std::string> keys;
  };
  bool Open() {
    stack_.push_back(Frame{last_key_, {}});
    last_key_.clear();
    return true;
  }
  bool Close() {
    if (!stack_.empty()) stack_.pop_back();
    return true;
  }

  std::string top_key_kind_;
  std::vector<Frame> stack_;
  std::string last_key_;
  std::string duplicate_;  // the first duplicate found, as a message
  bool failed_ = false;
  size_t error_byte_ = 0;
  std::string error_;
};

}  // namespace

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what,
                                         absl::string_view top_key_kind) {
  // Two linear passes: the check (syntax and duplicates), then the plain DOM parse.
  DuplicateKeyCheck check(top_key_kind);
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(text.begin(), text.end(), &check);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON: ", NlohmannMessage(e)));
  }
  if (!parsed || check.failed()) {
    if (check.error_byte() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON: ", check.error()));
    }
    // The byte is 1-based, where parsing stopped; users want line:column.
    const size_t byte = std::min<size_t>(check.error_byte() - 1, text.size());
    size_t line = 1, col = 1;
    for (size_t i = 0; i < byte; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON at line ", line,
                                                   ", column ", col, " (byte ",
                                                   check.error_byte(), "): ", check.error()));
  }
  if (!check.duplicate().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", check.duplicate()));
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {  // the check above parsed it: not expected
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON: ", NlohmannMessage(e)));
  }
}

absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, absl::string_view what,
                                     int indent) {
  try {
    return j.dump(indent);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": cannot serialize: ", NlohmannMessage(e)));
  }
}

absl::StatusOr<int64_t> JsonToNonNegativeInt(const nlohmann::json& j, absl::string_view what) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", v, " is too large"));
    }
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": ", v, " is negative"));
    return v;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": expected a non-negative integer, got ", j.type_name()));
}

absl::StatusOr<std::string> JsonToString(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a string, got ", j.type_name()));
  }
  return j.get<std::string>();
}

absl::StatusOr<double> JsonToDouble(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a number, got ", j.type_name()));
  }
  double v = j.get<double>();
  if (!std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a finite number"));
  }
  return v;
}

absl::StatusOr<bool> JsonToBool(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected true or false, got ", j.type_name()));
  }
  return j.get<bool>();
}

absl::Status CheckJsonKeys(const nlohmann::json& j, absl::string_view what,
                           const std::vector<std::string>& allowed) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(what, ": must be an object"));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": unknown key \"", it.key(),
                                                     "\" (allowed: ", absl::StrJoin(allowed, ", "),
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::common
