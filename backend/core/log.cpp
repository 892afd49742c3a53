#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace mugv {
namespace {

void stderr_sink(LogLevel level, std::string_view message) {
  std::fprintf(stderr, "[%s] %.*s\n", to_string(level), static_cast<int>(message.size()), message.data());
}

LogLevel initial_level() {
  if (const char* env = std::getenv("MUGV_LOG_LEVEL"))
    if (auto level = log_level_from_string(env)) return *level;
  return LogLevel::info;
}

std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}
LogSink& current_sink() {
  static LogSink sink = stderr_sink;
  return sink;
}
std::atomic<LogLevel>& threshold() {
  static std::atomic<LogLevel> level{initial_level()};
  return level;
}

}  // namespace

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
    default:
      return "unknown";
  }
}

std::optional<LogLevel> log_level_from_string(std::string_view name) {
  for (LogLevel l : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error})
    if (name == to_string(l)) return l;
  return std::nullopt;
}

LogSink set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  LogSink previous = std::move(current_sink());
  current_sink() = sink ? std::move(sink) : LogSink(stderr_sink);
  return previous;
}

void set_log_level(LogLevel level) {
  threshold() = level;
}
LogLevel log_level() {
  return threshold();
}

void log(LogLevel level, std::string_view message) {
  if (level < threshold()) return;
  std::lock_guard<std::mutex> lock(sink_mutex());
  current_sink()(level, message);
}

}  // namespace mugv
