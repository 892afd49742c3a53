#pragma once
// `mugv launch`: starts the ranks of one node as child processes with the torchrun-style environment
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), forwards a cancel (SIGINT/
// SIGTERM of the launcher) to them, and fails the whole run as soon as one rank fails: the others (each rank
// with the processes it started: one process group per rank) get
// SIGTERM, then SIGKILL after `kill_grace`, and the result names the first rank that failed and how.
// Torch-free. Not thread-safe (one launch per process at a time).

#include "core/progress.h"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct LaunchOptions {
  int nproc = 1;  // ranks on this node
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port on this machine (single-node runs)
  std::vector<std::string> command;
  std::chrono::milliseconds kill_grace{10000};
};

struct RankFailure {
  int rank = 0;
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
};

struct LaunchResult {
  int exit_code = 0;                   // 0 when every rank succeeded
  std::optional<RankFailure> failure;  // the first rank that failed
  std::string message;                 // "rank 1 exited with code 7; stopped the other 1 rank(s)"
};

// Throws Error(invalid_argument) for bad options and Error(not_found) when the command cannot start.
LaunchResult launch(const LaunchOptions& options, const CancelToken& cancel);

// A TCP port that was free on 127.0.0.1 a moment ago.
int pick_free_port();

}  // namespace mugv
