#include "catalog/jobs.h"

#include "catalog/detail.h"

#include <algorithm>

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<JobKind, 12> kKindNames{{
    {JobKind::unknown, "unknown"},
    {JobKind::curate, "curate"},
    {JobKind::encode, "encode"},
    {JobKind::train, "train"},
    {JobKind::generate, "generate"},
    {JobKind::export_, "export"},
    {JobKind::make_dataset, "make_dataset"},
    {JobKind::import, "import"},
    {JobKind::caption, "caption"},
    {JobKind::train_vae, "train_vae"},
    {JobKind::eval, "eval"},
    {JobKind::model, "model"},
}};

constexpr EnumNames<JobState, 9> kStateNames{{
    {JobState::unknown, "unknown"},
    {JobState::queued, "queued"},
    {JobState::starting, "starting"},
    {JobState::running, "running"},
    {JobState::paused, "paused"},
    {JobState::succeeded, "succeeded"},
    {JobState::failed, "failed"},
    {JobState::cancelled, "cancelled"},
    {JobState::interrupted, "interrupted"},
}};

// The last column lists the job's dependencies with their states, "12:succeeded,13:failed".
constexpr const char* kJobColumns =
    "SELECT id, kind, state, priority, queue_position, params_json, run_id, created_at_ms, started_at_ms, "
    "finished_at_ms, exit_code, error_code, error_message, worker_pid, host, attempts, "
    "(SELECT group_concat(d.depends_on || ':' || p.state) FROM job_dependencies d JOIN jobs p ON p.id = "
    "d.depends_on WHERE d.job_id = jobs.id) FROM jobs ";
constexpr const char* kQueueOrder = " ORDER BY priority DESC, queue_position, id";
// Queued jobs with no dependency left that has not succeeded.
constexpr const char* kReady =
    "WHERE state = 'queued' AND NOT EXISTS (SELECT 1 FROM job_dependencies d JOIN jobs p ON p.id = "
    "d.depends_on WHERE d.job_id = jobs.id AND p.state <> 'succeeded')";
constexpr const char* kEventColumns = "SELECT id, job_id, time_ms, type, payload_json FROM job_events ";

Job read_job(Catalog& catalog, const sqlite::Statement& s) {
  Job j;
  j.id = s.int64(0);
  j.kind = enum_column(s, 1, kKindNames);
  j.state = enum_column(s, 2, kStateNames);
  j.priority = s.int32(3);
  j.queue_position = s.int64(4);
  j.params = json_column(catalog, s, 5, cat("job ", j.id));
  j.run_id = s.optional_int64(6);
  j.created_at_ms = s.int64(7);
  j.started_at_ms = s.optional_int64(8);
  j.finished_at_ms = s.optional_int64(9);
  if (auto code = s.optional_int64(10)) j.exit_code = static_cast<int>(*code);
  if (const std::string code = s.text(11); !code.empty())
    j.error_code = error_code_from_string(code).value_or(ErrorCode::unknown);
  j.error_message = s.text(12);
  j.worker_pid = s.optional_int64(13);
  j.host = s.text(14);
  j.attempts = s.int32(15);
  for (const std::string& item : split(s.text(16), ',')) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) continue;
    const int64_t dependency = std::stoll(item.substr(0, colon));
    const JobState state = enum_value(kStateNames, item.substr(colon + 1)).value_or(JobState::unknown);
    j.depends_on.push_back(dependency);
    if (j.state != JobState::queued || state == JobState::succeeded) continue;
    j.waiting_on.push_back(dependency);
    if (is_terminal(state)) j.blocked_by.push_back(dependency);
  }
  for (auto* ids : {&j.depends_on, &j.waiting_on, &j.blocked_by}) std::sort(ids->begin(), ids->end());
  return j;
}

JobEvent read_event(Catalog& catalog, const sqlite::Statement& s) {
  JobEvent e;
  e.id = s.int64(0);
  e.job_id = s.int64(1);
  e.time_ms = s.int64(2);
  e.type = s.text(3);
  e.payload = json_column(catalog, s, 4, cat("job event ", e.id));
  return e;
}

