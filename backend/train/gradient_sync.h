#pragma once
// Gradient reduction of a multi-rank DiT run (docs/MUGV.md §6), after each rank's backward:
//   data parallel      every gradient is summed over the data-parallel group. Parameters are packed into
//                      buckets (~bucket_bytes, in reverse registration order, the order backward produces
//                      them); an autograd hook copies each gradient into its bucket as soon as it exists and
//                      the bucket's all-reduce starts when its last gradient arrives, so communication
//                      overlaps the rest of backward. The trainer scales the loss so a SUM is what it needs
//                      (each rank divides by the global element count).
//   sequence/context   inside the blocks each rank saw only its tokens (and, under tensor parallel, its
//   heads):
//                      replicated block parameters are summed over the tp × cp sequence group,
//                      tensor-parallel pieces over the context group (model/dit_parallel.h,
//                      tensor_parallel_role).
// The global gradient norm counts each tensor-parallel piece once and each replicated tensor once, over
// every pipeline stage.
// Not thread-safe: hooks run on the backward thread, which is the training thread on CPU.

#include "parallel/process_groups.h"
#include "train/optim.h"

#include <functional>
#include <memory>

namespace mugv {

struct GradientSyncOptions {
  int64_t bucket_bytes = int64_t(25) << 20;
};

class GradientSync {
 public:
  GradientSync(std::shared_ptr<ProcessGroups> groups, NamedTensors params, GradientSyncOptions options = {});
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Arms the hooks for the next backward. With `overlap` false (a step of several backward passes: micro-
  // batches, pipeline stages) nothing is sent during backward; end_step() reduces the accumulated gradients.
  void begin_step(bool overlap = true);
  // After backward: finishes the data-parallel sums and the partial-gradient sums, and writes the results
  // into every parameter's gradient.
  void end_step();
  // Milliseconds this step spent waiting for communication (after begin_step()).
  double communication_ms() const { return communication_ms_; }

  // The gradient norm over all ranks' pieces; when max_norm > 0 and the norm exceeds it, scales every
  // gradient by max_norm / (norm + 1e-6) as torch's clip_grad_norm_ does. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    torch::Tensor buffer;
    size_t arrived = 0;
    std::function<void()> wait;
  };
  void on_gradient(size_t param, const torch::Tensor& grad);
  void launch(Bucket& bucket);
  void launch_ready();
  void sum_partial(GroupKind kind, const std::vector<size_t>& params);

  std::shared_ptr<ProcessGroups> groups_;
  NamedTensors params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_;  // each parameter's bucket and its place in it
  std::vector<bool> arrived_;
  std::vector<size_t> partial_over_sequence_, partial_over_context_;
  std::vector<bool> tensor_parallel_piece_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  double communication_ms_ = 0;
};

}  // namespace mugv
