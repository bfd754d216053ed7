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

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what,
                                         absl::string_view top_key_kind) {
  // One frame per open object or array: the keys seen so far (objects) and the key
  // under which the container sits, for messages.
  struct Frame {
    std::string parent_key;
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  std::string last_key;
  std::string duplicate;  // first duplicate found, as a message
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int /*depth*/, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        stack.push_back(Frame{last_key, {}});
        last_key.clear();
        break;
      case Event::object_end:
      case Event::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case Event::key:
        last_key = parsed.get<std::string>();
        if (!stack.empty() && !stack.back().keys.insert(last_key).second && duplicate.empty()) {
          duplicate = stack.size() == 1
                          ? absl::StrCat("duplicate ", top_key_kind, " '", last_key, "'")
                          : absl::StrCat("duplicate key '", last_key, "' in '",
                                         stack.back().parent_key, "'");
        }
        break;
      case Event::value:
        break;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the 1-based byte where parsing stopped; users want line:column.
    const size_t byte = e.byte > 0 ? std::min<size_t>(e.byte - 1, text.size()) : 0;
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
                                                   ", column ", col, " (byte ", e.byte,
                                                   "): ", NlohmannMessage(e)));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON: ", NlohmannMessage(e)));
  }
  if (!duplicate.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", duplicate));
  return j;
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
