#include "service/job_files.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/strings.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
                                                    {"result", r.result},
                                                    {"worker_token", r.worker_token}});
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
    r.worker_token = j.value("worker_token", "");
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

namespace {
std::filesystem::path worker_token_path(const std::filesystem::path& home, int64_t job_id) {
  return job_dir(home, job_id) / "worker.token";
}
}  // namespace

std::string issue_worker_token(const std::filesystem::path& home, int64_t job_id) {
  const std::string token = random_hex(32);
  const auto path = worker_token_path(home, job_id);
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  const auto staging = path.string() + ".tmp";
  // Created 0600 from the start: the secret is never readable by others, not even for a moment.
  const int fd = ::open(staging.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    throw Error(ErrorCode::io, staging, cat("cannot write the worker token: ", std::strerror(errno)));
  const bool written = ::fchmod(fd, 0600) == 0 &&
                       ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(staging.c_str(), path.c_str()) != 0) {
    ::unlink(staging.c_str());
    throw Error(ErrorCode::io, path.string(), cat("cannot write the worker token: ", std::strerror(errno)));
  }
  return token;
}

std::optional<std::string> read_worker_token(const std::filesystem::path& home, int64_t job_id) {
  std::error_code ec;
  const auto path = worker_token_path(home, job_id);
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  try {
    return trim(read_text_file(path));
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace mugv
