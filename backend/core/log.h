#pragma once
// Process-wide logging with a swappable sink. The default sink writes "[level] message" to stderr.
// A worker swaps in a sink that forwards lines to the server; tests swap in one that captures.
// Thread-safe: log() may be called from any thread; the sink is called under a mutex.

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mugv {

enum class LogLevel { unknown = 0, debug, info, warning, error };

const char* to_string(LogLevel level);
std::optional<LogLevel> log_level_from_string(std::string_view name);

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Installs `sink` and returns the previous one. An empty sink restores the stderr default.
LogSink set_log_sink(LogSink sink);
// Messages below `level` are dropped before reaching the sink. Default: info, or $MUGV_LOG_LEVEL.
void set_log_level(LogLevel level);
LogLevel log_level();

void log(LogLevel level, std::string_view message);
inline void log_debug(std::string_view m) {
  log(LogLevel::debug, m);
}
inline void log_info(std::string_view m) {
  log(LogLevel::info, m);
}
inline void log_warning(std::string_view m) {
  log(LogLevel::warning, m);
}
inline void log_error(std::string_view m) {
  log(LogLevel::error, m);
}

}  // namespace mugv
