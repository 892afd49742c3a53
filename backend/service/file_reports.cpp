#include "service/file_reports.h"

#include "core/error.h"
#include "core/strings.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace mugv {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path events_file(const fs::path& report_dir) {
  return report_dir / "events.jsonl";
}

FileReportWriter::FileReportWriter(const fs::path& report_dir) : path_(events_file(report_dir)) {
  std::error_code ec;
  fs::create_directories(report_dir, ec);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(ErrorCode::io, path_.string(), cat("cannot open for appending: ", std::strerror(errno)));
}

FileReportWriter::~FileReportWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void FileReportWriter::append(nlohmann::json event) {
  event["time_ms"] = now_ms();  // catalog.h: wall-clock milliseconds
  // Invalid UTF-8 in a log line must not throw out of a log sink: replace it.
  const std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ++failed_writes_;
      return;
    }
    written += static_cast<size_t>(n);
  }
}

ProgressFn FileReportWriter::progress_fn(std::chrono::milliseconds interval) {
  return [this, interval](const Progress& p) {
    const auto now = Clock::now();
    const bool last = p.total > 0 && p.done >= p.total;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!last && now - last_progress_ < interval) return;
      last_progress_ = now;
    }
    append({{"type", "progress"},
            {"stage", p.stage.empty() ? "work" : p.stage},
            {"done", std::max<int64_t>(0, p.done)},
            {"total", std::max<int64_t>(0, p.total)},
            {"rate", p.rate_per_s},
            {"eta_s", p.eta_s},
            {"unit", p.unit},
            {"detail", p.detail.substr(0, 2000)}});
  };
}

LogSink FileReportWriter::log_sink(LogSink previous) {
  return [this, previous](LogLevel level, std::string_view text) {
    if (previous) previous(level, text);
    append({{"type", "log"}, {"level", to_string(level)}, {"text", std::string(text.substr(0, 65536))}});
  };
}

void FileReportWriter::metrics(int64_t step, const nlohmann::json& values) {
  append({{"type", "metrics"}, {"step", step}, {"values", values}});
}

void FileReportWriter::finish(JobState state, const std::string& error_code, const std::string& message,
                              const nlohmann::json& result) {
  nlohmann::json line = {{"type", "result"}, {"state", to_string(state)}};
  if (!error_code.empty()) line["error_code"] = error_code.substr(0, 100);
  if (!message.empty()) line["message"] = message.substr(0, 10000);
  if (result.is_object()) line["result"] = result;
  append(std::move(line));
  std::lock_guard<std::mutex> lock(mutex_);
  if (::fsync(fd_) != 0 || failed_writes_ > 0)
    std::fprintf(stderr, "mugv-worker: %s: %d event line(s) could not be written; fsync: %s\n", path_.c_str(),
                 failed_writes_, std::strerror(errno));
}

std::vector<nlohmann::json> EventsFileTail::read_new() {
  std::vector<nlohmann::json> out;
  std::ifstream in(file_, std::ios::binary);
  if (!in) return out;
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  if (size < offset_) {  // replaced by a new attempt: start over
    offset_ = 0;
    partial_.clear();
  }
  if (size == offset_) return out;
  in.seekg(static_cast<std::streamoff>(offset_));
  std::string chunk(size - offset_, '\0');
  in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  chunk.resize(static_cast<size_t>(in.gcount()));
  offset_ += chunk.size();
  partial_ += chunk;
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = partial_.substr(start, nl - start);
    if (trim(line).empty()) continue;
    nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    if (event.is_discarded() || !event.is_object() || !event.contains("type") || !event["type"].is_string())
      event = {{"type", "log"},
               {"level", "warning"},
               {"text", cat(file_.string(), ": unreadable event line: ", line.substr(0, 200))}};
    out.push_back(std::move(event));
  }
  partial_.erase(0, start);
  return out;
}

}  // namespace mugv
