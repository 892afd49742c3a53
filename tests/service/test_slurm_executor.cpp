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
#include "core/shell_quote.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/cluster_profiles.h"
#include "service/curve_keys.h"
#include "service/file_reports.h"
#include "service/remote_link.h"
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
                "shared_dir = \"/shared/mugv\"\nssh_host = \"me@login1\"\nreport = \"tcp\"\n"
                "server_endpoint = \"tcp://login1:7555\"\n");
  p = find_cluster_profile(home.path(), "full");
  CHECK(p.partition == "gpu,gpu2");
  CHECK(p.gpus_per_node == 8);
  CHECK(p.tasks_per_node == 8);
  CHECK(p.shared_dir == "/shared/mugv");
  CHECK(p.report == ReportMode::tcp);
  CHECK(p.server_endpoint == "tcp://login1:7555");
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
  // A live link needs the server's endpoint as the nodes reach it, and the endpoint means nothing without
  // one.
  CHECK(error_for("report = \"tcp\"\n").find("'server_endpoint'") != std::string::npos);
  CHECK(error_for("server_endpoint = \"tcp://login1:7555\"\n").find("only used with report") !=
        std::string::npos);
  e = error_for("report = \"tcp\"\nserver_endpoint = \"ipc:///tmp/x.sock\"\n");
  CHECK(e.find("'server_endpoint'") != std::string::npos);
  CHECK(e.find("tcp://HOST:PORT") != std::string::npos);
  CHECK(error_for("report = \"tcp\"\nserver_endpoint = \"tcp://login1:99999\"\n").find("tcp://HOST:PORT") !=
        std::string::npos);

  // A missing or ill-named profile says which exist; the listing keeps the good ones and names the bad one.
  e = test::expect_error([&] { (void)find_cluster_profile(home.path(), "nosuch"); }).what();
  CHECK(e.find("full") != std::string::npos);
  CHECK(test::expect_error([&] { (void)find_cluster_profile(home.path(), "../keys/x"); }).code() ==
        ErrorCode::invalid_argument);
  const ClusterProfileListing listing = list_cluster_profiles(home.path());
  REQUIRE(listing.profiles.size() == 3);  // the built-in default and the two good files
  CHECK(listing.profiles[0].builtin);
  REQUIRE(listing.problems.size() == 1);
  CHECK(listing.problems[0].first.filename() == "bad.toml");

  // The built-in default: the machine's own Slurm with its defaults; a default.toml replaces it.
  ClusterProfile d = find_cluster_profile(home.path(), "default");
  CHECK(d.builtin);
  CHECK(d.file.empty());
  CHECK(d.partition.empty());
  CHECK(d.gpus_per_node == 0);
  CHECK(d.ssh_host.empty());
  CHECK(d.report == ReportMode::files);
  CHECK(d.shared_dir == fs::absolute(home.path()));
  write_profile(home.path(), "default", "partition = \"gpu\"\n");
  d = find_cluster_profile(home.path(), "default");
  CHECK_FALSE(d.builtin);
  CHECK(d.partition == "gpu");
  const ClusterProfileListing replaced = list_cluster_profiles(home.path());
  CHECK(replaced.profiles.size() == 3);
  for (const auto& p : replaced.profiles) CHECK_FALSE(p.builtin);
}

