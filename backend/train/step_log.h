#pragma once
// What both training loops (the DiT's, train/trainer.h, and the VAE's, train/vae_trainer.h) write per step
// and how they stop on a diverged step, written once. Torch-free.
//
//   MetricsLog log(paths, resumed_step);   // metrics.jsonl, cut back to resumed_step (a resume rewrites the
//   log.append(step_json);                 // steps after its checkpoint); one flushed line per step
//   if (!std::isfinite(loss)) throw nonfinite_step_error(run, step, "loss", loss, last_saved);

#include "core/error.h"
#include "train/run_layout.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>

namespace mugv {

class MetricsLog {
 public:
  MetricsLog() = default;  // writes nothing (the ranks of a multi-process run other than the leader)
  // Keeps the lines of steps <= `resumed_step` (and drops a line cut by a crash), then appends. Throws
  // Error(io) naming the file when it cannot be written.
  MetricsLog(const RunPaths& paths, int64_t resumed_step);
  // One line, flushed: a reader (the server, `mugv runs`) sees each step as soon as it ends.
  void append(const nlohmann::json& step);

 private:
  std::ofstream out_;
};

// The error that stops a run whose `what` ("loss", "gradient norm") is not finite at `step`: it names the
// run, the value, the checkpoint that is kept (`last_saved` 0: none yet) and what to change.
[[nodiscard]] Error nonfinite_step_error(const std::string& run, int64_t step, const std::string& what,
                                         double value, int64_t last_saved);

}  // namespace mugv
