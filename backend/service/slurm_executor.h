#pragma once
// The server's Slurm executor: a queued job whose params say {"executor": "slurm", "cluster": NAME} (optional
// "nodes", "tasks_per_node", "gpus_per_node", and "array": N for a sharded job) is not forked here but
// submitted with sbatch on the named cluster profile (cluster_profiles.h; "default" is built in: the Slurm of
// the server's machine), then followed through Slurm until it ends.
//
// clang-format off
//   queued ─► starting (sbatch; Slurm PENDING) ─► running (RUNNING) ─► succeeded (COMPLETED)
//                │                                   ├─► failed (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...)
//                ├─► failed (sbatch refused: its own message)  └─► cancelled (CANCELLED, after cancel(): scancel)
//                └─► cancelled (cancel() while PENDING)
// clang-format on
//
// The job folder is <profile shared_dir>/slurm-jobs/<job id>/, seen by the server and the nodes at the same
// path: job.json (the command the worker runs), job.sbatch (the script), Slurm's output slurm-<id>.out
// (arrays: slurm-<id>_<task>.out), and events.jsonl (arrays: task-<i>/events.jsonl) which the worker
// (`mugv-worker --job-file job.json --report-dir DIR`) appends to and poll() tails into the server's events.
// Every rank of a multi-rank job runs the command (srun starts one worker per rank; the command finds its
// rank in Slurm's environment); rank 0 reports. A profile with report = "tcp" adds a live link: the folder
// also holds link.json (mode 0600, remote_link.h), job.json says "link": true, and rank 0 connects back to
// the server with it for previews and controls (not for array tasks, which report through files alone).
// A paused job that Slurm ends is resumed in the catalog first (paused -> running -> its end).
//
// The Slurm job id is stored in the catalog as a "slurm" event of the job ({slurm_job, cluster, dir, attempt,
// array}), so a restarted server re-attaches to jobs still in Slurm (reattach()) instead of interrupting
// them.
//
// Threading: every method is called from the server's loop thread only. Slurm's commands (sbatch, scontrol,
// sacct, scancel, possibly through ssh) run on one helper thread with bounded timeouts; their outcomes are
// applied on the loop thread by poll(), so the catalog is never touched from two threads and the loop never
// waits on Slurm.

#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "service/cluster_profiles.h"
#include "service/remote_link.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

// How a job runs as a Slurm array of `shards` tasks: the parameter values task i adds to the job's own, and
// the job the server queues once every task succeeded (e.g. `curate merge` of the shard catalogs), or null.
struct ShardPlan {
  std::vector<nlohmann::json> task_values;  // one object per task
  nlohmann::json follow_up;                 // {"kind": ..., "params": {...}} or null
};
// Knows which commands can be sharded and how (the command layer: app/mugv/cmd_serve.cpp). Throws Error
// naming the command when a job cannot run as an array.
using ShardPlanner = std::function<ShardPlan(const std::string& kind, const nlohmann::json& params,
                                             int shards, const std::filesystem::path& job_dir)>;

// What a job's params ask of the Slurm executor; nullopt for a local job.
struct SlurmRequest {
  std::string cluster;
  int nodes = 0;                     // 0: the profile's
  int tasks_per_node = 0;            // 0: the profile's
  int array = 0;                     // 0: one job; N: an array of N tasks (ShardPlanner)
  std::optional<int> gpus_per_node;  // absent: the profile's; 0: no --gpus-per-node line
};
// Error(invalid_argument) naming the field for a malformed one (an unknown executor, a missing cluster).
[[nodiscard]] std::optional<SlurmRequest> slurm_request_of(const nlohmann::json& params);

// <shared_dir>/slurm-jobs/<job id>
std::filesystem::path slurm_job_dir(const ClusterProfile& profile, int64_t job_id);

class SlurmExecutor {
 public:
  // What the executor needs from the server: state changes that are recorded and published, events published
  // to subscribers, and queueing a follow-up job (published as queued).
  struct Hooks {
    std::function<Job(int64_t job, JobState to, const JobStateChange& change)> transition;
    std::function<void(int64_t job, const std::string& subtopic, nlohmann::json payload)> publish;
    std::function<Job(Job job)> enqueue;
    // Live links (profiles with report = "tcp"; remote_link.h), all optional (without them such profiles
    // are refused). check_link throws Error naming the profile file and key when this server cannot take
    // its workers' connections; open_link makes the grant for a job's new submission and admits its worker;
    // readmit_link admits a stored grant again (a restarted server); close_link forgets the job's worker.
    std::function<void(const ClusterProfile& profile)> check_link;
    std::function<RemoteLinkGrant(int64_t job, const ClusterProfile& profile)> open_link;
    std::function<void(int64_t job, const RemoteLinkGrant& grant)> readmit_link;
    std::function<void(int64_t job)> close_link;
  };

  // `catalog` must outlive the executor.
  SlurmExecutor(Catalog& catalog, std::filesystem::path home, std::filesystem::path worker_executable,
                ShardPlanner planner, Hooks hooks);
  ~SlurmExecutor();  // stops the helper thread (after the command it runs, if any, returns)
  SlurmExecutor(const SlurmExecutor&) = delete;
  SlurmExecutor& operator=(const SlurmExecutor&) = delete;

  // Checks a submission before it is queued: the profile loads, the request fits it, an array can be planned.
  // Throws Error naming the profile file and key, or the parameter.
  void check(const std::string& kind, const nlohmann::json& params) const;
  // Takes a queued job: queued -> starting, writes its folder and submits it (sbatch runs on the helper
  // thread).
  void start(const Job& job);
  // Asks Slurm to cancel (scancel; right after sbatch when it is still running). The job becomes cancelled
  // when Slurm says so. False when the executor does not track the job.
  bool cancel(int64_t job_id);
  bool tracks(int64_t job_id) const;
  // On server start, for a starting/running job of this executor: follows it again when its Slurm id is in
  // the catalog (true); false when it never reached Slurm (the caller interrupts it).
  bool reattach(const Job& job);
  // Applies finished Slurm commands, queries Slurm every ~2 s per job, and publishes what the workers
  // appended to their events files. Call often (every loop turn); it never blocks on Slurm.
  void poll();
  // Slurm's output files of the job's latest submission, concatenated with a header line each ("" when none).
  [[nodiscard]] std::string slurm_output(const Job& job) const;
  size_t tracked_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
