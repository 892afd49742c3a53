#pragma once
// A worker process's connection to the server: hello, heartbeats, progress/metrics/log/preview reports, and
// control messages (cancel, pause, resume, sample-now, save-now) coming back. The socket lives on its own
// I/O thread; every public method is thread-safe, so the job may report from any thread.
//
// Pausing is cooperative: the ProgressFn from progress_fn() blocks while the job is paused (and returns at
// once when it is cancelled), so every long operation that reports progress can be paused without knowing it.

#include "catalog/jobs.h"
#include "core/log.h"
#include "core/progress.h"
#include "media/frame.h"
#include "service/curve_keys.h"
#include "service/protocol.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

// How a worker proves itself. A local worker's token comes from its environment; a Slurm worker with a live
// link (remote_link.h) brings its token and the CURVE keys of a tcp endpoint.
struct WorkerLinkSecrets {
  std::string token;                     // empty: kWorkerTokenEnv (removed from the environment once read)
  std::optional<CurveClientKeys> curve;  // for a tcp:// endpoint
};

class WorkerLink {
 public:
  // Connects and says hello with the job's worker token; throws Error(timeout) naming the endpoint when no
  // welcome arrives in `timeout`, Error(protocol) with the server's words when it refuses.
  WorkerLink(const std::string& endpoint, int64_t job_id,
             std::chrono::milliseconds timeout = std::chrono::milliseconds(10000),
             WorkerLinkSecrets secrets = {});
  ~WorkerLink();
  WorkerLink(const WorkerLink&) = delete;
  WorkerLink& operator=(const WorkerLink&) = delete;

  const CancelToken& cancel_token() const;
  // Reports progress (at most ~10 per second, and always the last one) and is the pause gate.
  ProgressFn progress_fn();
  // The pause gate alone, for a worker that reports its progress elsewhere (a Slurm worker's events file):
  // blocks while the job is paused, returns at once when it is cancelled.
  ProgressFn pause_gate();
  // Forwards log lines to the server (and to the previous sink, i.e. the job's log file).
  LogSink log_sink(LogSink previous);
  void metrics(int64_t step, const nlohmann::json& values);
  void preview(int64_t step, const std::vector<RgbFrame>& frames);
  // True once after the server asked for a sample / a checkpoint now.
  bool take_sample_request();
  bool take_save_request();
  // Sends job_finished and waits (bounded) until it has left the socket.
  void finish(JobState state, const std::string& error_code = {}, const std::string& message = {},
              const nlohmann::json& result = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
