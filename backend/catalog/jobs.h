#pragma once
// The durable job queue and each job's event log. The server enqueues, claims and updates jobs;
// workers append events; clients list them. Every call is one transaction, so several processes can
// share the queue: claim_next_job hands each queued job to exactly one caller.
//
// Job lifecycle (update_job_state refuses any other transition with Error(conflict)):
//
//   queued ──► starting ──► running ──► succeeded (final)
//     ▲  │         │         ▲   │
//     │  │         │         │   ▼
//     │  │         │         paused
//     │  ▼         ▼         (starting, running, paused may all end as:)
//     └── cancelled | failed | interrupted      interrupted = worker lost (crash, OOM, node gone)
//
//   queued    ──► starting, cancelled
//   starting  ──► running, failed, cancelled, interrupted
//   running   ──► paused, succeeded, failed, cancelled, interrupted
//   paused    ──► running, failed, cancelled, interrupted
//   cancelled, failed, interrupted ──► queued   (retry; attempts counts the starts)
//
// Queue order: highest priority first, then lowest queue_position, then id. New jobs go to the end
// (position = largest so far + 1). Every state change also appends a "state" event.
//
// Dependencies: a job may depend on earlier jobs (Job::depends_on, fixed when it is queued). It is handed out
// (next_queued_job, claim_next_job, list_ready_jobs) only once every dependency has succeeded; until then it
// stays queued and keeps its place, and jobs behind it that are ready run first.
//   - waiting: a queued job's dependencies that have not succeeded yet are its Job::waiting_on.
//   - blocked: a dependency that ended failed or interrupted does not take its dependents down; they stay
//     queued, reported in Job::blocked_by, and go on once a retry of the dependency succeeds (as Slurm's
//     afterok keeps a job pending). A cancelled dependency blocks the same way (a retried dependent of a
//     cancelled job waits for that job's retry).
//   - cancelled: a job that enters cancelled (by a client's cancel, or from its executor) cancels its queued
//     dependents, and theirs, in the same transaction; each gets a "state" event with "cancelled_by": the job
//     whose cancellation caused it. Retrying such a dependent queues it to wait again.
// Dependencies cannot form a cycle: a job can only depend on jobs that exist before it. A job that others
// depend on cannot be deleted.

#include "catalog/catalog.h"
#include "core/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class JobKind {
  unknown = 0,
  curate,
  encode,
  train,
  generate,
  export_,
  make_dataset,
  import,
  caption,
  train_vae,
  eval,
  model  // edits of a run's weights and their measurement: grow, validation loss
};
enum class JobState {
  unknown = 0,
  queued,
  starting,
  running,
  paused,
  succeeded,
  failed,
  cancelled,
  interrupted
};

// JobKind::export_ reads and writes as "export".
const char* to_string(JobKind kind);
std::optional<JobKind> job_kind_from_string(std::string_view name);
const char* to_string(JobState state);
std::optional<JobState> job_state_from_string(std::string_view name);

// True for succeeded, failed, cancelled and interrupted.
[[nodiscard]] bool is_terminal(JobState state);
[[nodiscard]] bool job_transition_allowed(JobState from, JobState to);

struct Job {
  int64_t id = 0;
  JobKind kind = JobKind::unknown;
  JobState state = JobState::queued;
  int priority = 0;  // higher runs first
  int64_t queue_position = 0;
  nlohmann::json params = nlohmann::json::object();
  std::optional<int64_t> run_id;
  int64_t created_at_ms = 0;
  std::optional<int64_t> started_at_ms;   // first entry into starting in the latest attempt
  std::optional<int64_t> finished_at_ms;  // entry into a terminal state
  std::optional<int> exit_code;
  std::optional<ErrorCode> error_code;
  std::string error_message;
  std::optional<int64_t> worker_pid;
  std::string host;
  int attempts = 0;
  std::vector<int64_t> depends_on;  // jobs that must succeed before this one starts, ascending
  // Read from the dependencies' states, for a queued job (empty in any other state): those that have not
  // succeeded yet, and the ones among them that ended failed, interrupted or cancelled (a retry of theirs
  // lets this job go on).
  std::vector<int64_t> waiting_on;
  std::vector<int64_t> blocked_by;
};

struct JobEvent {
  int64_t id = 0;  // increases across all jobs: a reader resumes with "events since id"
  int64_t job_id = 0;
  int64_t time_ms = 0;
  std::string type;  // "state", "progress", "log", "metrics", ...
  nlohmann::json payload = nlohmann::json::object();
};

// Details recorded with a state change; unset members leave the job's fields as they are.
struct JobStateChange {
  std::optional<int> exit_code;
  std::optional<ErrorCode> error_code;
  std::string error_message;
  std::optional<int64_t> worker_pid;
  std::string host;
};

// Queues a job of job.kind with job.params, job.run_id, job.priority and job.depends_on (duplicates dropped;
// other members are assigned). Error(invalid_argument) for an unknown kind, Error(not_found) for a missing
// run or a dependency that does not exist (naming its id).
[[nodiscard]] Job enqueue_job(Catalog& catalog, Job job);
[[nodiscard]] std::optional<Job> get_job(Catalog& catalog, int64_t id);
// Jobs in `state` (all when nullopt) in queue order.
[[nodiscard]] std::vector<Job> list_jobs(Catalog& catalog, std::optional<JobState> state = std::nullopt);
struct JobTransition {
  Job job;                                // the job after the change
  std::vector<Job> cancelled_dependents;  // queued dependents cancelled with it (entering cancelled), by id
};
// Moves the job to `to`, stamping started_at_ms (entering starting, attempts + 1) and finished_at_ms
// (entering a terminal state); re-queueing clears the previous attempt's outcome. Entering cancelled also
// cancels the job's queued dependents (lifecycle above), in the same transaction. Error(not_found),
// Error(conflict) for a transition the lifecycle does not allow.
JobTransition transition_job(Catalog& catalog, int64_t id, JobState to, const JobStateChange& change = {});
// transition_job's updated job, for callers that need not tell anyone about the dependents.
Job update_job_state(Catalog& catalog, int64_t id, JobState to, const JobStateChange& change = {});
// Queued jobs whose dependencies have all succeeded, in queue order.
[[nodiscard]] std::vector<Job> list_ready_jobs(Catalog& catalog);
// The job that would run next: the first ready one; nullopt when none is.
[[nodiscard]] std::optional<Job> next_queued_job(Catalog& catalog);
// Atomically takes the next ready job and moves it to starting for the worker `worker_pid` on `host`;
// nullopt when none is ready.
[[nodiscard]] std::optional<Job> claim_next_job(Catalog& catalog, int64_t worker_pid, std::string_view host);
void set_job_priority(Catalog& catalog, int64_t id, int priority);
void set_job_queue_position(Catalog& catalog, int64_t id, int64_t queue_position);
// False when there is no such job; Error(conflict) naming the dependents when other jobs depend on it.
bool delete_job(Catalog& catalog, int64_t id);

// Error(not_found) for a missing job.
JobEvent append_job_event(Catalog& catalog, int64_t job_id, std::string_view type,
                          const nlohmann::json& payload);
// The job's events with id > after_event_id, oldest first, at most `limit` (0: all).
[[nodiscard]] std::vector<JobEvent> list_job_events(Catalog& catalog, int64_t job_id,
                                                    int64_t after_event_id = 0, int64_t limit = 0);
// Events of all jobs with id > after_event_id, oldest first: what a client missed while away.
[[nodiscard]] std::vector<JobEvent> list_events_since(Catalog& catalog, int64_t after_event_id,
                                                      int64_t limit = 0);

}  // namespace mugv
