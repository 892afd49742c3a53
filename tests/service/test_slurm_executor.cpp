// The server's Slurm executor against a real Slurm cluster on loopback (tests/parallel/slurm_cluster.sh:
// slurmctld + two slurmd "nodes", all state in a temporary folder) and the real `mugv serve` and
// `mugv-worker`: jobs submitted through the client library onto a cluster profile run under Slurm, report
// through files, and come back as the same states, events and logs as local jobs. Skipped (with the reason)
// where Slurm or root is missing.
#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/cluster_profiles.h"
#include "service/file_reports.h"
#include "service/slurm_executor.h"
#include "support/slurm_fixture.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <thread>

using namespace mugv;
using namespace std::chrono_literals;
using protocol::MessageType;
using test::LoopbackCluster;
using test::ServeProcess;
using test::TempDir;

namespace {

void write_profile(const fs::path& home, const std::string& name, const std::string& text) {
  fs::create_directories(cluster_profiles_dir(home));
  std::ofstream(cluster_profiles_dir(home) / (name + ".toml")) << text;
}

nlohmann::json on_slurm(nlohmann::json params, const std::string& cluster) {
  params["executor"] = "slurm";
  params["cluster"] = cluster;
  return params;
}

using test::make_dataset_params;

int64_t submit(Client& c, const std::string& kind, const nlohmann::json& params) {
  return c.request(MessageType::submit_job, {{"kind", kind}, {"params", params}})["job"]["id"].get<int64_t>();
}

nlohmann::json job_of(Client& c, int64_t id) {
  return c.request(MessageType::get_job, {{"job", id}});
}

// Polls until the job reaches `state` or a terminal state, or `timeout` passes; returns the last state seen.
std::string wait_for(Client& c, int64_t id, const std::string& state, std::chrono::seconds timeout = 120s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string s;
  while (std::chrono::steady_clock::now() < deadline) {
    s = job_of(c, id)["job"]["state"].get<std::string>();
    if (s == state || s == "succeeded" || s == "failed" || s == "cancelled" || s == "interrupted") return s;
    std::this_thread::sleep_for(200ms);
  }
  return s;
}

std::string describe(Client& c, int64_t id) {
  return cat(job_of(c, id).dump(1), "\nlog:\n",
             c.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 80}})["text"].get<std::string>());
}

std::optional<nlohmann::json> event_payload(Client& c, int64_t id, const std::string& type) {
  std::optional<nlohmann::json> last;
  const nlohmann::json job = job_of(c, id);  // kept: a range-for over job_of(...)["events"] would dangle
  for (const auto& e : job["events"])
    if (e["type"] == type) last = e["payload"];
  return last;
}

const char* kLoopbackProfile =
    "partition = \"debug\"\ntime = \"0:10:00\"\nsetup_lines = [\"echo profile setup ran\"]\n";

}  // namespace

