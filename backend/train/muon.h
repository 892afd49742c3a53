#pragma once
// Muon (momentum + Newton–Schulz orthogonalisation) for the hidden matrices of the DiT and of the jointly
// trained text encoder, with AdamW for everything else: embeddings, norms, biases, the adaLN tables
// (scale_shift_table), the caption projection, the timestep embedder and the output layer.
//
// Per Muon matrix W (rows × cols, or each of the `parts` row blocks of a fused projection: qkv 3, kv 2,
// orthogonalised on their own because q, k and v are separate maps):
//   B ← μ·B + G;  U = G + μ·B (Nesterov) or B;  O = NS5(U);  W ← W·(1 − lr·wd) − lr·s·rms·O
// NS5 is the quintic Newton–Schulz iteration (a, b, c) = (3.4445, −4.7750, 2.0315), five steps, on U scaled
// to unit Frobenius norm; it maps U = PΣQᵀ to about PQᵀ (singular values land in ~[0.7, 1.2], not exactly
// 1: the coefficients trade exactness for speed). rms = 0.2·sqrt(max(rows, cols)) gives O the update RMS of
// AdamW (about 0.2), so Muon and AdamW parameters share the run's learning rate; s (--muon-lr-scale) is
// Muon's own multiplier on top. No bias correction (the momentum buffer starts at zero, as in Muon).
//
// Parallel layouts: gradients arrive reduced (gradient_sync.h). Under tensor parallel every rank holds
// pieces of a split matrix; the pieces of U are all-gathered over the tensor group, the whole matrix is
// orthogonalised (exact: the same result as one process, no per-shard approximation) and each rank keeps
// its piece. Under ZeRO-1 the state is sharded by whole parameters: each parameter is owned by one
// data-parallel rank (greedy balance by size, the same on every rank), which alone keeps its state and
// updates it; the updated parameters are then all-gathered. The tensor-parallel ranks of one data-parallel
// rank own the same parameters, so the tensor-group gathers happen among owners only.
//
// Checkpoint state: "momentum.<param>" (Muon) and "exp_avg.<param>", "exp_avg_sq.<param>" (AdamW); a ZeRO
// rank writes its parameters' state whole as "<kind>.<param>@0", which sharded_checkpoint.h reassembles like
// ZeroAdamW's pieces. Metadata "optimizer" = "muon" or "muon-zero1". Not thread-safe.

#include "parallel/process_groups.h"
#include "train/optim.h"

#include <memory>

namespace mugv {

struct MuonOptions {
  double momentum = 0.95;
  bool nesterov = true;
  int ns_steps = 5;
  double lr_scale = 1.0;  // Muon's learning rate = run lr × lr_scale (after the RMS matching)
};

// Row blocks Muon orthogonalises `name` (a trainable parameter of a DiT run) in; 0: AdamW updates it.
[[nodiscard]] int muon_parts(const std::string& name, const torch::Tensor& parameter);
// NS5 of a matrix (fp32, any shape; wide or tall). `steps` ≥ 1.
[[nodiscard]] torch::Tensor newton_schulz(const torch::Tensor& matrix, int steps = 5);
// The factor that gives an orthogonalised rows × cols update AdamW's RMS: 0.2·sqrt(max(rows, cols)).
[[nodiscard]] double muon_rms_scale(int64_t rows, int64_t cols);

class Muon final : public Optimizer {
 public:
  // `groups` null: one process. `zero_sharded`: state sharded over the data-parallel group (needs groups).
  Muon(std::shared_ptr<ProcessGroups> groups, NamedTensors named_parameters, MuonOptions muon,
       AdamWOptions adam, bool zero_sharded);

  void zero_grad() override;
  void step(double lr) override;
  int64_t steps_taken() const override { return step_; }
  NamedTensors state() const override;
  std::map<std::string, std::string> state_metadata() const override;
  NamedTensors state_targets() const override;
  void load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                  const std::string& subject) override;

  // Parameters updated by Muon (the rest by AdamW).
  int64_t muon_parameter_count() const;

 private:
  struct Slot {
    std::string name;
    torch::Tensor param;
    int parts = 0;                      // Muon row blocks; 0: AdamW
    bool split = false;                 // a tensor-parallel piece (gathered before orthogonalising)
    int owner = -1;                     // ZeRO: the data-parallel rank that updates it; -1: every rank
    int64_t packed_offset = 0;          // ZeRO: where it lies in its owner's part of the parameter gather
    torch::Tensor momentum;             // Muon
    torch::Tensor exp_avg, exp_avg_sq;  // AdamW
  };
  bool mine(const Slot& slot) const;
  void allocate_state(Slot& slot) const;
  torch::Tensor orthogonalised(const Slot& slot, const torch::Tensor& update) const;
  void gather_owned_parameters();

  std::shared_ptr<ProcessGroups> groups_;
  std::vector<Slot> slots_;
  MuonOptions muon_;
  AdamWOptions adam_;
  bool zero_sharded_ = false;
  int dp_rank_ = 0, dp_size_ = 1, tp_rank_ = 0, tp_size_ = 1;
  int64_t owned_capacity_ = 0;       // ZeRO: elements of the largest rank's parameters (the gather's size)
  torch::Tensor packed_, gathered_;  // ZeRO: this rank's updated parameters, every rank's
  std::vector<torch::Tensor> gathered_views_;  // one view of gathered_ per data-parallel rank
  int64_t step_ = 0;
};

}  // namespace mugv
