// A training job through the real server and worker processes on a micro model: an interrupted attempt is
// continued from its checkpoint by the retry, never refused as "a run of this name exists".
#include "service/client.h"
#include "support/micro_home.h"
#include "support/serve_process.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <sstream>

using namespace mugv;
using namespace std::chrono_literals;
using protocol::MessageType;

namespace {

nlohmann::json micro_train_job(const std::string& run, int64_t steps) {
  return {{"kind", "train"},
          {"params",
           {{"command", {"train"}},
            {"positional", nlohmann::json::array()},
            {"values",
             {{"train.preset", "micro"},
              {"train.dataset", "shapes"},
              {"train.vae_run", "vae0"},
              {"train.run", run},
              {"train.steps", steps},
              {"train.batch", 2},
              {"train.save_every", 25},
              {"train.threads", 1},
              {"train.prefetch", 0}}}}}};
}

}  // namespace

TEST_CASE("an interrupted training job is retried as a continuation of its run", "[service][train]") {
  test::MicroHome home(6);
  test::ServeProcess serve(home.path());
  Client client = serve.connect();
  const int64_t id =
      client.request(MessageType::submit_job, micro_train_job("retried", 1500))["job"]["id"].get<int64_t>();
  auto job = [&] { return client.request(MessageType::get_job, {{"job", id}}); };
  auto log = [&] {
    return client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 400}})["text"]
        .get<std::string>();
  };
  CheckpointStore store(run_paths("retried").checkpoints());
  const bool checkpointed =
      test::wait_until([&] { return !store.list().empty() || job()["job"]["state"] == "failed"; },
                       120000ms) &&
      !store.list().empty();
  INFO(log());
  REQUIRE(checkpointed);
  const auto pid = job()["job"]["worker_pid"].get<int64_t>();
  REQUIRE(pid > 0);
  int signal = SIGKILL;
  SECTION("its worker is killed") {
    signal = SIGKILL;
  }
  SECTION("its worker hangs: the server kills it once it misses its heartbeats") {
    signal = SIGSTOP;
  }
  ::kill(static_cast<pid_t>(pid), signal);
  const int64_t interrupted_at = store.list().back().step;

  std::string state;
  REQUIRE(test::wait_until(
      [&] {
        state = job()["job"]["state"].get<std::string>();
        return state == "succeeded" || state == "failed";
      },
      240000ms));
  const std::string text = log();
  INFO(text);
  REQUIRE(state == "succeeded");
  CHECK(job()["job"]["attempts"] == 2);
  CHECK(text.find("continuing from step") != std::string::npos);
  CHECK(store.list().back().step == 1500);
  // The retry started where the interrupted attempt's checkpoint left off, not from step 1.
  std::ifstream metrics(run_paths("retried").metrics());
  int64_t restarts = 0, previous = 0;
  for (std::string line; std::getline(metrics, line);) {
    const int64_t step = nlohmann::json::parse(line).at("step");
    if (step <= previous) {
      ++restarts;
      CHECK(step == interrupted_at + 1);
    }
    previous = step;
  }
  CHECK(restarts <= 1);
}

TEST_CASE("retrying a cancelled training job continues its run instead of refusing the run name",
          "[service][train]") {
  test::MicroHome home(6);
  test::ServeProcess serve(home.path());
  Client client = serve.connect();
  const int64_t id =
      client.request(MessageType::submit_job, micro_train_job("retried-by-hand", 1200))["job"]["id"]
          .get<int64_t>();
  auto state = [&] {
    return client.request(MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
  };
  CheckpointStore store(run_paths("retried-by-hand").checkpoints());
  REQUIRE(test::wait_until([&] { return !store.list().empty() || state() == "failed"; }, 120000ms));
  client.request(MessageType::cancel_job, {{"job", id}});
  REQUIRE(test::wait_until([&] { return state() == "cancelled"; }, 60000ms));

  client.request(MessageType::retry_job, {{"job", id}});
  REQUIRE(test::wait_until([&] { return state() == "succeeded" || state() == "failed"; }, 240000ms));
  const std::string log =
      client.request(MessageType::job_logs, {{"job", id}, {"tail_lines", 400}})["text"].get<std::string>();
  INFO(log);
  CHECK(state() == "succeeded");
  CHECK(log.find("continuing from step") != std::string::npos);
  CHECK(store.list().back().step == 1200);
}