TEST_CASE("cluster profiles read every key with defaults and errors that name the file and the key",
          "[service][unit]") {
  TempDir home;
  write_profile(home.path(), "plain", "");
  ClusterProfile p = find_cluster_profile(home.path(), "plain");
  CHECK(p.nodes == 1);
  CHECK(p.report == ReportMode::files);
  CHECK(p.shared_dir == fs::absolute(home.path()));
  CHECK(p.command_prefix().empty());

  write_profile(home.path(), "full",
                "name = \"full\"\npartition = \"gpu,gpu2\"\naccount = \"vision\"\ntime = "
                "\"4:00:00\"\ngpus_per_node = 8\n"
                "cpus_per_task = 16\nnodes = 2\ntasks_per_node = 8\nsetup_lines = [\"module load cuda\"]\n"
                "shared_dir = \"/shared/mugv\"\nssh_host = \"me@login1\"\nreport = \"tcp\"\n");
  p = find_cluster_profile(home.path(), "full");
  CHECK(p.partition == "gpu,gpu2");
  CHECK(p.gpus_per_node == 8);
  CHECK(p.tasks_per_node == 8);
  CHECK(p.shared_dir == "/shared/mugv");
  CHECK(p.report == ReportMode::tcp);
  CHECK(p.command_prefix() == std::vector<std::string>{"ssh", "-o", "BatchMode=yes", "me@login1"});

  auto error_for = [&](const std::string& text) {
    write_profile(home.path(), "bad", text);
    return std::string(test::expect_error([&] { (void)find_cluster_profile(home.path(), "bad"); }).what());
  };
  std::string e = error_for("partiton = \"gpu\"\n");
  CHECK(e.find("bad.toml") != std::string::npos);
  CHECK(e.find("'partiton'") != std::string::npos);
  CHECK(error_for("partition = \"gpu\\n#SBATCH --wrap=id\"\n").find("'partition'") != std::string::npos);
  CHECK(error_for("nodes = 0\n").find("'nodes'") != std::string::npos);
  CHECK(error_for("gpus_per_node = \"8\"\n").find("expected an integer") != std::string::npos);
  CHECK(error_for("ssh_host = \"-oProxyCommand=x\"\n").find("'ssh_host'") != std::string::npos);
  CHECK(error_for("setup_lines = [\"a\\nb\"]\n").find("line break") != std::string::npos);
  CHECK(error_for("shared_dir = \"relative\"\n").find("absolute") != std::string::npos);
  CHECK(error_for("report = \"carrier-pigeon\"\n").find("'report'") != std::string::npos);
  CHECK(error_for("name = \"other\"\n").find("differs") != std::string::npos);

  // A missing or ill-named profile says which exist; the listing keeps the good ones and names the bad one.
  e = test::expect_error([&] { (void)find_cluster_profile(home.path(), "nosuch"); }).what();
  CHECK(e.find("full") != std::string::npos);
  CHECK(test::expect_error([&] { (void)find_cluster_profile(home.path(), "../keys/x"); }).code() ==
        ErrorCode::invalid_argument);
  const ClusterProfileListing listing = list_cluster_profiles(home.path());
  CHECK(listing.profiles.size() == 2);
  REQUIRE(listing.problems.size() == 1);
  CHECK(listing.problems[0].first.filename() == "bad.toml");
}

TEST_CASE("what a job's params ask of the Slurm executor", "[service][unit]") {
  CHECK_FALSE(slurm_request_of({{"command", {"probe"}}}));
  CHECK_FALSE(slurm_request_of({{"executor", "local"}}));
  auto r = slurm_request_of({{"executor", "slurm"}, {"cluster", "gpu"}, {"nodes", 2}, {"array", 4}});
  REQUIRE(r);
  CHECK(r->cluster == "gpu");
  CHECK(r->nodes == 2);
  CHECK(r->tasks_per_node == 0);
  CHECK(r->array == 4);
  CHECK(test::expect_error([] {
          (void)slurm_request_of({{"executor", "slurm"}});
        }).subject() == "params.cluster");
  CHECK(test::expect_error([] {
          (void)slurm_request_of({{"executor", "pbs"}});
        }).subject() == "params.executor");
  CHECK(test::expect_error([] {
          (void)slurm_request_of({{"cluster", "gpu"}});
        }).subject() == "params.cluster");
  CHECK(test::expect_error([] {
          (void)slurm_request_of({{"executor", "slurm"}, {"cluster", "gpu"}, {"nodes", 0}});
        }).subject() == "params.nodes");
}

TEST_CASE("file reports: whole lines reach the reader while partial lines wait and damage is reported",
          "[service][unit]") {
  TempDir dir;
  EventsFileTail tail(events_file(dir.path()));
  CHECK(tail.read_new().empty());  // no file yet
  {
    FileReportWriter writer(dir.path());
    Progress p;
    p.stage = "curate";
    p.done = 1;
    p.total = 2;
    writer.progress_fn()(p);
    writer.metrics(3, {{"loss", 0.5}});
    writer.finish(JobState::failed, "io", "disk full");
  }
  auto events = tail.read_new();
  REQUIRE(events.size() == 3);
  CHECK(events[0]["type"] == "progress");
  CHECK(events[0]["done"] == 1);
  CHECK(events[1]["values"]["loss"] == 0.5);
  CHECK(events[2]["state"] == "failed");
  CHECK(events[2]["message"] == "disk full");
  std::ofstream out(events_file(dir.path()), std::ios::app);
  out << "{\"type\":\"log\",\"text\":\"half" << std::flush;
  CHECK(tail.read_new().empty());
  out << " a line\"}\nnot json\n" << std::flush;
  events = tail.read_new();
  REQUIRE(events.size() == 2);
  CHECK(events[0]["text"] == "half a line");
  CHECK(events[1]["level"] == "warning");
}

