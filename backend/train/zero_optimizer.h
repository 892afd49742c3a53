#pragma once
// ZeRO stage 1: AdamW whose moments are sharded across the data-parallel ranks. The parameters (this
// rank's tensor-parallel pieces) are seen as one flat vector in registration order, padded to a multiple
// of the data-parallel size and cut into equal contiguous ranges; each rank keeps the moments of its range
// only, updates that range with the reduced gradients (AdamW::update, the same arithmetic as plain AdamW,
// so ZeRO and one process agree), then every rank's updated range is all-gathered into the parameters.
// Gradients arrive already summed over the data-parallel group (gradient_sync.h); on Gloo a true
// reduce-scatter does not exist in LibTorch 1.13, so the reduction is a full all-reduce and the shard is
// read from it (process_groups.h).
//
// Checkpoint state: each rank writes its pieces as "exp_avg.<param>@<offset>" (1-D, offset into the
// flattened parameter), so a checkpoint can be reassembled under any other layout (sharded_checkpoint.h).
// Parameters without a gradient in a step are skipped, as plain AdamW does. Not thread-safe.

#include "parallel/process_groups.h"
#include "train/optim.h"

#include <memory>

namespace mugv {

class ZeroAdamW final : public Optimizer {
 public:
  ZeroAdamW(std::shared_ptr<ProcessGroups> groups, NamedTensors named_parameters, AdamWOptions options);

  void zero_grad() override;
  void step(double lr) override;
  int64_t steps_taken() const override { return step_; }
  NamedTensors state() const override;
  std::map<std::string, std::string> state_metadata() const override;
  NamedTensors state_targets() const override { return adamw_state_targets(params_); }
  void load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                  const std::string& subject) override;

  // Elements of optimizer state this rank holds (per moment).
  int64_t shard_elements() const { return end_ - begin_; }

 private:
  struct Piece {
    size_t param = 0;
    int64_t offset = 0;  // into the flattened parameter
    int64_t length = 0;
    int64_t shard_offset = 0;  // into this rank's moments
  };
  std::shared_ptr<ProcessGroups> groups_;
  NamedTensors params_;
  std::vector<int64_t> param_offsets_;  // of each parameter in the flat vector
  int64_t shard_size_ = 0, begin_ = 0, end_ = 0;
  std::vector<Piece> pieces_;
  torch::TensorOptions state_options_;  // fp32 on the parameters' device
  torch::Tensor exp_avg_, exp_avg_sq_;  // [shard_size]
  torch::Tensor gathered_;              // [shard_size · dp]: every rank's updated range
  std::vector<torch::Tensor> gathered_views_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// "exp_avg.<param>@<offset>" -> ("exp_avg.<param>", offset); nullopt for names without a piece offset.
[[nodiscard]] std::optional<std::pair<std::string, int64_t>> parse_state_piece(const std::string& name);

}  // namespace mugv
