#pragma once
// One training step of a DiT run on this rank: the loop (trainer.cpp run_loop) takes the step's data
// (next_step_data) and calls train_step, which runs forward_backward (a flow loss, as micro-batches through
// pipeline stages when there are any, or a DPO / KTO loss against the frozen reference) and then the update.
// Internal to the trainer (trainer_session.h).

#include "train/flow.h"
#include "train/trainer_session.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <vector>

namespace mugv::dit_training {

// One step's inputs on this rank: its samples of the global batch, tokenised.
struct StepData {
  torch::Tensor latents, fps, ids, mask;  // this rank's samples [b, ...]
  int64_t global_batch = 0, first = 0;    // the batch's size and this rank's first sample in it
  int64_t height = 0, width = 0;          // pixel geometry of the bucket (the timestep shift)
  DataCursor cursor, next_cursor;
  double wait_ms = 0;
  std::vector<int64_t> clip_ids;  // this rank's samples (post-training: indices of its preference items)
  FlowOptions flow;               // the step's flow options: the run's, as its curriculum stage changes them
  nlohmann::json curriculum;      // what the curriculum did to this step (null without one), for the metrics
};

// Reads the next batch (on the first rank of this replica group: `loader` is null on the others) and hands
// this rank its samples. The tp x cp x pp ranks of one data-parallel replica train on the same samples: one
// of them reads and tokenises, the others receive the tensors by broadcast, so the files are read once per
// replica.
StepData next_step_data(const Session& s, LatentLoader* loader, int64_t text_tokens);

// Applies the run's curriculum stage to step `step`'s batch (train/curriculum.h): images (the first latent
// frame of each clip) or the clips' first k latent frames, and the stage's first-frame conditioning. Every
// rank decides the same from (seed, step). Nothing changes without a curriculum.
void apply_curriculum(const Session& s, StepData& batch, int64_t step);

// What one step's forward and backward left besides the gradients.
struct ForwardBackward {
  double loss = 0;  // the batch's loss, the same on every rank
  double pipeline_wait_ms = 0, pipeline_ms = 0;
  nlohmann::json objective_metrics;  // post-training objectives: accuracy, margin, reference point
};

struct StepOutcome {
  ForwardBackward pass;
  double grad_norm = 0, lr = 0, communication_ms = 0;
};

// One training step: forward and backward (each parameter's gradient is then its part of the gradient of
// the whole batch's loss), the gradients reduced over the data-parallel ranks and clipped, the optimizer's
// step at the scheduled rate, the EMAs. A non-finite loss (before the backward) or gradient norm (before the
// update) calls `stop_nonfinite`, which throws. Collective.
StepOutcome train_step(Session& s, const StepData& batch, int64_t step,
                       const std::function<void(const char*, double)>& stop_nonfinite);

}  // namespace mugv::dit_training