Job require_job(Catalog& catalog, int64_t id) {
  auto job = get_job(catalog, id);
  if (!job) throw_not_found(catalog, cat("job ", id));
  return *job;
}

std::string joined_ids(const std::vector<int64_t>& ids) {
  std::string text;
  for (int64_t id : ids) text += cat(text.empty() ? "" : ", ", id);
  return text;
}

// Writes `job`'s move to `to` and its "state" event (with `extra` in the payload), inside the caller's
// transaction; the transition must be allowed.
Job write_state(Catalog& catalog, const Job& job, JobState to, const JobStateChange& change,
                const nlohmann::json& extra) {
  const int64_t now = now_ms();
  Job next = job;
  next.state = to;
  if (to == JobState::queued) {
    next.started_at_ms.reset();
    next.finished_at_ms.reset();
    next.worker_pid.reset();
    next.exit_code.reset();
    next.error_code.reset();
    next.error_message.clear();
    next.host.clear();
  }
  if (to == JobState::starting) {
    next.started_at_ms = now;
    ++next.attempts;
  }
  if (is_terminal(to)) next.finished_at_ms = now;
  if (change.exit_code) next.exit_code = change.exit_code;
  if (change.error_code) next.error_code = change.error_code;
  if (!change.error_message.empty()) next.error_message = change.error_message;
  if (change.worker_pid) next.worker_pid = change.worker_pid;
  if (!change.host.empty()) next.host = change.host;
  const std::string error_code_text = next.error_code.has_value() ? to_string(next.error_code.value()) : "";
  catalog
      .prepare(
          "UPDATE jobs SET state = ?2, started_at_ms = ?3, finished_at_ms = ?4, exit_code = ?5, error_code = "
          "?6, "
          "error_message = ?7, worker_pid = ?8, host = ?9, attempts = ?10 WHERE id = ?1")
      .bind_all(job.id, to, next.started_at_ms, next.finished_at_ms, next.exit_code, error_code_text,
                next.error_message, next.worker_pid, next.host, next.attempts)
      .run();
  nlohmann::json payload{{"from", to_string(job.state)}, {"to", to_string(to)}};
  if (!error_code_text.empty()) payload["error_code"] = error_code_text;
  if (!next.error_message.empty() && is_terminal(to)) payload["error_message"] = next.error_message;
  if (next.exit_code.has_value()) payload["exit_code"] = next.exit_code.value();
  payload.update(extra);
  append_job_event(catalog, job.id, "state", payload);
  return require_job(catalog, job.id);
}

// Cancels the queued jobs that depend on `cancelled`, directly or through other queued dependents.
std::vector<Job> cancel_dependents(Catalog& catalog, int64_t cancelled) {
  std::vector<int64_t> ids;
  {
    auto s = catalog.prepare(
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION SELECT d.job_id FROM job_dependencies d JOIN doomed "
        "ON "
        "d.depends_on = doomed.id JOIN jobs j ON j.id = d.job_id WHERE j.state = 'queued') "
        "SELECT id FROM doomed WHERE id <> ?1 ORDER BY id");
    s.bind_all(cancelled);
    while (s.step()) ids.push_back(s.int64(0));
  }
  std::vector<Job> out;
  for (int64_t id : ids) {
    JobStateChange change;
    change.error_message = cat("job ", cancelled, " was cancelled, and this job depends on it");
    out.push_back(write_state(catalog, require_job(catalog, id), JobState::cancelled, change,
                              {{"cancelled_by", cancelled}}));
  }
  return out;
}

}  // namespace

const char* to_string(JobKind kind) {
  return enum_name(kKindNames, kind);
}
std::optional<JobKind> job_kind_from_string(std::string_view name) {
  return enum_value(kKindNames, name);
}
const char* to_string(JobState state) {
  return enum_name(kStateNames, state);
}
std::optional<JobState> job_state_from_string(std::string_view name) {
  return enum_value(kStateNames, name);
}

