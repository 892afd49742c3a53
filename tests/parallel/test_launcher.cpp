#include "parallel/launcher.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

using namespace mugv;
using namespace std::chrono_literals;

TEST_CASE("launch gives every rank its torchrun environment", "[parallel]") {
  LaunchOptions o;
  o.nproc = 3;
  o.command = {"sh", "-c",
               "[ \"$WORLD_SIZE\" = 3 ] && [ \"$LOCAL_RANK\" = \"$RANK\" ] && [ -n \"$MASTER_PORT\" ]"};
  auto r = launch(o, CancelToken());
  CHECK(r.exit_code == 0);
  CHECK_FALSE(r.failure);
}

TEST_CASE("one failing rank fails the run at once, naming the rank, and stops the others", "[parallel]") {
  LaunchOptions o;
  o.nproc = 2;
  o.kill_grace = 2000ms;
  o.command = {"sh", "-c", "if [ \"$RANK\" = 1 ]; then sleep 0.2; exit 7; fi; sleep 60"};
  auto start = std::chrono::steady_clock::now();
  auto r = launch(o, CancelToken());
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.failure);
  CHECK(r.failure->rank == 1);
  CHECK(r.failure->exit_code == 7);
  CHECK(r.exit_code == 7);
  CHECK(r.message.find("rank 1 exited with code 7") != std::string::npos);
  CHECK(took < 10s);

  o.command = {"sh", "-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; sleep 60"};
  r = launch(o, CancelToken());
  REQUIRE(r.failure);
  CHECK(r.failure->rank == 0);
  CHECK(r.failure->signal == 9);
}

TEST_CASE("cancelling a launch stops every rank", "[parallel]") {
  LaunchOptions o;
  o.nproc = 2;
  o.command = {"sleep", "60"};
  CancelToken cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(300ms);
    cancel.request_cancel();
  });
  auto start = std::chrono::steady_clock::now();
  auto r = launch(o, cancel);
  canceller.join();
  CHECK(r.exit_code == 130);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}