TEST_CASE("jobs on a Slurm cluster profile report states and events and logs and Slurm refusals and cancels",
          "[service][slurm]") {
  LoopbackCluster cluster;
  if (cluster.conf.empty()) {
    WARN("skipped: " << cluster.skip_reason);
    return;
  }
  TempDir home;
  write_profile(home.path(), "loopback", kLoopbackProfile);
  write_profile(home.path(), "nopartition", "partition = \"nosuch\"\n");
  // A profile whose Slurm commands go through `ssh HOST`. There is no sshd here, so an `ssh` early in PATH
  // stands in for it: like ssh it hands the command line to a shell on the "remote" side (and notes each
  // one), so the quoting of every argument is exercised for real.
  write_profile(home.path(), "viassh", "partition = \"debug\"\nssh_host = \"login1\"\n");
  const fs::path bin = home / "bin";
  fs::create_directories(bin);
  std::ofstream(bin / "ssh") << "#!/bin/sh\n[ \"$1 $2 $3\" = \"-o BatchMode=yes login1\" ] || exit 255\n"
                             << "echo \"$4\" >> " << (home / "ssh.log").string() << "\nexec sh -c \"$4\"\n";
  fs::permissions(bin / "ssh", fs::perms::owner_all);
  const std::string path = std::getenv("PATH");
  ::setenv("PATH", (bin.string() + ":" + path).c_str(), 1);
  ServeProcess serve(home.path());
  ::setenv("PATH", path.c_str(), 1);
  Client client = serve.connect();

  auto clusters = client.request(MessageType::list_clusters);
  REQUIRE(clusters["clusters"].size() == 3);
  CHECK(clusters["clusters"][0]["name"] == "loopback");
  CHECK(clusters["clusters"][0]["partition"] == "debug");

  EventSubscriber events(client.events_endpoints().front(), {"job/"});
  std::this_thread::sleep_for(300ms);

  // A job runs under Slurm: queued -> starting -> running -> succeeded, with its progress and log lines.
  const int64_t id =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "shapes", 6), "loopback"));
  const std::string final_state = wait_for(client, id, "succeeded");
  INFO(describe(client, id) << "\nserver log:\n" << serve.log());
  REQUIRE(final_state == "succeeded");
  CHECK(fs::exists(home / "shapes" / "manifest.jsonl"));
  std::map<std::string, int> seen;
  std::vector<std::string> states;
  while (auto e = events.next(500ms)) {
    if (e->header.value("job", int64_t(0)) != id) continue;
    const std::string type = e->header.value("type", "");
    seen[type]++;
    if (type == "state") states.push_back(e->header["state"]);
  }
  CHECK(states == std::vector<std::string>{"queued", "starting", "running", "succeeded"});
  CHECK(seen["progress"] >= 1);
  CHECK(seen["log"] >= 2);  // the server's notes and the worker's own lines
  const auto job = job_of(client, id)["job"];
  CHECK(job["exit_code"] == 0);
  CHECK(starts_with(job["host"].get<std::string>(), "slurm:loopback:n"));
  const auto slurm = event_payload(client, id, "slurm");
  REQUIRE(slurm);
  const std::string slurm_id = (*slurm)["slurm_job"];
  CHECK_FALSE(slurm_id.empty());
  const std::string logs = client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 1000}})["text"];
  CHECK(logs.find("Slurm job " + slurm_id + " submitted") != std::string::npos);
  CHECK(logs.find("slurm-" + slurm_id + ".out <==") != std::string::npos);
  CHECK(logs.find("profile setup ran") != std::string::npos);  // the profile's setup lines ran in the job
  CHECK(logs.find("make-dataset") != std::string::npos);  // the worker's log, through Slurm's output file

  // Through ssh: sbatch, then scontrol, each as one quoted command line.
  const int64_t remote =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "remote", 2), "viassh"));
  CHECK(wait_for(client, remote, "succeeded") == "succeeded");
  INFO(describe(client, remote));
  const std::string ssh_log = read_text_file(home / "ssh.log");
  CHECK(ssh_log.find("'sbatch' '--parsable' '" + (home / "slurm-jobs").string()) != std::string::npos);
  CHECK(ssh_log.find("'scontrol' 'show' 'job' '-o'") != std::string::npos);
  CHECK(fs::exists(home / "remote" / "manifest.jsonl"));

  // A profile Slurm refuses: the job fails with sbatch's own words.
  const int64_t refused =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "x", 2), "nopartition"));
  CHECK(wait_for(client, refused, "failed", 60s) == "failed");
  const std::string why = job_of(client, refused)["job"]["error_message"];
  CHECK(why.find("sbatch") != std::string::npos);
  CHECK(to_lower(why).find("partition") != std::string::npos);

  // A command that fails on the node: the job fails with Slurm's state and reason and the worker's own words.
  std::ofstream(home / "a-file") << "not a folder";
  const int64_t failing =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "a-file", 2), "loopback"));
  CHECK(wait_for(client, failing, "failed") == "failed");
  const auto failed_job = job_of(client, failing)["job"];
  INFO(describe(client, failing));
  const std::string failure = failed_job["error_message"];
  CHECK(failure.find("FAILED (exit code 1:0, NonZeroExitCode)") != std::string::npos);
  CHECK(failure.find("a-file") != std::string::npos);
  CHECK(failed_job["exit_code"] == 1);

  // Submissions the server refuses before queueing: an unknown profile, an array of a command that cannot
  // shard.
  CHECK_THROWS_WITH(submit(client, "make_dataset", on_slurm(make_dataset_params(home / "y", 2), "nosuch")),
                    Catch::Contains("loopback"));
  auto array = on_slurm(make_dataset_params(home / "y", 2), "loopback");
  array["array"] = 2;
  CHECK_THROWS_WITH(submit(client, "make_dataset", array), Catch::Contains("only `curate`"));

  // Cancel: scancel, and the job is cancelled once Slurm says so.
  const int64_t long_job =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "big", 20000), "loopback"));
  REQUIRE(wait_for(client, long_job, "running", 60s) == "running");
  std::this_thread::sleep_for(1s);
  CHECK_THROWS_AS(client.request(MessageType::pause_job, {{"job", long_job}}), Error);
  CHECK(client.request(MessageType::cancel_job, {{"job", long_job}})["cancelling"] == true);
  const std::string cancelled = wait_for(client, long_job, "cancelled", 60s);
  INFO(describe(client, long_job));
  CHECK(cancelled == "cancelled");
}

