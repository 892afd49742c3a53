#pragma once
// Optimiser pieces of the trainers: AdamW with named, serialisable state, an online EMA of weights,
// and the learning-rate schedule. Kept here (rather than torch::optim::AdamW) so that the state is
// keyed by parameter NAME: checkpoints stay readable by other tools and survive module re-creation,
// and a resumed run continues bit-identically (every tensor is saved and restored exactly).
//
// AdamW follows Loshchilov & Hutter (decoupled weight decay) as torch.optim.AdamW does:
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   p ← p − lr · (m / (1−β1^k)) / (sqrt(v / (1−β2^k)) + eps)
// Parameters without a gradient in a step are skipped (their state does not advance).
// Not thread-safe; the parameter tensors are shared with the module (not owned).

#include "core/safetensors.h"
#include "model/weights.h"  // save_named_tensors

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// What the trainer needs from an optimiser: plain AdamW here, or ZeRO-1 AdamW with its state sharded
// across data-parallel ranks (parallel/zero_optimizer.h). State tensors are named "exp_avg.<param>" and
// "exp_avg_sq.<param>" (a ZeRO rank writes flat pieces "exp_avg.<param>@<offset>").
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void zero_grad() = 0;
  virtual void step(double lr) = 0;
  virtual int64_t steps_taken() const = 0;
  // This rank's state as it is written to its checkpoint file, with the file's metadata.
  [[nodiscard]] virtual NamedTensors state() const = 0;
  [[nodiscard]] virtual std::map<std::string, std::string> state_metadata() const = 0;
  // Every state tensor a checkpoint holds for this optimizer, whole per parameter ("exp_avg.<param>"), with
  // the parameter (this rank's piece) whose shape it has: what load_state expects.
  [[nodiscard]] virtual NamedTensors state_targets() const = 0;
  // Restores from the whole per-parameter state ("exp_avg.<param>", this rank's parameter shapes) and the
  // step count. Throws Error(corrupt) naming `subject` when a tensor is missing or has the wrong shape;
  // the optimiser is unchanged then.
  virtual void load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                          const std::string& subject) = 0;
  // Per-parameter multipliers of the learning rate (and of the decoupled weight decay with it), in the order
  // the parameters were given (μP, train/parametrization.h); all 1 until set.
  void set_lr_scales(std::vector<double> scales) { lr_scales_ = std::move(scales); }

 protected:
  double lr_scale(size_t param) const { return param < lr_scales_.size() ? lr_scales_[param] : 1.0; }

 private:
  std::vector<double> lr_scales_;
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// One parameter (or a flat piece of one) with its gradient, moments and learning rate, for update_all. The
// tensors are handles: updating them updates the parameter and state they view.
struct AdamWSlot {
  torch::Tensor param, grad, exp_avg, exp_avg_sq;
  double lr = 0;
};

class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamWOptions options);

  void zero_grad() override;
  void step(double lr) override;
  int64_t steps_taken() const override { return step_; }
  NamedTensors state() const override;
  std::map<std::string, std::string> state_metadata() const override;
  NamedTensors state_targets() const override;
  void load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                  const std::string& subject) override;

  // State as safetensors: "exp_avg.<name>", "exp_avg_sq.<name>" (F32) and metadata "step".
  void save(const std::filesystem::path& path) const;
  // Throws Error(corrupt) naming the file when a tensor is missing or has the wrong shape; the
  // optimiser is unchanged then.
  void load(const std::filesystem::path& path);
  // Bytes of state (moments) per parameter byte: 2 for fp32.
  static constexpr int kStateCopies = 2;
  // The AdamW update of one parameter (or a flat piece of one) in place, at bias corrections bc1/bc2.
  // Contiguous fp32 CPU tensors are updated in one vectorised pass whose bits do not depend on the thread
  // count; anything else through update_by_ops.
  static void update(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                     torch::Tensor& exp_avg_sq, const AdamWOptions& options, double lr, double bc1,
                     double bc2);
  // The same update as a sequence of LibTorch ops (seven kernels and a temporary): any device or dtype.
  static void update_by_ops(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                            torch::Tensor& exp_avg_sq, const AdamWOptions& options, double lr, double bc1,
                            double bc2);
  // Updates every slot at optimizer step `step` (1-based). With LibTorch 2.x, contiguous fp32 CUDA slots go
  // through LibTorch's multi-tensor fused AdamW kernel, one launch per learning rate; the rest as update().
  static void update_all(const std::vector<AdamWSlot>& slots, const AdamWOptions& options, int64_t step);
  // Which arithmetic update_all gives a slot: "fused_cuda" (LibTorch's multi-tensor kernel), "one_pass_cpu"
  // (train/adamw_kernel.h) or "ops" (update_by_ops).
  static const char* update_path(const AdamWSlot& slot);

 private:
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// AdamW's state names for `params`: "exp_avg.<name>" and "exp_avg_sq.<name>" of each, with the parameter.
[[nodiscard]] NamedTensors adamw_state_targets(const NamedTensors& params);

// Online exponential moving average of a set of named tensors: ema ← d·ema + (1−d)·p with
// d = min(decay, (1 + step) / (10 + step)) after optimizer step `step` (1-based). The warm-up keeps
// a short run's average from being dominated by the initial weights (0.999^1000 still gives them
// 37 %, and an average of a zero-initialised adaLN model with its trained self samples noise).
class Ema {
 public:
  Ema(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters, double decay);
  void update(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters, int64_t step);
  // The decay applied after step `step`.
  [[nodiscard]] double decay_at(int64_t step) const;
  // The averaged tensors, by the same names (shared, not copies).
  const std::vector<std::pair<std::string, torch::Tensor>>& tensors() const { return shadow_; }
  void save(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata) const;
  void load(const std::filesystem::path& path);
  double decay() const { return decay_; }

 private:
  std::vector<std::pair<std::string, torch::Tensor>> shadow_;
  double decay_;
};

enum class LrSchedule { unknown = 0, constant, cosine };
const char* to_string(LrSchedule schedule);
std::optional<LrSchedule> lr_schedule_from_string(std::string_view name);

// Learning rate of 1-based step `step`: linear warm-up from lr/warmup to lr over `warmup_steps`,
// then constant, or cosine decay to min_lr at `total_steps`.
[[nodiscard]] double scheduled_lr(int64_t step, double lr, int64_t warmup_steps, int64_t total_steps,
                                  LrSchedule schedule, double min_lr = 0.0);

// The gradients of `params` (those that have one) scaled down together so that their global L2 norm is at
// most `max_norm`; max_norm <= 0 leaves them as they are. Returns the norm before clipping, measured either
// way.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// Copies the file's tensors into `tensors` by name, checking every name and shape first.
// Throws Error(corrupt) naming the file and the first problem; nothing is copied then.
void load_named_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::filesystem::path& path, const std::string& prefix = {});

}  // namespace mugv
