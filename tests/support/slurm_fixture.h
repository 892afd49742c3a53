#pragma once
// Fixtures for tests against real Slurm and a real `mugv serve`: a Slurm cluster on loopback
// (tests/parallel/slurm_cluster.sh: slurmctld + two slurmd "nodes", munge, state in a temporary folder; it
// exits 77 where Slurm or root is missing, and the fixture then carries the reason to skip with), and the
// `mugv serve` binary on an ipc socket. Header-only; needs the service library (Client).
#include "core/error.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "service/client.h"
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

inline fs::path slurm_cluster_script() { return source_dir() / "tests" / "parallel" / "slurm_cluster.sh"; }

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
  ~LoopbackCluster() {
    if (!conf.empty()) (void)run_process({slurm_cluster_script().string(), "stop", dir.path().string()}, 30s);
    ::unsetenv("SLURM_CONF");
  }
};

// The real `mugv serve` on an ipc socket in `home` (its log in home/serve.log), stopped with SIGTERM.
class ServeProcess {
 public:
  explicit ServeProcess(const fs::path& home)
      : home_(home), endpoint_("ipc://" + (home / "sock" / "mugv.sock").string()) {
    const std::string exe = (test::binary_dir() / "bin" / "mugv").string();
    std::vector<std::string> args = {exe, "serve", "--home", home.string(), "--listen", endpoint_};
    const std::string log = (home / "serve.log").string();
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  // A client, once the server answers.
  Client connect() const {
    for (int i = 0; i < 100; ++i) {
      try {
        return Client(endpoint_, 1000ms);
      } catch (const Error&) {
        std::this_thread::sleep_for(100ms);
      }
    }
    FAIL("mugv serve did not answer; its log:\n" << read_text_file(home_ / "serve.log"));
    throw Error(ErrorCode::timeout, endpoint_, "no server");
  }
  std::string log() const { return read_text_file(home_ / "serve.log"); }

 private:
  fs::path home_;
  std::string endpoint_;
  pid_t pid_ = -1;
};

}  // namespace mugv::test
