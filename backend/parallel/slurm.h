#pragma once
// Slurm batch jobs: the sbatch script of a multi-node run and the commands that submit, query and cancel
// it (sbatch, scontrol, scancel, squeue, sacct, found in PATH; SLURM_CONF is honoured as Slurm does).
//
// The script runs one `srun` step with the job's tasks; each task finds its rank and the rendezvous from
// Slurm's environment (rendezvous.h), so no launcher runs inside the job. Every argument of the command is
// shell-quoted (core/shell_quote.h) and the #SBATCH values are checked against a safe alphabet, so nothing
// in a run name, a prompt or a path can inject shell code or another directive.
// Torch-free; the functions that run Slurm's commands block until the command returns (timeouts below).

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

struct SlurmJob {
  std::string name;  // --job-name
  int nodes = 1;
  int tasks_per_node = 1;
  int gpus_per_node = 0;                           // 0: no --gpus-per-node line
  int cpus_per_task = 0;                           // 0: Slurm's default
  std::string partition, account, time;            // empty: the cluster's defaults
  fs::path output;                                 // --output (may hold %j)
  fs::path working_dir;                            // --chdir; empty: where sbatch runs
  std::map<std::string, std::string> environment;  // exported before srun
  std::vector<std::string> setup_lines;  // cluster-profile lines run first (module load ..., container setup)
  std::vector<std::string> command;      // what every task runs (argv)
};

// The script text. Throws Error(invalid_argument) naming the field for values Slurm would misread
// (a newline in a name, a partition with spaces, nodes < 1) and for an empty command.
[[nodiscard]] std::string sbatch_script(const SlurmJob& job);

// Writes the script to `script_path` and submits it with `sbatch --parsable`. Returns the job id. A refusal
// throws Error(invalid_argument, "sbatch", <sbatch's own message>); no sbatch in PATH throws
// Error(not_found).
[[nodiscard]] std::string submit_slurm_job(const SlurmJob& job, const fs::path& script_path);

struct SlurmJobState {
  std::string state;      // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...
  std::string exit_code;  // "0:0" (code:signal) when known
  std::string reason;     // why it is pending or failed, when Slurm says
  std::string node_list;
  bool finished() const;  // a terminal state
};
// From `scontrol show job -o ID`, falling back to sacct for jobs scontrol has forgotten. nullopt when neither
// knows the job.
[[nodiscard]] std::optional<SlurmJobState> query_slurm_job(const std::string& job_id);
// scancel; Error(invalid_argument) with scancel's message when it refuses.
void cancel_slurm_job(const std::string& job_id);

}  // namespace mugv
