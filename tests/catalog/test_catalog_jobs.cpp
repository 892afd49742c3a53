#include "catalog/jobs.h"

#include "catalog/runs.h"
#include "core/strings.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

namespace {

Job job_of(JobKind kind, int priority = 0) {
  Job j;
  j.kind = kind;
  j.priority = priority;
  return j;
}

}  // namespace

TEST_CASE("jobs run in priority order, then queue position, then id", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  CHECK_FALSE(next_queued_job(catalog));
  const Job a = enqueue_job(catalog, job_of(JobKind::curate));
  const Job b = enqueue_job(catalog, job_of(JobKind::train));
  const Job c = enqueue_job(catalog, job_of(JobKind::generate, 10));
  CHECK(a.state == JobState::queued);
  CHECK(b.queue_position > a.queue_position);

  CHECK(next_queued_job(catalog)->id == c.id);
  set_job_priority(catalog, c.id, 0);
  CHECK(next_queued_job(catalog)->id == a.id);
  set_job_queue_position(catalog, b.id, 0);  // the user drags b to the front
  auto queued = list_jobs(catalog, JobState::queued);
  REQUIRE(queued.size() == 3);
  CHECK(queued[0].id == b.id);
  CHECK(queued[1].id == a.id);
  CHECK(queued[2].id == c.id);

  auto claimed = claim_next_job(catalog, 4242, "node-1");
  REQUIRE(claimed);
  CHECK(claimed->id == b.id);
  CHECK(claimed->state == JobState::starting);
  CHECK(claimed->worker_pid == 4242);
  CHECK(claimed->host == "node-1");
  CHECK(claimed->attempts == 1);
  CHECK(next_queued_job(catalog)->id == a.id);
}

