#include "parallel/launcher.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstring>

#include <map>
#include <thread>

namespace mugv {

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0) ::close(fd);
  if (port == 0) throw Error(ErrorCode::io, "127.0.0.1", "cannot find a free TCP port");
  return port;
}

LaunchResult launch(const LaunchOptions& o, const CancelToken& cancel) {
  if (o.nproc < 1 || o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw Error(ErrorCode::invalid_argument, "launch",
                cat("bad layout: nproc ", o.nproc, ", nnodes ", o.nnodes, ", node rank ", o.node_rank));
  if (o.command.empty()) throw Error(ErrorCode::usage, "launch", "no command to run (put it after --)");
  int port = o.master_port > 0 ? o.master_port : pick_free_port();
  int world = o.nproc * o.nnodes;

  std::map<pid_t, int> ranks;  // pid -> global rank
  for (int local = 0; local < o.nproc; ++local) {
    int rank = o.node_rank * o.nproc + local;
    std::vector<std::string> env = {cat("RANK=", rank),
                                    cat("WORLD_SIZE=", world),
                                    cat("LOCAL_RANK=", local),
                                    cat("LOCAL_WORLD_SIZE=", o.nproc),
                                    cat("MASTER_ADDR=", o.master_addr),
                                    cat("MASTER_PORT=", port)};
    std::vector<char*> argv;
    for (const auto& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      // Each rank leads its own process group, so stopping a rank stops whatever it started too (a shell's
      // children, helper processes): no orphan outlives the run or holds its output open.
      ::setpgid(0, 0);
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      ::execvp(argv[0], argv.data());
      std::fprintf(stderr, "mugv launch: cannot run %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    if (pid < 0) throw Error(ErrorCode::io, o.command[0], "fork failed");
    ::setpgid(pid, pid);  // also here: whichever of parent and child runs first
    ranks[pid] = rank;
  }

  LaunchResult result;
  std::optional<std::chrono::steady_clock::time_point> kill_at;
  auto stop_all = [&](int sig) {
    for (const auto& [pid, rank] : ranks) ::kill(-pid, sig);
  };
  bool cancelled = false;
  while (!ranks.empty()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0 && ranks.count(pid)) {
      int rank = ranks[pid];
      ranks.erase(pid);
      bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && !result.failure && !cancelled) {
        RankFailure f;
        f.rank = rank;
        if (WIFEXITED(status)) f.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) f.signal = WTERMSIG(status);
        result.failure = f;
        result.exit_code = f.exit_code > 0 ? f.exit_code : 128 + f.signal;
        result.message =
            f.signal ? cat("rank ", rank, " was killed by signal ", f.signal, " (", strsignal(f.signal), ")")
                     : cat("rank ", rank, " exited with code ", f.exit_code);
        if (!ranks.empty()) {
          result.message += cat("; stopping the other ", ranks.size(), " rank(s)");
          stop_all(SIGTERM);
          kill_at = std::chrono::steady_clock::now() + o.kill_grace;
        }
      }
      continue;
    }
    if (cancel.cancel_requested() && !cancelled) {
      cancelled = true;
      stop_all(SIGTERM);
      kill_at = std::chrono::steady_clock::now() + o.kill_grace;
      if (!result.failure) {
        result.exit_code = 130;
        result.message = "cancelled; stopped every rank";
      }
    }
    if (kill_at && std::chrono::steady_clock::now() > *kill_at) {
      stop_all(SIGKILL);
      kill_at.reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace mugv
