// Real multi-process c10d (Gloo on loopback): the ranks are separate processes started by the launcher.
#include "parallel/launcher.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;

namespace {

int run_ranks(int nproc, std::vector<std::string> args) {
  LaunchOptions o;
  o.nproc = nproc;
  o.kill_grace = std::chrono::milliseconds(3000);
  o.command = {(test::binary_dir() / "tests" / "parallel" / "rank_check").string()};
  o.command.insert(o.command.end(), args.begin(), args.end());
  return launch(o, CancelToken()).exit_code;
}

}  // namespace

TEST_CASE("collectives on every group of 2- and 4-rank layouts agree with the expected sums",
          "[parallel][gloo]") {
  for (const char* layout : {"tp2.cp1.dp1", "tp1.cp2.dp1", "tp1.cp1.dp2"}) {
    INFO(layout);
    CHECK(run_ranks(2, {"collectives", layout}) == 0);
  }
  CHECK(run_ranks(4, {"collectives", "tp2.cp1.dp2"}) == 0);
}

TEST_CASE("a rank that never arrives is named in the timeout", "[parallel][gloo]") {
  LaunchOptions o;
  o.nproc = 1;
  o.command = {"env", "WORLD_SIZE=2", (test::binary_dir() / "tests" / "parallel" / "rank_check").string(),
               "missing"};
  CHECK(launch(o, CancelToken()).exit_code == 0);
}
