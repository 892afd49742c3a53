#pragma once
// Where a job keeps its files under $MUGV_HOME/jobs/<id>/: the log (the worker's stdout and stderr),
// result.json, the worker's final report written durably before it exits, so a result is never lost when
// the server is away (restarted, or unreachable from a cluster node), and worker.token, the secret of the
// job's current worker.
//
// Worker tokens: every spawn of a job's worker gets a fresh random token (in its environment, and in
// worker.token, mode 0600, so that a restarted server can check the workers it adopts). A worker proves
// it runs the job by presenting the token in its hello and heartbeats, and stamps it into result.json.
// A new attempt replaces the token, which fences off a worker of an earlier attempt: its hello, its
// reports and its result file are refused. Clients never see tokens.

#include "catalog/jobs.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>

namespace mugv {

std::filesystem::path job_dir(const std::filesystem::path& home, int64_t job_id);
std::filesystem::path job_log_path(const std::filesystem::path& home, int64_t job_id);
std::filesystem::path job_result_path(const std::filesystem::path& home, int64_t job_id);

struct JobResult {
  JobState state = JobState::unknown;  // succeeded, failed or cancelled
  std::string error_code, message;
  nlohmann::json result;
  std::string worker_token;  // the token of the worker that wrote it ("" for workers without one)
};

// The error code a server answers a worker without the current token with; the worker stops and reports
// nothing more.
inline constexpr const char* kSupersededCode = "superseded";
// The environment variable a spawned worker finds its token in.
inline constexpr const char* kWorkerTokenEnv = "MUGV_WORKER_TOKEN";
// Makes a fresh token for the job's next worker and stores it in worker.token (0600), replacing the
// previous attempt's. Throws Error(io) naming the file when it cannot be written.
[[nodiscard]] std::string issue_worker_token(const std::filesystem::path& home, int64_t job_id);
// The token of the job's current worker; nullopt when none was issued (a worker of an older server).
[[nodiscard]] std::optional<std::string> read_worker_token(const std::filesystem::path& home, int64_t job_id);

void write_job_result(const std::filesystem::path& home, int64_t job_id, const JobResult& result);
// nullopt when the worker wrote none (it died first) or the file is unreadable.
std::optional<JobResult> read_job_result(const std::filesystem::path& home, int64_t job_id);

}  // namespace mugv
