#include "server/internal/log.h"

#include <atomic>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace deltaserve::server::internal {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
// Whether the spdlog pattern of g_format is in place: every process that logs through
// LogEvent (the daemon, tests, benchmarks that start a server) prints the same format,
// whether or not its main called SetLogFormat.
std::atomic<bool> g_pattern_set{false};

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

}  // namespace

void SetLogFormat(LogFormat format) {
  g_format = format;
  if (format == LogFormat::kJson) {
    spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %L %v", spdlog::pattern_time_type::utc);
  }
  g_pattern_set.store(true, std::memory_order_release);
}

void LogEvent(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (!g_pattern_set.load(std::memory_order_acquire)) SetLogFormat(g_format.load());
  std::string line;
  if (g_format.load() == LogFormat::kJson) {
    // A JSON fragment; the pattern wraps it into one object per line.
    nlohmann::ordered_json obj;
    obj["msg"] = std::string(msg);
    for (const auto& [k, v] : fields) obj[std::string(k)] = v;
    std::string dumped = obj.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    line = dumped.substr(1, dumped.size() - 2);  // strip the braces
  } else {
    line = std::string(msg);
    for (const auto& [k, v] : fields) {
      // StrAppend, not `line += " " + ...`: the same text, without GCC 12's false
      // -Wrestrict on the string temporaries.
      const absl::string_view key(k.data(), k.size());
      if (NeedsQuotes(v)) {
        absl::StrAppend(&line, " ", key, "=\"", absl::CEscape(v), "\"");
      } else {
        absl::StrAppend(&line, " ", key, "=", v);
      }
    }
  }
  switch (level) {
    case LogLevel::kInfo: spdlog::info("{}", line); break;
    case LogLevel::kWarn: spdlog::warn("{}", line); break;
    case LogLevel::kError: spdlog::error("{}", line); break;
  }
}

}  // namespace deltaserve::server::internal