bool is_terminal(JobState state) {
  return state == JobState::succeeded || state == JobState::failed || state == JobState::cancelled ||
         state == JobState::interrupted;
}

bool job_transition_allowed(JobState from, JobState to) {
  using S = JobState;
  switch (from) {
    case S::queued:
      return to == S::starting || to == S::cancelled;
    case S::starting:
      return to == S::running || to == S::failed || to == S::cancelled || to == S::interrupted;
    case S::running:
      return to == S::paused || to == S::succeeded || to == S::failed || to == S::cancelled ||
             to == S::interrupted;
    case S::paused:
      return to == S::running || to == S::failed || to == S::cancelled || to == S::interrupted;
    case S::failed:
    case S::cancelled:
    case S::interrupted:
      return to == S::queued;
    case S::succeeded:
    case S::unknown:
      return false;
  }
  return false;
}

Job enqueue_job(Catalog& catalog, Job job) {
  const std::string file = catalog.path().string();
  if (job.kind == JobKind::unknown) throw Error(ErrorCode::invalid_argument, file, "a job needs a kind");
  Transaction transaction(catalog, TransactionMode::write);
  if (job.run_id) {
    auto run = catalog.prepare("SELECT 1 FROM runs WHERE id = ?1");
    run.bind_all(*job.run_id);
    if (!run.step()) throw_not_found(catalog, cat("run ", *job.run_id));
  }
  {
    auto last = catalog.prepare("SELECT coalesce(max(queue_position), 0) FROM jobs");
    job.queue_position = last.step() ? last.int64(0) + 1 : 1;
  }
  std::sort(job.depends_on.begin(), job.depends_on.end());
  job.depends_on.erase(std::unique(job.depends_on.begin(), job.depends_on.end()), job.depends_on.end());
  for (int64_t dependency : job.depends_on) {
    auto exists = catalog.prepare("SELECT 1 FROM jobs WHERE id = ?1");
    exists.bind_all(dependency);
    if (!exists.step())
      throw Error(ErrorCode::not_found, file, cat("depends_on: job ", dependency, " does not exist"));
  }
  job.state = JobState::queued;
  job.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO jobs (kind, state, priority, queue_position, params_json, run_id, created_at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
      .bind_all(job.kind, job.state, job.priority, job.queue_position, json_text(job.params, "{}"),
                job.run_id, job.created_at_ms)
      .run();
  const int64_t id = catalog.connection().last_insert_id();
  auto edge = catalog.prepare("INSERT INTO job_dependencies (job_id, depends_on) VALUES (?1, ?2)");
  for (int64_t dependency : job.depends_on) {
    edge.reset();
    edge.bind_all(id, dependency).run();
  }
  nlohmann::json payload{{"to", "queued"}};
  if (!job.depends_on.empty()) payload["depends_on"] = job.depends_on;
  append_job_event(catalog, id, "state", payload);
  Job stored = require_job(catalog, id);
  transaction.commit();
  return stored;
}

std::optional<Job> get_job(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kJobColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_job(catalog, s);
}

std::vector<Job> list_jobs(Catalog& catalog, std::optional<JobState> state) {
  auto s = catalog.prepare(cat(kJobColumns, "WHERE ?1 IS NULL OR state = ?1", kQueueOrder));
  s.bind_all(state);
  std::vector<Job> out;
  while (s.step()) out.push_back(read_job(catalog, s));
  return out;
}

JobTransition transition_job(Catalog& catalog, int64_t id, JobState to, const JobStateChange& change) {
  Transaction transaction(catalog, TransactionMode::write);
  const Job job = require_job(catalog, id);
  if (!job_transition_allowed(job.state, to))
    throw Error(ErrorCode::conflict, catalog.path().string(),
                cat("job ", id, " cannot go from ", to_string(job.state), " to ", to_string(to)));
  JobTransition out;
  out.job = write_state(catalog, job, to, change, nlohmann::json::object());
  if (to == JobState::cancelled) out.cancelled_dependents = cancel_dependents(catalog, id);
  transaction.commit();
  return out;
}

Job update_job_state(Catalog& catalog, int64_t id, JobState to, const JobStateChange& change) {
  return transition_job(catalog, id, to, change).job;
}

std::vector<Job> list_ready_jobs(Catalog& catalog) {
  auto s = catalog.prepare(cat(kJobColumns, kReady, kQueueOrder));
  std::vector<Job> out;
  while (s.step()) out.push_back(read_job(catalog, s));
  return out;
}

std::optional<Job> next_queued_job(Catalog& catalog) {
  auto s = catalog.prepare(cat(kJobColumns, kReady, kQueueOrder, " LIMIT 1"));
  if (!s.step()) return std::nullopt;
  return read_job(catalog, s);
}

std::optional<Job> claim_next_job(Catalog& catalog, int64_t worker_pid, std::string_view host) {
  Transaction transaction(catalog, TransactionMode::write);
  auto next = next_queued_job(catalog);
  if (!next) return std::nullopt;
  JobStateChange change;
  change.worker_pid = worker_pid;
  change.host = std::string(host);
  Job claimed = update_job_state(catalog, next->id, JobState::starting, change);
  transaction.commit();
  return claimed;
}

void set_job_priority(Catalog& catalog, int64_t id, int priority) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE jobs SET priority = ?2 WHERE id = ?1").bind_all(id, priority).run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("job ", id));
  transaction.commit();
}

