#include "catalog/catalog.h"

#include "catalog/jobs.h"
#include "catalog/prompts.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <exception>

using namespace mugv;
using mugv::test::TempDir;

namespace {

constexpr int kRowsPerProcess = 300;

int64_t count_tagged(Catalog& catalog, const char* tag) {
  auto s = catalog.prepare("SELECT count(*) FROM prompts, json_each(prompts.tags_json) WHERE value = ?1");
  s.bind_all(tag);
  return s.step() ? s.int64(0) : -1;
}

int64_t count_events(Catalog& catalog, int64_t job_id) {
  auto s = catalog.prepare("SELECT count(*) FROM job_events WHERE job_id = ?1 AND type = 'progress'");
  s.bind_all(job_id);
  return s.step() ? s.int64(0) : -1;
}

// Runs in the forked child: its own connection, one small write transaction per row pair.
[[noreturn]] void child_writer(const fs::path& path, int64_t job_id, int start_fd) {
  int status = 0;
  try {
    char go = 0;
    if (read(start_fd, &go, 1) != 1) throw std::runtime_error("start signal lost");
    auto catalog = Catalog::open(path);
    for (int i = 0; i < kRowsPerProcess; ++i) {
      Transaction transaction(catalog, TransactionMode::write);
      (void)add_prompt(catalog, {0, "child prompt " + std::to_string(i), "", {"child"}, 0});
      (void)append_job_event(catalog, job_id, "progress", {{"done", i + 1}});
      transaction.commit();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child writer failed: %s\n", e.what());
    status = 1;
  }
  // _exit: the child must not run the parent's test harness or its atexit handlers.
  _exit(status);
}

}  // namespace

TEST_CASE("two processes write one catalog concurrently without busy errors or lost rows",
          "[catalog][concurrency]") {
  TempDir dir;
  const auto path = dir / "catalog.sqlite";
  int64_t job_id = 0;
  {
    auto setup = Catalog::open(path);
    Job job;
    job.kind = JobKind::curate;
    job_id = enqueue_job(setup, job).id;
  }  // no connection may cross fork()

  int start_pipe[2];
  REQUIRE(pipe(start_pipe) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(start_pipe[1]);
    child_writer(path, job_id, start_pipe[0]);
  }
  close(start_pipe[0]);

  auto catalog = Catalog::open(path);
  REQUIRE(write(start_pipe[1], "g", 1) == 1);
  close(start_pipe[1]);

  int64_t last_seen = 0;
  int torn_reads = 0, regressions = 0;
  for (int i = 0; i < kRowsPerProcess; ++i) {
    (void)add_prompt(catalog, {0, "parent prompt " + std::to_string(i), "", {"parent"}, 0});
    Transaction snapshot(catalog, TransactionMode::read);
    const int64_t prompts = count_tagged(catalog, "child");
    const int64_t events = count_events(catalog, job_id);
    snapshot.commit();
    // The child writes a prompt and an event in one transaction: a reader sees both or neither.
    if (prompts != events) ++torn_reads;
    if (prompts < last_seen) ++regressions;
    last_seen = prompts;
  }

  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(torn_reads == 0);
  CHECK(regressions == 0);
  CHECK(count_tagged(catalog, "parent") == kRowsPerProcess);
  CHECK(count_tagged(catalog, "child") == kRowsPerProcess);
  CHECK(count_events(catalog, job_id) == kRowsPerProcess);
  PromptQuery all;
  CHECK(list_prompts(catalog, all).size() == 2 * kRowsPerProcess);
}
