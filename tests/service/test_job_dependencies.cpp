// Job dependencies through the real `mugv serve` and its workers on an ipc socket, with torch-free job kinds:
// make_dataset → import → curate redecide (which needs the imported dataset) runs in order; a failed
// dependency blocks its dependents until its retry succeeds; a cancel takes the queued dependents with it;
// bad depends_on lists are refused naming the job; `mugv --server EP submit --after`.
#include "core/process.h"
#include "core/strings.h"
#include "service/client.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <optional>
#include <set>
#include <thread>

using namespace mugv;
using namespace std::chrono_literals;
using protocol::MessageType;
using test::ServeProcess;
using test::TempDir;

namespace {

JobSubmission make_dataset(const fs::path& out, int count, std::vector<int64_t> after = {}) {
  return {"make_dataset", test::make_dataset_params(out, count), 0, std::move(after)};
}

JobSubmission import(const fs::path& dir, const std::string& name, std::vector<int64_t> after) {
  return {"import",
          {{"command", {"dataset", "import"}},
           {"positional", {dir.string()}},
           {"values", {{"dataset.name", name}}}},
          0,
          std::move(after)};
}

// Re-decides the dataset's clips: fails unless the dataset was imported before.
JobSubmission redecide(const std::string& name, std::vector<int64_t> after) {
  return {"curate",
          {{"command", {"curate", "redecide"}},
           {"positional", nlohmann::json::array()},
           {"values", {{"curate.dataset", name}, {"curate.preset", "lenient"}}}},
          0,
          std::move(after)};
}

int64_t submit(Client& client, const JobSubmission& job) {
  return submit_job(client, job)["id"].get<int64_t>();
}

nlohmann::json job_of(Client& client, int64_t id) {
  return client.request(MessageType::get_job, {{"job", id}})["job"];
}

// Polls until the job is in `state` or `timeout` passes; returns the last state seen.
std::string wait_for(Client& client, int64_t id, const std::string& state,
                     std::chrono::milliseconds timeout = 60000ms) {
  std::string seen;
  test::wait_until(
      [&] {
        seen = job_of(client, id)["state"].get<std::string>();
        return seen == state;
      },
      timeout);
  return seen;
}

std::string log_of(Client& client, int64_t id) {
  return cat(
      "job ", id, ": ", job_of(client, id).dump(), "\n",
      client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 40}})["text"].get<std::string>());
}

nlohmann::json ids(std::initializer_list<int64_t> list) {
  return nlohmann::json(std::vector<int64_t>(list));
}

}  // namespace

TEST_CASE("a chain make_dataset, import, redecide runs in order, each job after the one it depends on",
          "[service][ipc]") {
  TempDir home;
  ServeProcess serve(home.path(), {"--max-jobs", "2"});
  Client client = serve.connect();
  const int64_t make = submit(client, make_dataset(home / "shapes", 4));
  const int64_t import_id = submit(client, import(home / "shapes", "chain", {make}));
  const int64_t curate = submit(client, redecide("chain", {import_id}));
  // Two slots, yet the dependents wait; each says what for.
  const auto queued = job_of(client, curate);
  CHECK(queued["depends_on"] == ids({import_id}));
  CHECK(queued["waiting_on"] == ids({import_id}));
  CHECK(queued["blocked_by"].empty());
  const std::string end = wait_for(client, curate, "succeeded");
  INFO(log_of(client, make) << log_of(client, import_id) << log_of(client, curate));
  REQUIRE(end == "succeeded");
  const auto a = job_of(client, make), b = job_of(client, import_id), c = job_of(client, curate);
  CHECK(b["started_at_ms"].get<int64_t>() >= a["finished_at_ms"].get<int64_t>());
  CHECK(c["started_at_ms"].get<int64_t>() >= b["finished_at_ms"].get<int64_t>());
  CHECK(c["waiting_on"].empty());
  CHECK(c["depends_on"] == ids({import_id}));
}

TEST_CASE("a failed dependency blocks its dependents, and its retry lets the chain go on", "[service][ipc]") {
  TempDir home;
  ServeProcess serve(home.path());
  Client client = serve.connect();
  // The dataset's folder is taken by a file: making it fails until the file is gone.
  std::ofstream(home / "shapes") << "not a folder";
  const int64_t make = submit(client, make_dataset(home / "shapes", 2));
  const int64_t import_id = submit(client, import(home / "shapes", "blocked", {make}));
  const int64_t curate = submit(client, redecide("blocked", {import_id}));
  REQUIRE(wait_for(client, make, "failed") == "failed");
  // Nothing else runs: the dependents stay queued, the import blocked by the failed job.
  std::this_thread::sleep_for(1s);
  auto b = job_of(client, import_id);
  CHECK(b["state"] == "queued");
  CHECK(b["attempts"] == 0);
  CHECK(b["blocked_by"] == ids({make}));
  CHECK(b["waiting_on"] == ids({make}));
  auto c = job_of(client, curate);
  CHECK(c["state"] == "queued");
  CHECK(c["waiting_on"] == ids({import_id}));
  CHECK(c["blocked_by"].empty());

  fs::remove(home / "shapes");
  client.request(MessageType::retry_job, {{"job", make}});
  CHECK(job_of(client, import_id)["blocked_by"].empty());
  const std::string end = wait_for(client, curate, "succeeded");
  INFO(log_of(client, make) << log_of(client, import_id) << log_of(client, curate));
  CHECK(end == "succeeded");
  CHECK(job_of(client, make)["attempts"] == 2);
}