void set_job_queue_position(Catalog& catalog, int64_t id, int64_t queue_position) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE jobs SET queue_position = ?2 WHERE id = ?1").bind_all(id, queue_position).run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("job ", id));
  transaction.commit();
}

bool delete_job(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  {
    auto s = catalog.prepare("SELECT job_id FROM job_dependencies WHERE depends_on = ?1 ORDER BY job_id");
    s.bind_all(id);
    std::vector<int64_t> dependents;
    while (s.step()) dependents.push_back(s.int64(0));
    if (!dependents.empty())
      throw Error(ErrorCode::conflict, catalog.path().string(),
                  cat("job ", id, " cannot be deleted: job(s) ", joined_ids(dependents), " depend on it"));
  }
  catalog.prepare("DELETE FROM jobs WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

JobEvent append_job_event(Catalog& catalog, int64_t job_id, std::string_view type,
                          const nlohmann::json& payload) {
  JobEvent event;
  event.job_id = job_id;
  event.time_ms = now_ms();
  event.type = std::string(type);
  event.payload = payload.is_null() ? nlohmann::json::object() : payload;
  Transaction transaction(catalog, TransactionMode::write);
  {
    auto job = catalog.prepare("SELECT 1 FROM jobs WHERE id = ?1");
    job.bind_all(job_id);
    if (!job.step()) throw_not_found(catalog, cat("job ", job_id));
  }
  catalog.prepare("INSERT INTO job_events (job_id, time_ms, type, payload_json) VALUES (?1, ?2, ?3, ?4)")
      .bind_all(job_id, event.time_ms, event.type, event.payload.dump())
      .run();
  event.id = catalog.connection().last_insert_id();
  transaction.commit();
  return event;
}

std::vector<JobEvent> list_job_events(Catalog& catalog, int64_t job_id, int64_t after_event_id,
                                      int64_t limit) {
  auto s = catalog.prepare(std::string(kEventColumns) + "WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3");
  s.bind_all(job_id, after_event_id, limit > 0 ? limit : int64_t{-1});
  std::vector<JobEvent> out;
  while (s.step()) out.push_back(read_event(catalog, s));
  return out;
}

std::vector<JobEvent> list_events_since(Catalog& catalog, int64_t after_event_id, int64_t limit) {
  auto s = catalog.prepare(std::string(kEventColumns) + "WHERE id > ?1 ORDER BY id LIMIT ?2");
  s.bind_all(after_event_id, limit > 0 ? limit : int64_t{-1});
  std::vector<JobEvent> out;
  while (s.step()) out.push_back(read_event(catalog, s));
  return out;
}

}  // namespace mugv