TEST_CASE("a live link's file keeps its secrets private and names what is wrong with it", "[service][unit]") {
  TempDir dir;
  const RemoteLinkGrant grant =
      make_remote_link_grant("tcp://login1:7555", generate_curve_keypair().public_key);
  CHECK(grant.token.size() == 64);
  CHECK(grant.worker.public_key == curve_public_key(grant.worker.secret_key));
  const fs::path file = remote_link_file(dir.path());
  write_remote_link_file(file, grant);
  CHECK((fs::status(file).permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  const RemoteLinkGrant back = read_remote_link_file(file);
  CHECK(back.endpoint == grant.endpoint);
  CHECK(back.server_public_key == grant.server_public_key);
  CHECK(back.worker.secret_key == grant.worker.secret_key);
  CHECK(back.worker.public_key == grant.worker.public_key);
  CHECK(back.token == grant.token);
  // A fresh grant is fresh: another key, another token.
  const RemoteLinkGrant next = make_remote_link_grant(grant.endpoint, grant.server_public_key);
  CHECK(next.token != grant.token);
  CHECK(next.worker.public_key != grant.worker.public_key);

  fs::permissions(file, fs::perms::group_read, fs::perm_options::add);
  Error e = test::expect_error([&] { (void)read_remote_link_file(file); });
  CHECK(e.code() == ErrorCode::forbidden);
  CHECK(e.subject() == file.string());
  auto damaged = [&](nlohmann::json j) {
    write_text_atomic(file, j.dump());
    fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
    return test::expect_error([&] { (void)read_remote_link_file(file); });
  };
  nlohmann::json good = {{"endpoint", grant.endpoint},
                         {"server_public_key", grant.server_public_key},
                         {"worker_secret_key", grant.worker.secret_key},
                         {"token", grant.token}};
  nlohmann::json j = good;
  j.erase("token");
  CHECK(std::string(damaged(j).what()).find("'token'") != std::string::npos);
  j = good;
  j["worker_secret_key"] = "not a key";
  e = damaged(j);
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("worker_secret_key") != std::string::npos);
  j = good;
  j["endpoint"] = "ipc:///tmp/x.sock";
  CHECK(std::string(damaged(j).what()).find("tcp://HOST:PORT") != std::string::npos);
  CHECK(test::expect_error([&] { (void)read_remote_link_file(dir / "none.json"); }).code() ==
        ErrorCode::not_found);
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
  if (!cluster.ready()) return;
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
  REQUIRE(clusters["clusters"].size() == 4);
  CHECK(clusters["clusters"][0]["name"] == "default");  // built in, first
  CHECK(clusters["clusters"][0]["builtin"] == true);
  CHECK(clusters["clusters"][1]["name"] == "loopback");
  CHECK(clusters["clusters"][1]["partition"] == "debug");
  CHECK(clusters["clusters"][1]["builtin"] == false);

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

  // The built-in profile: the Slurm of the server's machine with Slurm's defaults (here the loopback
  // cluster's default partition), the job folder under the server's home.
  const int64_t plain =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "plain", 2), "default"));
  CHECK(wait_for(client, plain, "succeeded") == "succeeded");
  INFO(describe(client, plain));
  CHECK(fs::exists(home / "plain" / "manifest.jsonl"));
  CHECK(fs::exists(home / "slurm-jobs" / std::to_string(plain) / "job.sbatch"));
  CHECK(starts_with(job_of(client, plain)["job"]["host"].get<std::string>(), "slurm:default:n"));

  // GPUs per node asked by the job replace the profile's; the loopback nodes have none, so Slurm refuses.
  auto gpus = on_slurm(make_dataset_params(home / "g", 2), "default");
  gpus["gpus_per_node"] = 2;
  const int64_t gpu_job = submit(client, "make_dataset", gpus);
  CHECK(wait_for(client, gpu_job, "failed", 60s) == "failed");
  const fs::path gpu_script = home / "slurm-jobs" / std::to_string(gpu_job) / "job.sbatch";
  CHECK(read_text_file(gpu_script).find("#SBATCH --gpus-per-node=2\n") != std::string::npos);
  gpus["gpus_per_node"] = -1;
  CHECK_THROWS_WITH(submit(client, "make_dataset", gpus), Catch::Contains("params.gpus_per_node"));

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
  if (!cluster.ready()) return;
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
  if (!cluster.ready()) return;
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
  if (!cluster.ready()) return;
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

namespace {

// The highest "done" of the job's progress events that arrive within `window`.
int64_t progress_seen(EventSubscriber& events, int64_t id, std::chrono::milliseconds window) {
  int64_t done = -1;
  const auto until = std::chrono::steady_clock::now() + window;
  while (std::chrono::steady_clock::now() < until)
    if (auto e = events.next(100ms))
      if (e->header.value("job", int64_t(0)) == id && e->header.value("type", "") == "progress")
        done = std::max(done, e->header.value("done", int64_t(0)));
  return done;
}

// Sends pause (or resume) until the job's worker is linked and the request is taken; the error of the last
// try when it never is.
std::string control_when_linked(Client& c, int64_t id, MessageType type, std::chrono::seconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      c.request(type, {{"job", id}});
      return {};
    } catch (const Error& e) {
      last = e.what();
    }
    std::this_thread::sleep_for(200ms);
  }
  return last;
}

}  // namespace

