#include "parallel/slurm.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/shell_quote.h"
#include "core/strings.h"

#include <chrono>

namespace mugv {
namespace {

constexpr std::chrono::seconds kCommandTimeout{60};

// #SBATCH values are read by sbatch, not a shell: refuse anything outside a plain alphabet rather than quote.
void check_directive(const std::string& field, const std::string& value, const std::string& extra_allowed) {
  for (char c : value) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '-' || c == '.' || extra_allowed.find(c) != std::string::npos;
    if (!plain)
      throw Error(ErrorCode::invalid_argument, field,
                  cat("'", value, "' holds a character Slurm directives cannot take safely ('",
                      std::string(1, c), "')"));
  }
}

void check_path_directive(const std::string& field, const fs::path& path) {
  const std::string text = path.string();
  if (text.find('\n') != std::string::npos || text.find(' ') != std::string::npos)
    throw Error(ErrorCode::invalid_argument, field, cat("'", text, "' must not contain spaces or newlines"));
}

std::string field_of(const std::string& line, const std::string& key) {
  // scontrol -o: "JobId=5 JobName=x ... JobState=RUNNING Reason=None ..." (values without spaces for these
  // keys)
  const std::string needle = key + "=";
  size_t pos = 0;
  while ((pos = line.find(needle, pos)) != std::string::npos) {
    if (pos == 0 || line[pos - 1] == ' ') {
      size_t end = line.find(' ', pos);
      return line.substr(pos + needle.size(),
                         end == std::string::npos ? std::string::npos : end - pos - needle.size());
    }
    pos += needle.size();
  }
  return {};
}

}  // namespace

std::string sbatch_script(const SlurmJob& job) {
  if (job.command.empty()) throw Error(ErrorCode::invalid_argument, "slurm job", "no command to run");
  if (job.nodes < 1)
    throw Error(ErrorCode::invalid_argument, "--nodes", cat(job.nodes, " must be at least 1"));
  if (job.tasks_per_node < 1)
    throw Error(ErrorCode::invalid_argument, "--tasks-per-node",
                cat(job.tasks_per_node, " must be at least 1"));
  check_directive("--job-name", job.name, "");
  check_directive("--partition", job.partition, ",");
  check_directive("--account", job.account, "");
  check_directive("--time", job.time, ":");
  check_path_directive("--output", job.output);
  check_path_directive("--chdir", job.working_dir);
  for (const auto& [name, value] : job.environment) check_directive("environment", name, "");

  std::string s = "#!/bin/bash\n";
  s += cat("#SBATCH --job-name=", job.name.empty() ? "mugv" : job.name, "\n");
  s += cat("#SBATCH --nodes=", job.nodes, "\n");
  s += cat("#SBATCH --ntasks-per-node=", job.tasks_per_node, "\n");
  if (job.gpus_per_node > 0) s += cat("#SBATCH --gpus-per-node=", job.gpus_per_node, "\n");
  if (job.cpus_per_task > 0) s += cat("#SBATCH --cpus-per-task=", job.cpus_per_task, "\n");
  if (!job.partition.empty()) s += cat("#SBATCH --partition=", job.partition, "\n");
  if (!job.account.empty()) s += cat("#SBATCH --account=", job.account, "\n");
  if (!job.time.empty()) s += cat("#SBATCH --time=", job.time, "\n");
  if (!job.output.empty()) s += cat("#SBATCH --output=", job.output.string(), "\n");
  if (!job.working_dir.empty()) s += cat("#SBATCH --chdir=", job.working_dir.string(), "\n");
  s += "set -euo pipefail\n";
  for (const auto& line : job.setup_lines) s += line + "\n";
  for (const auto& [name, value] : job.environment) s += cat("export ", name, "=", shell_quote(value), "\n");
  s += "# Each task takes its rank and the rendezvous (first node of the job) from Slurm's environment.\n";
  s += "srun --kill-on-bad-exit=1 " + shell_join(job.command) + "\n";
  return s;
}

std::string submit_slurm_job(const SlurmJob& job, const fs::path& script_path) {
  const std::string script = sbatch_script(job);
  std::error_code ec;
  fs::create_directories(script_path.parent_path(), ec);
  write_text_atomic(script_path, script);
  ProcessResult r = run_process({"sbatch", "--parsable", script_path.string()}, kCommandTimeout);
  if (r.timed_out) throw Error(ErrorCode::timeout, "sbatch", "did not answer within 60 s");
  if (r.exit_code != 0) {
    std::string why = trim(r.err.empty() ? r.out : r.err);
    throw Error(ErrorCode::invalid_argument, "sbatch", cat("refused ", script_path.string(), ": ", why));
  }
  std::string id = trim(r.out);
  if (auto semicolon = id.find(';'); semicolon != std::string::npos)
    id = id.substr(0, semicolon);  // "id;cluster"
  if (id.empty() || id.find_first_not_of("0123456789_") != std::string::npos)
    throw Error(ErrorCode::protocol, "sbatch", cat("unexpected answer '", trim(r.out), "'"));
  return id;
}

bool SlurmJobState::finished() const {
  for (const char* terminal : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                               "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
    if (starts_with(state, terminal)) return true;
  return false;
}

std::optional<SlurmJobState> query_slurm_job(const std::string& job_id) {
  check_directive("job id", job_id, "");
  ProcessResult r = run_process({"scontrol", "show", "job", "-o", job_id}, kCommandTimeout);
  if (r.exit_code == 0 && !trim(r.out).empty()) {
    const std::string line = trim(r.out);
    SlurmJobState s{field_of(line, "JobState"), field_of(line, "ExitCode"), field_of(line, "Reason"),
                    field_of(line, "NodeList")};
    if (!s.state.empty()) return s;
  }
  // scontrol forgets finished jobs after MinJobAge; accounting (when configured) remembers them.
  ProcessResult acct = run_process({"sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,NodeList"},
                                   kCommandTimeout);
  if (acct.exit_code == 0) {
    auto lines = split(trim(acct.out), '\n');
    if (!lines.empty() && !trim(lines[0]).empty()) {
      auto cols = split(trim(lines[0]), '|');
      SlurmJobState s;
      s.state = cols.size() > 0 ? split(cols[0], ' ')[0] : "";
      s.exit_code = cols.size() > 1 ? cols[1] : "";
      s.node_list = cols.size() > 2 ? cols[2] : "";
      if (!s.state.empty()) return s;
    }
  }
  return std::nullopt;
}

void cancel_slurm_job(const std::string& job_id) {
  check_directive("job id", job_id, "");
  ProcessResult r = run_process({"scancel", job_id}, kCommandTimeout);
  if (r.exit_code != 0)
    throw Error(ErrorCode::invalid_argument, "scancel",
                cat("job ", job_id, ": ", trim(r.err.empty() ? r.out : r.err)));
}

}  // namespace mugv
