#pragma once
// Fixtures for tests against real Slurm and a real `mugv serve`: a Slurm cluster on loopback
// (tests/parallel/slurm_cluster.sh: slurmctld + two slurmd "nodes", munge, state in a temporary folder; it
// exits 77 where Slurm or root is missing, and the fixture then carries the reason to skip with), and with
// `mugv serve` from serve_process.h. Header-only; needs the service library (Client).
#include "core/error.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "service/client.h"
#include "support/serve_process.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace mugv::test {

using namespace std::chrono_literals;

inline fs::path slurm_cluster_script() {
  return source_dir() / "tests" / "parallel" / "slurm_cluster.sh";
}

// Starts the cluster for the life of the object; `conf` is empty (with `skip_reason`) when it cannot run
// here.
struct LoopbackCluster {
  TempDir dir{"mugv-slurm"};
  std::string conf, skip_reason;
  LoopbackCluster() {
    ProcessResult r = run_process({slurm_cluster_script().string(), "start", dir.path().string(), "2"}, 90s);
    if (r.exit_code == 77) {
      skip_reason = trim(r.err);
      return;
    }
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    conf = trim(r.out);
    ::setenv("SLURM_CONF", conf.c_str(), 1);
  }
  // True when the cluster runs; otherwise false, with the reason as a warning (the caller returns: skipped).
  bool ready() const {
    if (conf.empty()) WARN("skipped: " << skip_reason);
    return !conf.empty();
  }
  ~LoopbackCluster() {
    if (!conf.empty()) (void)run_process({slurm_cluster_script().string(), "stop", dir.path().string()}, 30s);
    ::unsetenv("SLURM_CONF");
  }
};

}  // namespace mugv::test