TEST_CASE("sharded curation on Slurm runs an array of 2 tasks and then merges the shards",
          "[service][slurm]") {
  LoopbackCluster cluster;
  if (cluster.conf.empty()) {
    WARN("skipped: " << cluster.skip_reason);
    return;
  }
  TempDir home;
  write_profile(home.path(), "loopback", kLoopbackProfile);
  const std::string mugv = (test::binary_dir() / "bin" / "mugv").string();
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  ProcessResult made = run_process({mugv, "make-dataset", "shapes", "--out", (home / "data").string(),
                                    "--count", "8", "--size", "32", "--frames", "17"},
                                   120s);
  REQUIRE(made.exit_code == 0);
  // The same curation in one piece, into its own catalog: what the merged shards must add up to.
  ProcessResult whole = run_process({mugv, "curate", (home / "data").string(), "--dataset", "whole",
                                     "--preset", "lenient", "--catalog", (home / "whole.sqlite").string()},
                                    120s);
  INFO(whole.err);
  REQUIRE(whole.exit_code == 0);

  ServeProcess serve(home.path());
  Client client = serve.connect();
  nlohmann::json params = {{"command", {"curate"}},
                           {"positional", {(home / "data").string()}},
                           {"values", {{"curate.dataset", "shapes"}, {"curate.preset", "lenient"}}}};
  params = on_slurm(params, "loopback");
  params["array"] = 2;
  const int64_t id = submit(client, "curate", params);
  const std::string state = wait_for(client, id, "succeeded");
  INFO(describe(client, id) << "\nserver log:\n" << serve.log());
  REQUIRE(state == "succeeded");
  const std::string logs = client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 1000}})["text"];
  CHECK(logs.find("_0.out <==") != std::string::npos);
  CHECK(logs.find("_1.out <==") != std::string::npos);

  const auto result = event_payload(client, id, "result");
  REQUIRE(result);
  const int64_t merge = (*result)["follow_up_job"];
  CHECK(wait_for(client, merge, "succeeded") == "succeeded");
  INFO(describe(client, merge));

  Catalog merged = Catalog::open(home / "catalog.sqlite");
  Catalog reference = Catalog::open(home / "whole.sqlite");
  auto count = [](Catalog& c, const std::string& name) {
    auto d = find_dataset(c, name);
    REQUIRE(d);
    ClipFilter f;
    f.dataset_id = d->id;
    return count_clips(c, f);
  };
  const auto clips = count(merged, "shapes");
  CHECK(clips > 0);
  CHECK(clips == count(reference, "whole"));  // every file curated once: by exactly one shard
}

