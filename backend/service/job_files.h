#pragma once
// Where a job keeps its files under $MUGV_HOME/jobs/<id>/: the log (the worker's stdout and stderr) and
// result.json, the worker's final report written durably before it exits, so a result is never lost when
// the server is away (restarted, or unreachable from a cluster node).

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
};

void write_job_result(const std::filesystem::path& home, int64_t job_id, const JobResult& result);
// nullopt when the worker wrote none (it died first) or the file is unreadable.
std::optional<JobResult> read_job_result(const std::filesystem::path& home, int64_t job_id);

}  // namespace mugv
