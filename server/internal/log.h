// Structured logging on spdlog: one event = a message plus key/value fields, printed as
// `msg k=v k=v` (text) or as one JSON object per line (json). The format is process
// wide (set once by main or the test). Thread-safe (spdlog's default logger is).
#ifndef DELTASERVE_SERVER_INTERNAL_LOG_H_
#define DELTASERVE_SERVER_INTERNAL_LOG_H_

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace deltaserve::server::internal {

enum class LogFormat { kText, kJson };

// Sets the format and the matching spdlog pattern of the default logger. Without a call
// the first LogEvent sets kText's pattern, so that every binary logs alike.
void SetLogFormat(LogFormat format);

enum class LogLevel { kInfo, kWarn, kError };
using LogField = std::pair<std::string_view, std::string>;

void LogEvent(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
inline void LogInfo(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  LogEvent(LogLevel::kInfo, msg, fields);
}
inline void LogWarn(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  LogEvent(LogLevel::kWarn, msg, fields);
}
inline void LogError(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  LogEvent(LogLevel::kError, msg, fields);
}

}  // namespace deltaserve::server::internal

#endif  // DELTASERVE_SERVER_INTERNAL_LOG_H_
