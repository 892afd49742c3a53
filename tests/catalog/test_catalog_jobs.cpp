#include "catalog/jobs.h"

#include "catalog/runs.h"
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
