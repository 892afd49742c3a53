// `mugv train --slurm` against a real Slurm cluster on loopback (slurm_cluster.sh: slurmctld + two slurmd
// "nodes", munge, all state in a temporary folder): two ranks on two nodes train a few steps with the
// rendezvous taken from Slurm; state and logs are read back through Slurm. Skipped (with the reason) where
// Slurm or root is missing.
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "parallel/slurm.h"
#include "service/cluster_profiles.h"
#include "support/micro_home.h"
#include "support/slurm_fixture.h"
#include "support/test_support.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <thread>

using namespace mugv;
using test::LoopbackCluster;

namespace {

ProcessResult run_mugv(std::vector<std::string> args) {
  args.insert(args.begin(), (test::binary_dir() / "bin" / "mugv").string());
  return run_process(args, std::chrono::seconds(120));
}

std::vector<std::string> train_args(const std::string& run) {
  std::vector<std::string> a = test::micro_train_args(run);
  a.insert(a.end(), {"--steps",
                     "4",
                     "--batch",
                     "2",
                     "--save-every",
                     "2",
                     "--threads",
                     "1",
                     "--prefetch",
                     "0",
                     "--comm-timeout",
                     "60",
                     "--slurm",
                     "--nodes",
                     "2",
                     "--tasks-per-node",
                     "1",
                     "--time",
                     "0:10:00",
                     "--json"});
  return a;
}

}  // namespace

TEST_CASE("mugv train --slurm trains on two Slurm nodes and its state and logs come back",
          "[slurm][parallel]") {
  LoopbackCluster cluster;
  if (!cluster.ready()) return;
  test::MicroHome home(6);

  ProcessResult submitted = run_mugv(train_args("on-slurm"));
  INFO(submitted.out << submitted.err);
  REQUIRE(submitted.exit_code == 0);
  const auto answer = nlohmann::json::parse(submitted.out);
  const std::string id = answer.at("job_id");
  const std::string script = read_text_file(answer.at("script").get<std::string>());
  CHECK(script.find("#SBATCH --nodes=2") != std::string::npos);
  CHECK(script.find("srun --kill-on-bad-exit=1 ") != std::string::npos);
  CHECK(script.find("--slurm") == std::string::npos);  // the job itself trains

  std::optional<SlurmJobState> state;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  bool seen_running = false;
  while (std::chrono::steady_clock::now() < deadline) {
    state = query_slurm_job(id);
    REQUIRE(state);
    seen_running = seen_running || state->state == "RUNNING";
    if (state->finished()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  const std::string log = answer.at("log");
  INFO("job " << id << " log:\n" << (fs::exists(log) ? read_text_file(log) : std::string("(none)")));
  REQUIRE(state);
  CHECK(state->state == "COMPLETED");
  CHECK(state->exit_code == "0:0");
  CHECK(state->node_list == "n[1-2]");
  CHECK(fs::exists(log));

  // Two ranks trained: rank 0 wrote the metrics with both ranks' time split, and the checkpoints.
  std::ifstream metrics(run_paths("on-slurm").metrics());
  std::string line, last;
  int lines = 0;
  while (std::getline(metrics, line)) last = line, ++lines;
  CHECK(lines == 4);
  REQUIRE(!last.empty());
  CHECK(nlohmann::json::parse(last).at("ranks").size() == 2);
  CHECK(CheckpointStore(run_paths("on-slurm").checkpoints()).latest_good()->step == 4);
}

TEST_CASE("a submission Slurm refuses shows Slurm's own message", "[slurm][parallel]") {
  LoopbackCluster cluster;
  if (!cluster.ready()) return;
  test::MicroHome home(4);
  auto args = train_args("refused");
  args.insert(args.end(), {"--partition", "nosuch"});
  ProcessResult r = run_mugv(args);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("sbatch") != std::string::npos);
  CHECK(to_lower(r.err).find("partition") != std::string::npos);
  // Hostile values never reach a directive.
  args = train_args("hostile");
  args.insert(args.end(), {"--partition", "debug\n#SBATCH --wrap=id"});
  r = run_mugv(args);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("--partition") != std::string::npos);
}

TEST_CASE("a training job submitted to the server runs on two Slurm nodes through the Slurm executor",
          "[slurm][parallel]") {
  LoopbackCluster cluster;
  if (!cluster.ready()) return;
  test::MicroHome home(6);
  fs::create_directories(cluster_profiles_dir(home.path()));
  std::ofstream(cluster_profiles_dir(home.path()) / "loopback.toml")
      << "partition = \"debug\"\ntime = \"0:10:00\"\n";
  test::ServeProcess serve(home.path());
  Client client = serve.connect();
  const nlohmann::json params = {{"command", {"train"}},
                                 {"values",
                                  {{"train.preset", "micro"},
                                   {"train.dataset", "shapes"},
                                   {"train.vae_run", "vae0"},
                                   {"train.run", "via-server"},
                                   {"train.steps", 4},
                                   {"train.batch", 2},
                                   {"train.save_every", 2},
                                   {"train.threads", 1},
                                   {"train.prefetch", 0},
                                   {"train.comm_timeout", 60.0}}},
                                 {"executor", "slurm"},
                                 {"cluster", "loopback"},
                                 {"nodes", 2},
                                 {"tasks_per_node", 1}};
  const int64_t id =
      client.request(protocol::MessageType::submit_job, {{"kind", "train"}, {"params", params}})["job"]["id"]
          .get<int64_t>();
  std::string state;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (std::chrono::steady_clock::now() < deadline) {
    state = client.request(protocol::MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
    if (state == "succeeded" || state == "failed" || state == "cancelled") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  INFO(client.request(protocol::MessageType::job_logs, {{"job", id}, {"tail_lines", 60}})["text"]
           .get<std::string>());
  REQUIRE(state == "succeeded");
  // Both ranks trained (rank 0 wrote every rank's time split) and the metrics reached the server's catalog.
  std::ifstream metrics(run_paths("via-server").metrics());
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  REQUIRE(!last.empty());
  CHECK(nlohmann::json::parse(last).at("ranks").size() == 2);
  const auto job = client.request(protocol::MessageType::get_job, {{"job", id}});
  bool metrics_event = false;
  for (const auto& e : job["events"]) metrics_event = metrics_event || e["type"] == "metrics";
  CHECK(metrics_event);
}
