#pragma once
// Running a program to completion and capturing what it prints: captioning commands, Slurm's sbatch /
// scontrol / scancel. No shell is involved (argv is passed as is), so arguments need no quoting.
// Thread-safe (each call has its own pipes and child).

#include <chrono>
#include <string>
#include <vector>

namespace mugv {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  bool timed_out = false;
  std::string out, err;
};

// Runs argv[0] (searched in PATH) with the arguments, capturing stdout and stderr, killing it after
// `timeout`. Throws Error(not_found) when the program cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

}  // namespace mugv