TEST_CASE("a Slurm job with a live link is paused and resumed and sends previews and its key serves it alone",
          "[service][slurm]") {
  LoopbackCluster cluster;
  if (!cluster.ready()) return;
  TempDir home;
  const int port = test::free_tcp_port_pair();
  const std::string tcp = cat("tcp://127.0.0.1:", port), ipc = "ipc://" + (home / "sock" / "s.sock").string();
  write_profile(home.path(), "live",
                cat(kLoopbackProfile, "report = \"tcp\"\nserver_endpoint = \"", tcp, "\"\n"));
  write_profile(
      home.path(), "elsewhere",
      cat(kLoopbackProfile, "report = \"tcp\"\nserver_endpoint = \"tcp://127.0.0.1:", port + 7, "\"\n"));
  const std::string mugv = (test::binary_dir() / "bin" / "mugv").string();
  ::setenv("MUGV_HOME", home.path().c_str(), 1);
  // With LibTorch, a tiny DiT run to generate from on the cluster (its denoising previews come over the
  // link).
  const bool torch = run_process({mugv, "generate", "--help"}, 30s).exit_code == 0;
  if (torch) {
    auto run_ok = [&](std::vector<std::string> args) {
      args.insert(args.begin(), mugv);
      const ProcessResult r = run_process(args, 180s);
      INFO(shell_join(args) << "\n" << r.err);
      REQUIRE(r.exit_code == 0);
    };
    run_ok({"make-dataset", "shapes", "--out", (home / "shapes").string(), "--count", "4", "--size", "32",
            "--frames", "9"});
    run_ok({"dataset", "import", (home / "shapes").string(), "--name", "shapes"});
    run_ok({"train-vae", "--preset", "tiny", "--dataset", "shapes", "--run", "vae0", "--steps", "2",
            "--batch", "2", "--size", "32x32", "--frames", "9", "--heldout-clips", "1"});
    run_ok({"encode", "--dataset", "shapes", "--vae-run", "vae0"});
    run_ok({"train", "--preset", "tiny", "--dataset", "shapes", "--vae-run", "vae0", "--run", "dit0",
            "--steps", "2", "--batch", "2"});
  } else {
    WARN("this build has no LibTorch commands: previews over the link are not exercised");
  }

  ServeProcess serve(home.path(), {"--listen", ipc, "--listen", tcp});
  Client client = serve.connect();
  const std::string server_key = read_keypair(home / "keys" / "server.key").public_key;
  const ProcessResult listed = run_process({mugv, "--server", ipc, "clusters"}, 30s);
  INFO(listed.err);
  CHECK(listed.out.find(cat("live link via ", tcp)) != std::string::npos);
  CHECK(listed.out.find("default") != std::string::npos);
  CHECK(listed.out.find("built in: the Slurm of the server's machine") != std::string::npos);

  // A profile whose endpoint is not one this server listens on is refused at submission, naming the port.
  const std::string refused =
      test::expect_error([&] {
        (void)submit(client, "make_dataset", on_slurm(make_dataset_params(home / "x", 2), "elsewhere"));
      }).what();
  CHECK(refused.find("elsewhere.toml") != std::string::npos);
  CHECK(refused.find(cat("port ", port + 7)) != std::string::npos);

  EventSubscriber events(client.events_endpoints().front(), {"job/"});
  std::this_thread::sleep_for(300ms);

  // Pause and resume reach the worker on its node: progress stops while paused and goes on after.
  const int64_t id =
      submit(client, "make_dataset", on_slurm(make_dataset_params(home / "big", 20000), "live"));
  REQUIRE(wait_for(client, id, "running", 60s) == "running");
  const std::string paused = control_when_linked(client, id, MessageType::pause_job);
  INFO(describe(client, id) << "\nserver log:\n" << serve.log());
  REQUIRE(paused.empty());
  CHECK(job_of(client, id)["job"]["state"] == "paused");
  const fs::path link_file = remote_link_file(home / "slurm-jobs" / std::to_string(id));
  CHECK((fs::status(link_file).permissions() & (fs::perms::group_all | fs::perms::others_all)) ==
        fs::perms::none);
  const int64_t before = progress_seen(events, id, 2500ms);  // what was on its way when the pause landed
  const int64_t during = progress_seen(events, id, 2000ms);
  CHECK(during <= before);  // nothing new while paused (-1: no event at all)
  CHECK(job_of(client, id)["job"]["state"] == "paused");

  // The worker's key is good for reporting on this job and nothing else: as a client it is turned away.
  const RemoteLinkGrant grant = read_remote_link_file(link_file);
  const CurveClientKeys worker_keys{server_key, grant.worker};
  const std::string as_client = test::expect_error([&] { Client c(tcp, 3000ms, worker_keys); }).what();
  CHECK(as_client.find(cat("may only report for job ", id)) != std::string::npos);
  {
    // Nor may it read the server's events, every job's logs and previews among them.
    EventSubscriber eavesdropper(cat("tcp://127.0.0.1:", port + 1), {"job/"}, worker_keys);
    CHECK(test::wait_until(
        [&] { return serve.log().find(cat("rejected the worker key of job ", id)) != std::string::npos; },
        5000ms));
    CHECK_FALSE(eavesdropper.next(1000ms));
  }

  client.request(MessageType::resume_job, {{"job", id}});
  CHECK(job_of(client, id)["job"]["state"] == "running");
  CHECK(progress_seen(events, id, 3000ms) > std::max<int64_t>(before, 0));

  // A paused job is cancelled through Slurm like any other; its key is forgotten once it has left.
  REQUIRE(control_when_linked(client, id, MessageType::pause_job).empty());
  client.request(MessageType::cancel_job, {{"job", id}});
  CHECK(wait_for(client, id, "cancelled", 60s) == "cancelled");
  const std::string forgotten = test::expect_error([&] { Client c(tcp, 3000ms, worker_keys); }).what();
  CHECK(forgotten.find("did not accept this client's key") != std::string::npos);

  if (!torch) return;
  // A generation on the cluster: its denoising previews reach subscribers live, frames and all.
  nlohmann::json params = {{"command", {"generate"}},
                           {"values",
                            {{"generate.run", "dit0"},
                             {"generate.prompt", "a red circle moving left on a black background"},
                             {"generate.out", (home / "live.mp4").string()},
                             {"generate.frames", 9},
                             {"generate.size", "32x32"},
                             {"generate.steps", 4},
                             {"generate.seed", 1}}}};
  const int64_t gen = submit(client, "generate", on_slurm(params, "live"));
  const std::string final_state = wait_for(client, gen, "succeeded", 180s);
  INFO(describe(client, gen) << "\nserver log:\n" << serve.log());
  REQUIRE(final_state == "succeeded");
  int previews = 0;
  while (auto e = events.next(500ms)) {
    if (e->header.value("job", int64_t(0)) != gen || e->header.value("type", "") != "preview") continue;
    ++previews;
    const int64_t w = e->header["width"], h = e->header["height"];
    REQUIRE_FALSE(e->blobs.empty());
    CHECK(static_cast<int64_t>(e->blobs[0].size()) == w * h * 3);
  }
  CHECK(previews >= 1);
  CHECK(fs::exists(home / "live.mp4"));
}

