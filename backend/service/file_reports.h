#pragma once
// File reporting: how a worker on a cluster node that cannot reach the server reports anyway. The worker
// appends one JSON object per line to <report dir>/events.jsonl in the shared job folder; the server tails
// the file and publishes what it reads exactly as it publishes a connected worker's messages.
//
//   {"type":"progress","stage":"curate","done":3,"total":10,"rate":1.5,"eta_s":4.6,"unit":"files","detail":"..."}
//   {"type":"metrics","step":12,"values":{"loss":0.41,...}}
//   {"type":"log","level":"info","text":"..."}
//   {"type":"result","state":"succeeded"|"failed"|"cancelled","error_code":"...","message":"...","result":{...}}
//
// Every line goes out in one write() on an O_APPEND descriptor, so a reader sees whole lines or a trailing
// partial line it keeps for later, never an interleaving; the result line is fsynced before the worker exits.
// Previews are not written (frames are too large for a line; file-mode jobs have no live preview).

#include "catalog/jobs.h"
#include "core/log.h"
#include "core/progress.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace mugv {

// <dir>/events.jsonl
std::filesystem::path events_file(const std::filesystem::path& report_dir);

// The worker side. Thread-safe: the job may report from any thread.
class FileReportWriter {
 public:
  // Creates `report_dir` and opens its events file for appending; Error(io) naming the file when it cannot.
  explicit FileReportWriter(const std::filesystem::path& report_dir);
  ~FileReportWriter();
  FileReportWriter(const FileReportWriter&) = delete;
  FileReportWriter& operator=(const FileReportWriter&) = delete;

  // One event line (a "time_ms" member is added). Write failures are counted, not thrown: losing a progress
  // line must not fail the job; the result line's failure is logged by finish().
  void append(nlohmann::json event);
  // Progress lines at most every `interval` (and always the last one), like the socket link's.
  ProgressFn progress_fn(std::chrono::milliseconds interval = std::chrono::milliseconds(500));
  // Log lines go to the file and to `previous` (the worker's stderr, i.e. the Slurm log).
  LogSink log_sink(LogSink previous);
  void metrics(int64_t step, const nlohmann::json& values);
  // Appends the result line and fsyncs the file.
  void finish(JobState state, const std::string& error_code = {}, const std::string& message = {},
              const nlohmann::json& result = nullptr);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_progress_{};
  int failed_writes_ = 0;
};

// The server side: reads what was appended since the last call. Not thread-safe (one reader, the server
// loop).
class EventsFileTail {
 public:
  explicit EventsFileTail(std::filesystem::path file) : file_(std::move(file)) {}
  // Complete new lines, parsed. A missing file is no lines (the job has not started yet); a line that is not
  // a JSON object comes back as a warning log event naming the file, so damage is seen, not skipped.
  std::vector<nlohmann::json> read_new();
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  uint64_t offset_ = 0;
  std::string partial_;
};

}  // namespace mugv