TEST_CASE("cancelling a job cancels its queued dependents transitively, each announced with the cause",
          "[service][ipc]") {
  TempDir home;
  ServeProcess serve(home.path());
  Client client = serve.connect();
  EventSubscriber events(client.events_endpoints().front(), {"job/"});
  std::this_thread::sleep_for(300ms);
  const int64_t big = submit(client, make_dataset(home / "big", 20000));
  const int64_t import_id = submit(client, import(home / "big", "big", {big}));
  const int64_t curate = submit(client, redecide("big", {import_id}));
  const int64_t other = submit(client, make_dataset(home / "other", 2));
  REQUIRE(wait_for(client, big, "running", 30000ms) == "running");

  // The command line's submit --after: the job waits, and the listing says after which.
  const std::string mugv = (test::binary_dir() / "bin" / "mugv").string();
  const auto after =
      run_process({mugv, "--server", serve.endpoint(), "submit", "--after", cat(big, ",", import_id),
                   "make-dataset", "shapes", "--out", (home / "late").string(), "--count", "2"},
                  30s);
  INFO(after.err);
  REQUIRE(after.exit_code == 0);
  CHECK(after.out.find(cat("(after #", big, ", #", import_id, ")")) != std::string::npos);
  const auto listed = run_process({mugv, "--server", serve.endpoint(), "jobs"}, 30s);
  CHECK(listed.out.find(cat("(after #", big, ", #", import_id, ")")) != std::string::npos);
  const auto bad = run_process({mugv, "--server", serve.endpoint(), "submit", "--after", "x", "make-dataset",
                                "shapes", "--out", (home / "x").string()},
                               30s);
  CHECK(bad.exit_code == 2);
  const auto missing = run_process({mugv, "--server", serve.endpoint(), "submit", "--after", "999",
                                    "make-dataset", "shapes", "--out", (home / "y").string()},
                                   30s);
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("depends_on: job 999 does not exist") != std::string::npos);
  const size_t queued_at = after.out.find("queued job ");
  REQUIRE(queued_at != std::string::npos);
  const int64_t late = std::stoll(after.out.substr(queued_at + 11));

  client.request(MessageType::cancel_job, {{"job", big}});
  REQUIRE(wait_for(client, big, "cancelled", 30000ms) == "cancelled");
  for (int64_t dependent : {import_id, curate, late}) {
    const auto job = job_of(client, dependent);
    CHECK(job["state"] == "cancelled");
    CHECK(job["error_message"].get<std::string>().find(cat("job ", big, " was cancelled")) !=
          std::string::npos);
    std::optional<nlohmann::json> last_state;
    const auto stored = client.request(MessageType::get_job, {{"job", dependent}, {"types", {"state"}}});
    for (const auto& e : stored["events"]) last_state = e["payload"];
    REQUIRE(last_state);
    CHECK((*last_state)["to"] == "cancelled");
    CHECK((*last_state)["cancelled_by"] == big);
  }
  // Subscribers saw each dependent's cancellation as a state event.
  std::set<int64_t> announced;
  while (auto e = events.next(500ms))
    if (e->header.value("type", "") == "state" && e->header.value("state", "") == "cancelled")
      announced.insert(e->header.value("job", int64_t(0)));
  CHECK(announced == std::set<int64_t>{big, import_id, curate, late});
  // The unrelated job runs on.
  CHECK(wait_for(client, other, "succeeded") == "succeeded");

  // A retried dependent waits again, blocked by the cancelled job.
  const auto retried = client.request(MessageType::retry_job, {{"job", import_id}})["job"];
  CHECK(retried["state"] == "queued");
  CHECK(retried["blocked_by"] == ids({big}));
  std::this_thread::sleep_for(500ms);
  CHECK(job_of(client, import_id)["state"] == "queued");
}

TEST_CASE("submit_job refuses a depends_on that is not a short list of existing job ids, naming the problem",
          "[service][ipc]") {
  TempDir home;
  ServeProcess serve(home.path());
  Client client = serve.connect();
  const int64_t first = submit(client, make_dataset(home / "a", 2));
  auto refusal = [&](const nlohmann::json& depends_on) {
    nlohmann::json header = make_dataset(home / "b", 2).header();
    header["depends_on"] = depends_on;
    try {
      client.request(MessageType::submit_job, header);
      return std::string("accepted");
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  CHECK_THAT(refusal(ids({first, 4242})), Catch::Contains("depends_on: job 4242 does not exist"));
  CHECK_THAT(refusal(nlohmann::json::array({0})), Catch::Contains("depends_on") && Catch::Contains(">= 1"));
  CHECK_THAT(refusal(nlohmann::json::array({"1"})),
             Catch::Contains("depends_on") && Catch::Contains("integers"));
  CHECK_THAT(refusal(first), Catch::Contains("depends_on"));
  CHECK_THAT(refusal(nlohmann::json(std::vector<int64_t>(65, first))), Catch::Contains("at most 64"));
  // Nothing was queued by the refused requests; 64 (duplicates of one job) are taken as that one job.
  CHECK(client.request(MessageType::list_jobs)["total"] == 1);
  CHECK(refusal(nlohmann::json(std::vector<int64_t>(64, first))) == "accepted");
  CHECK(client.request(MessageType::list_jobs)["jobs"][1]["depends_on"] == ids({first}));
}