TEST_CASE("a restarted server follows its Slurm jobs again instead of interrupting them",
          "[service][slurm]") {
  LoopbackCluster cluster;
  if (cluster.conf.empty()) {
    WARN("skipped: " << cluster.skip_reason);
    return;
  }
  TempDir home;
  write_profile(home.path(), "loopback", kLoopbackProfile);
  int64_t id = 0;
  {
    ServeProcess serve(home.path());
    Client client = serve.connect();
    id = submit(client, "make_dataset", on_slurm(make_dataset_params(home / "big", 20000), "loopback"));
    REQUIRE(wait_for(client, id, "running", 60s) == "running");
  }
  ServeProcess again(home.path());
  Client client = again.connect();
  std::this_thread::sleep_for(3s);  // a Slurm query or two
  INFO(describe(client, id) << "\nserver log:\n" << again.log());
  CHECK(job_of(client, id)["job"]["state"] == "running");
  CHECK(job_of(client, id)["job"]["attempts"] == 1);
  // Still under the new server's control: progress flows and cancel reaches Slurm.
  EventSubscriber events(client.events_endpoints().front(), {cat("job/", id)});
  bool progress = false;
  for (int i = 0; i < 20 && !progress; ++i)
    if (auto e = events.next(500ms)) progress = e->header.value("type", "") == "progress";
  CHECK(progress);
  client.request(MessageType::cancel_job, {{"job", id}});
  CHECK(wait_for(client, id, "cancelled", 60s) == "cancelled");
}

TEST_CASE("a Slurm job that depends on another reaches Slurm only once that one succeeded",
          "[service][slurm]") {
  LoopbackCluster cluster;
  if (cluster.conf.empty()) {
    WARN("skipped: " << cluster.skip_reason);
    return;
  }
  TempDir home;
  write_profile(home.path(), "loopback", kLoopbackProfile);
  ServeProcess serve(home.path());
  Client client = serve.connect();
  auto submit_after = [&](const nlohmann::json& params, std::vector<int64_t> after) {
    return submit_job(client, {"make_dataset", params, 0, std::move(after)})["id"].get<int64_t>();
  };

  // While the local job it waits for runs, the Slurm job stays queued and is never submitted; cancelling
  // that job cancels it before it reaches Slurm.
  const int64_t long_job = submit_after(make_dataset_params(home / "big", 20000), {});
  const int64_t waiting = submit_after(on_slurm(make_dataset_params(home / "w", 2), "loopback"), {long_job});
  REQUIRE(wait_for(client, long_job, "running", 60s) == "running");
  std::this_thread::sleep_for(2s);
  CHECK(job_of(client, waiting)["job"]["state"] == "queued");
  CHECK(job_of(client, waiting)["job"]["waiting_on"] == nlohmann::json{long_job});
  client.request(MessageType::cancel_job, {{"job", long_job}});
  CHECK(wait_for(client, long_job, "cancelled", 60s) == "cancelled");
  CHECK(job_of(client, waiting)["job"]["state"] == "cancelled");
  CHECK_FALSE(event_payload(client, waiting, "slurm"));

  // Once the dependency succeeded, the Slurm job is submitted and runs.
  const int64_t first = submit_after(make_dataset_params(home / "first", 2), {});
  const int64_t second = submit_after(on_slurm(make_dataset_params(home / "second", 2), "loopback"), {first});
  const std::string end = wait_for(client, second, "succeeded");
  INFO(describe(client, second));
  REQUIRE(end == "succeeded");
  CHECK(job_of(client, second)["job"]["started_at_ms"].get<int64_t>() >=
        job_of(client, first)["job"]["finished_at_ms"].get<int64_t>());
  CHECK(event_payload(client, second, "slurm"));
}
