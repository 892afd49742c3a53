#pragma once
// The forward and backward passes of one training step run as micro-batches through pipeline stages
// (parallel/pipeline.h): this stage runs the ops of its chunks in schedule order. Activations
// (model/dit.h DiTPassTensors: the sequence and the conditioning that travels with it) go to the stage of the
// next chunk, their gradients come back, over c10d point to point in the pipeline group: sends are posted
// without waiting, receives block. With one stage this is plain gradient accumulation over the
// micro-batches (no communication; `groups` may be null).
//
// Gradients: each micro-batch's loss is its share of the step's loss (the hook scales it), so the gradients
// accumulated in the parameters after the step are the whole step's. A received tensor is a leaf of this
// stage's graph; after its backward, the leaf's gradient goes back to the stage that sent it (zeros where
// nothing here used it). Tensors the next stage uses without change (the conditioning) are sent on as they
// came, so their gradients add up along the pipeline.
//
// Messages: each transfer is a small header (which tensors, dtype, shape) followed by the tensors, on a tag
// unique to (direction, chunk, micro-batch), so Gloo matches them whatever order two stages post them in.
// NCCL ignores tags and matches point-to-point messages by order: in both schedules each direction between
// two stages carries one kind of message (activations one way, gradients the other), sent and received in
// the same virtual micro-batch order at both ends. Sends are held until delivered, then released. (Run
// over Gloo here; no NCCL run of the pipeline has been made.)
// Not thread-safe; every stage of a pipeline group must call it for the same step with the same shape.

#include "model/dit.h"
#include "parallel/pipeline.h"
#include "parallel/process_groups.h"

#include <functional>
#include <memory>

namespace mugv {

struct PipelineStepHooks {
  // Chunk 0: starts micro-batch j's pass (text encoder, embedders, conditioning).
  std::function<DiTPass(int micro_batch)> begin;
  // Any later chunk: continues micro-batch j's pass from what the previous chunk sent (leaves of this
  // stage's graph).
  std::function<DiTPass(int micro_batch, const DiTPassTensors& received)> resume;
  // Runs blocks [range.first, range.last) of the pass.
  std::function<void(DiTPass& pass, BlockRange range)> blocks;
  // The last chunk: micro-batch j's share of the step's loss (a scalar with gradient).
  std::function<torch::Tensor(int micro_batch, DiTPass& pass)> loss;
};

struct PipelineStepResult {
  double loss = 0;        // the sum of the micro-batch losses this stage computed (0 off the last stage)
  double receive_ms = 0;  // waiting for activations or gradients (the bubble, seen from this stage)
  double send_ms = 0;     // waiting at the end of the step for this stage's sends to be delivered
  double total_ms = 0;    // the whole schedule on this stage, waits included
};

// Runs stage `stage`'s ops for one step of `micro_batches` micro-batches; received tensors are placed on
// `device` (the model's). Throws Error(invalid_argument)
// like validate_pipeline, and Error(internal) when a received message does not match the schedule.
PipelineStepResult run_pipeline_step(const std::shared_ptr<ProcessGroups>& groups, const PipelineShape& shape,
                                     int stage, int micro_batches, const torch::Device& device,
                                     const PipelineStepHooks& hooks);

}  // namespace mugv