TEST_CASE("a restarted server takes back the live link of a Slurm job it follows again", "[service][slurm]") {
  LoopbackCluster cluster;
  if (!cluster.ready()) return;
  TempDir home;
  const std::string tcp = cat("tcp://127.0.0.1:", test::free_tcp_port_pair()),
                    ipc = "ipc://" + (home / "sock" / "s.sock").string();
  write_profile(home.path(), "live",
                cat(kLoopbackProfile, "report = \"tcp\"\nserver_endpoint = \"", tcp, "\"\n"));
  int64_t id = 0;
  {
    ServeProcess serve(home.path(), {"--listen", ipc, "--listen", tcp});
    Client client = serve.connect();
    id = submit(client, "make_dataset", on_slurm(make_dataset_params(home / "big", 20000), "live"));
    REQUIRE(wait_for(client, id, "running", 60s) == "running");
    REQUIRE(control_when_linked(client, id, MessageType::pause_job).empty());
    client.request(MessageType::resume_job, {{"job", id}});
  }
  ServeProcess again(home.path(), {"--listen", ipc, "--listen", tcp});
  Client client = again.connect();
  // The worker's link reconnects by itself; the new server knows its key and token from link.json.
  const std::string paused = control_when_linked(client, id, MessageType::pause_job, 30s);
  INFO(describe(client, id) << "\nserver log:\n" << again.log());
  CHECK(paused.empty());
  CHECK(job_of(client, id)["job"]["state"] == "paused");
  client.request(MessageType::cancel_job, {{"job", id}});
  CHECK(wait_for(client, id, "cancelled", 60s) == "cancelled");
}