TEST_CASE("job state changes stamp times, record outcomes and follow the lifecycle", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  Run run;
  run.name = "r";
  run.kind = RunKind::pretrain;
  run = create_run(catalog, run);
  Job job = job_of(JobKind::train);
  job.run_id = run.id;
  job.params = {{"preset", "tiny"}, {"steps", 100}};
  job = enqueue_job(catalog, job);
  CHECK(get_job(catalog, job.id)->params["steps"] == 100);
  CHECK(get_job(catalog, job.id)->run_id == run.id);
  CHECK_FALSE(job.started_at_ms);

  job = update_job_state(catalog, job.id, JobState::starting, {std::nullopt, std::nullopt, "", 77, "h"});
  CHECK(job.started_at_ms);
  CHECK(job.attempts == 1);
  job = update_job_state(catalog, job.id, JobState::running);
  CHECK_FALSE(job.finished_at_ms);

  // A finished-looking transition that the lifecycle forbids.
  try {
    (void)update_job_state(catalog, job.id, JobState::queued);
    FAIL("running -> queued must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK_THAT(e.message(), Catch::Contains("running") && Catch::Contains("queued"));
  }

  JobStateChange crash;
  crash.exit_code = 137;
  crash.error_code = ErrorCode::out_of_memory;
  crash.error_message = "worker killed: out of memory at step 40";
  job = update_job_state(catalog, job.id, JobState::failed, crash);
  CHECK(job.finished_at_ms);
  CHECK(*job.finished_at_ms >= *job.started_at_ms);
  CHECK(job.exit_code == 137);
  CHECK(job.error_code == ErrorCode::out_of_memory);
  CHECK(job.error_message == "worker killed: out of memory at step 40");
  CHECK(list_jobs(catalog, JobState::failed).size() == 1);

  // Retry: the previous outcome is cleared, the attempt count is kept.
  job = update_job_state(catalog, job.id, JobState::queued);
  CHECK_FALSE(job.exit_code);
  CHECK_FALSE(job.error_code);
  CHECK_FALSE(job.finished_at_ms);
  job = update_job_state(catalog, job.id, JobState::starting);
  job = update_job_state(catalog, job.id, JobState::running);
  job = update_job_state(catalog, job.id, JobState::paused);
  job = update_job_state(catalog, job.id, JobState::running);
  job = update_job_state(catalog, job.id, JobState::succeeded, {0, std::nullopt, "", std::nullopt, ""});
  CHECK(job.attempts == 2);
  CHECK(job.exit_code == 0);
  CHECK_THROWS_AS(update_job_state(catalog, job.id, JobState::queued), Error);
  CHECK_THROWS_AS(update_job_state(catalog, 999, JobState::running), Error);

  CHECK_FALSE(job_transition_allowed(JobState::queued, JobState::running));
  CHECK(job_transition_allowed(JobState::interrupted, JobState::queued));
  CHECK(is_terminal(JobState::interrupted));
  CHECK_FALSE(is_terminal(JobState::paused));
}

TEST_CASE("job events are appended in order and read back since a given id", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Job a = enqueue_job(catalog, job_of(JobKind::encode));
  const Job b = enqueue_job(catalog, job_of(JobKind::export_));
  // Enqueueing logged one "state" event per job.
  auto a_events = list_job_events(catalog, a.id);
  REQUIRE(a_events.size() == 1);
  CHECK(a_events[0].type == "state");
  CHECK(a_events[0].payload["to"] == "queued");

  std::vector<int64_t> ids;
  for (int i = 1; i <= 5; ++i)
    ids.push_back(append_job_event(catalog, a.id, "progress", {{"done", i}, {"total", 5}}).id);
  (void)append_job_event(catalog, b.id, "log", {{"line", "hello"}});

  auto since = list_job_events(catalog, a.id, ids[1]);
  REQUIRE(since.size() == 3);
  CHECK(since[0].id == ids[2]);
  CHECK(since[0].payload["done"] == 3);
  CHECK(since[0].time_ms > 0);
  CHECK(list_job_events(catalog, a.id, ids[1], 2).size() == 2);
  CHECK(list_job_events(catalog, a.id, ids[4]).empty());

  auto all_since = list_events_since(catalog, ids[3]);
  REQUIRE(all_since.size() == 2);
  CHECK(all_since[1].job_id == b.id);
  CHECK(all_since[1].type == "log");

  (void)update_job_state(catalog, a.id, JobState::cancelled);
  auto last = list_job_events(catalog, a.id, ids[4]);
  REQUIRE(last.size() == 1);
  CHECK(last[0].payload["from"] == "queued");
  CHECK(last[0].payload["to"] == "cancelled");

  CHECK_THROWS_AS(append_job_event(catalog, 999, "log", {}), Error);
  CHECK(delete_job(catalog, a.id));
  CHECK(list_job_events(catalog, a.id).empty());
  // Ids are never reused, so a reader resuming from an old id does not skip new events.
  const Job c = enqueue_job(catalog, job_of(JobKind::curate));
  CHECK(c.id > b.id);
  CHECK(list_job_events(catalog, c.id)[0].id > ids[4]);
}

namespace {

Job after(JobKind kind, std::vector<int64_t> dependencies, int priority = 0) {
  Job j = job_of(kind, priority);
  j.depends_on = std::move(dependencies);
  return j;
}

// Runs the job to `end` the way a worker would (starting, running, then `end`).
void finish(Catalog& catalog, int64_t id, JobState end) {
  (void)update_job_state(catalog, id, JobState::starting);
  (void)update_job_state(catalog, id, JobState::running);
  (void)update_job_state(catalog, id, end);
}

std::vector<int64_t> ids_of(const std::vector<Job>& jobs) {
  std::vector<int64_t> ids;
  for (const Job& j : jobs) ids.push_back(j.id);
  return ids;
}

}  // namespace

TEST_CASE("a job is handed out only once its dependencies succeeded; the queue order is otherwise kept",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Job vae = enqueue_job(catalog, job_of(JobKind::train_vae));
  const Job encode = enqueue_job(catalog, after(JobKind::encode, {vae.id}, /*priority=*/5));
  const Job train = enqueue_job(catalog, after(JobKind::train, {encode.id, vae.id, encode.id}));
  const Job other = enqueue_job(catalog, job_of(JobKind::curate));
  CHECK(train.depends_on == std::vector<int64_t>{vae.id, encode.id});  // sorted, duplicates dropped
  CHECK(get_job(catalog, encode.id)->waiting_on == std::vector<int64_t>{vae.id});
  CHECK(get_job(catalog, train.id)->waiting_on == std::vector<int64_t>{vae.id, encode.id});
  CHECK(get_job(catalog, train.id)->blocked_by.empty());
  CHECK(list_job_events(catalog, train.id)[0].payload["depends_on"] == nlohmann::json{vae.id, encode.id});

  // The encode job has the highest priority but waits; the ready ones keep their order.
  CHECK(ids_of(list_ready_jobs(catalog)) == std::vector<int64_t>{vae.id, other.id});
  CHECK(ids_of(list_jobs(catalog, JobState::queued)) ==
        std::vector<int64_t>{encode.id, vae.id, train.id, other.id});
  auto first = claim_next_job(catalog, 1, "h");
  REQUIRE(first);
  CHECK(first->id == vae.id);
  auto second = claim_next_job(catalog, 2, "h");
  REQUIRE(second);
  CHECK(second->id == other.id);
  CHECK_FALSE(claim_next_job(catalog, 3, "h"));  // the rest waits on the running VAE
  CHECK_FALSE(next_queued_job(catalog));

  (void)update_job_state(catalog, vae.id, JobState::running);
  (void)update_job_state(catalog, vae.id, JobState::succeeded);
  CHECK(get_job(catalog, encode.id)->waiting_on.empty());
  CHECK(get_job(catalog, train.id)->waiting_on == std::vector<int64_t>{encode.id});
  CHECK(next_queued_job(catalog)->id == encode.id);
  CHECK(claim_next_job(catalog, 4, "h")->id == encode.id);
  CHECK_FALSE(claim_next_job(catalog, 5, "h"));
  (void)update_job_state(catalog, encode.id, JobState::running);
  (void)update_job_state(catalog, encode.id, JobState::succeeded);
  const auto last = claim_next_job(catalog, 6, "h");
  REQUIRE(last);
  CHECK(last->id == train.id);
  CHECK(last->depends_on == std::vector<int64_t>{vae.id, encode.id});
  CHECK(last->waiting_on.empty());  // reported for queued jobs only
}

TEST_CASE("a failed dependency blocks its dependents until a retry of it succeeds", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Job make = enqueue_job(catalog, job_of(JobKind::make_dataset));
  const Job import = enqueue_job(catalog, after(JobKind::import, {make.id}));
  const Job curate = enqueue_job(catalog, after(JobKind::curate, {import.id}));

  finish(catalog, make.id, JobState::failed);
  Job blocked = *get_job(catalog, import.id);
  CHECK(blocked.state == JobState::queued);  // not cancelled: the chain can go on after a retry
  CHECK(blocked.waiting_on == std::vector<int64_t>{make.id});
  CHECK(blocked.blocked_by == std::vector<int64_t>{make.id});
  CHECK(get_job(catalog, curate.id)->blocked_by.empty());  // it waits on the import, which is queued
  CHECK_FALSE(next_queued_job(catalog));

  // An interrupted attempt blocks the same way.
  (void)update_job_state(catalog, make.id, JobState::queued);
  CHECK(get_job(catalog, import.id)->blocked_by.empty());
  finish(catalog, make.id, JobState::interrupted);
  CHECK(get_job(catalog, import.id)->blocked_by == std::vector<int64_t>{make.id});

  (void)update_job_state(catalog, make.id, JobState::queued);
  CHECK(next_queued_job(catalog)->id == make.id);
  finish(catalog, make.id, JobState::succeeded);
  CHECK(next_queued_job(catalog)->id == import.id);
  finish(catalog, import.id, JobState::succeeded);
  CHECK(next_queued_job(catalog)->id == curate.id);
}

TEST_CASE("cancelling a job cancels its queued dependents transitively; a retried dependent waits again",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Job a = enqueue_job(catalog, job_of(JobKind::train_vae));
  const Job b = enqueue_job(catalog, after(JobKind::encode, {a.id}));
  const Job c = enqueue_job(catalog, after(JobKind::train, {b.id}));
  const Job d = enqueue_job(catalog, after(JobKind::generate, {c.id, a.id}));
  const Job unrelated = enqueue_job(catalog, job_of(JobKind::curate));
  const Job done = enqueue_job(catalog, after(JobKind::export_, {a.id}));
  finish(catalog, unrelated.id, JobState::succeeded);
  (void)update_job_state(catalog, done.id, JobState::cancelled);  // already cancelled: left as it is

  (void)claim_next_job(catalog, 1, "h");  // a runs
  const JobTransition t = transition_job(catalog, a.id, JobState::cancelled);
  CHECK(t.job.state == JobState::cancelled);
  CHECK(ids_of(t.cancelled_dependents) == std::vector<int64_t>{b.id, c.id, d.id});
  for (const Job& dependent : t.cancelled_dependents) {
    CHECK(dependent.state == JobState::cancelled);
    CHECK_THAT(dependent.error_message, Catch::Contains(cat("job ", a.id, " was cancelled")));
    const auto events = list_job_events(catalog, dependent.id);
    REQUIRE_FALSE(events.empty());
    CHECK(events.back().payload["to"] == "cancelled");
    CHECK(events.back().payload["cancelled_by"] == a.id);
  }
  CHECK(get_job(catalog, unrelated.id)->state == JobState::succeeded);
  CHECK(list_job_events(catalog, done.id).back().payload.count("cancelled_by") == 0);

  // A retried dependent queues again and waits, blocked by the cancelled job until that is retried.
  Job again = update_job_state(catalog, b.id, JobState::queued);
  CHECK(again.waiting_on == std::vector<int64_t>{a.id});
  CHECK(again.blocked_by == std::vector<int64_t>{a.id});
  CHECK_FALSE(next_queued_job(catalog));
  (void)update_job_state(catalog, a.id, JobState::queued);
  CHECK(get_job(catalog, b.id)->blocked_by.empty());
  CHECK(next_queued_job(catalog)->id == a.id);

  // Cancelling a queued job in the middle takes only what comes after it.
  const JobTransition middle = transition_job(catalog, b.id, JobState::cancelled);
  CHECK(middle.cancelled_dependents.empty());  // c and d were cancelled already
  CHECK(get_job(catalog, a.id)->state == JobState::queued);
}

TEST_CASE("a dependency must exist, and a job that others depend on cannot be deleted", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Job a = enqueue_job(catalog, job_of(JobKind::make_dataset));
  try {
    (void)enqueue_job(catalog, after(JobKind::import, {a.id, 4242}));
    FAIL("a dependency that does not exist must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(), Catch::Contains("job 4242 does not exist"));
  }
  CHECK(list_jobs(catalog).size() == 1);  // nothing of the refused job was stored
  const Job b = enqueue_job(catalog, after(JobKind::import, {a.id}));
  try {
    (void)delete_job(catalog, a.id);
    FAIL("a job with dependents must not be deleted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK_THAT(e.message(), Catch::Contains(cat("job(s) ", b.id, " depend on it")));
  }
  CHECK(delete_job(catalog, b.id));
  CHECK(delete_job(catalog, a.id));
}
