#pragma once
// One harness for tests that start a server and wait until it answers, never for a fixed time:
//   - wait_until(ready, timeout): polls a condition every 20 ms;
//   - server_answers(endpoint): a client can say hello there (ipc or a tcp endpoint without CURVE);
//   - ServeProcess: the real `mugv serve` as a child process in its own home (its own command line, key files
//     and log), ready once its log says it serves on every --listen endpoint, stopped with SIGTERM and
//     reaped (or killed like a crash).
// Header-only; needs the service library (Client).
#include "core/error.h"
#include "core/paths.h"
#include "service/client.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace mugv::test {

// True once `ready()` holds; false when `timeout` passes first.
inline bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// A client can connect and say hello at `endpoint` within `each` (ipc, or tcp without CURVE).
inline bool server_answers(const std::string& endpoint,
                           std::chrono::milliseconds each = std::chrono::milliseconds(300)) {
  try {
    Client probe(endpoint, each);
    return true;
  } catch (const Error&) {
    return false;
  }
}

class ServeProcess {
 public:
  // `args` are added to `mugv serve --home HOME --heartbeat-ms 200`; without a --listen among them the server
  // listens on ipc://HOME/sock/mugv.sock. Its output goes to `log` (default HOME/serve.log). Fails the test
  // when the server exits or does not serve every endpoint within 20 s.
  // `open_files` > 0 sets the server's soft and hard limits on open files (RLIMIT_NOFILE).
  explicit ServeProcess(const fs::path& home, std::vector<std::string> args = {}, fs::path log_file = {},
                        rlim_t open_files = 0)
      : home_(home), log_(log_file.empty() ? home / "serve.log" : std::move(log_file)) {
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == "--listen") endpoints_.push_back(args[i + 1]);
    if (endpoints_.empty()) {
      endpoints_.push_back("ipc://" + (home / "sock" / "mugv.sock").string());
      args.insert(args.end(), {"--listen", endpoints_.front()});
    }
    const std::string exe = (binary_dir() / "bin" / "mugv").string();
    std::vector<std::string> argv_s = {exe, "serve", "--home", home.string(), "--heartbeat-ms", "200"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::setenv("MUGV_HOME", home.c_str(), 1);
      if (open_files > 0) {
        const rlimit limit{open_files, open_files};
        ::setrlimit(RLIMIT_NOFILE, &limit);
      }
      ::execv(exe.c_str(), argv.data());
      ::_exit(127);
    }
    bool exited = false;
    const bool ready = wait_until(
        [&] {
          int status = 0;
          if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            exited = true;
            pid_ = -1;
            return true;
          }
          const std::string text = this->log();
          for (const auto& endpoint : endpoints_)
            if (text.find("serving on " + endpoint) == std::string::npos) return false;
          return true;
        },
        std::chrono::seconds(20));
    if (exited || !ready)
      FAIL("mugv serve " << (exited ? "exited" : "did not start serving") << "; its log:\n" << log());
  }
  ~ServeProcess() { stop(); }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  void stop() { end(SIGTERM); }
  // Ends the server the way a crash does (SIGKILL): no goodbye on any socket.
  void kill() { end(SIGKILL); }
  const std::string& endpoint() const { return endpoints_.front(); }
  const fs::path& home() const { return home_; }
  // A client of the first endpoint (ipc, or tcp without CURVE).
  Client connect() const { return Client(endpoint(), std::chrono::milliseconds(5000)); }
  // The server's output so far ("" before it has written any).
  std::string log() const { return fs::exists(log_) ? read_text_file(log_) : std::string(); }

 private:
  void end(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  fs::path home_, log_;
  std::vector<std::string> endpoints_;
  pid_t pid_ = -1;
};

}  // namespace mugv::test
