#include "service/job_files.h"

#include "core/json_io.h"
#include "core/paths.h"

namespace mugv {

std::filesystem::path job_dir(const std::filesystem::path& home, int64_t job_id) {
  return home / "jobs" / std::to_string(job_id);
}
std::filesystem::path job_log_path(const std::filesystem::path& home, int64_t job_id) {
  return job_dir(home, job_id) / "log.txt";
}
std::filesystem::path job_result_path(const std::filesystem::path& home, int64_t job_id) {
  return job_dir(home, job_id) / "result.json";
}

void write_job_result(const std::filesystem::path& home, int64_t job_id, const JobResult& r) {
  write_json_atomic(job_result_path(home, job_id), {{"state", to_string(r.state)},
                                                    {"error_code", r.error_code},
                                                    {"message", r.message},
                                                    {"result", r.result}});
}

std::optional<JobResult> read_job_result(const std::filesystem::path& home, int64_t job_id) {
  try {
    std::error_code ec;
    if (!std::filesystem::exists(job_result_path(home, job_id), ec)) return std::nullopt;
    auto j = read_json_file(job_result_path(home, job_id));
    JobResult r;
    r.state = job_state_from_string(j.value("state", "")).value_or(JobState::unknown);
    if (r.state != JobState::succeeded && r.state != JobState::failed && r.state != JobState::cancelled)
      return std::nullopt;
    r.error_code = j.value("error_code", "");
    r.message = j.value("message", "");
    r.result = j.value("result", nlohmann::json());
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace mugv
