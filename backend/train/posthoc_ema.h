#pragma once
// Post-hoc EMA (Karras et al., EDM2): the average of the weights over any EMA length, chosen after training.
//
// A power-function EMA with exponent γ tracks θ̂_t = β_t·θ̂_{t−1} + (1 − β_t)·θ_t, β_t = (1 − 1/t)^(γ+1), which
// averages the weights with the profile p(τ) = (γ+1)·τ^γ / t^(γ+1) on [0, t]: its width grows with training
// (σ_rel, the profile's standard deviation relative to t, is fixed: σ_rel² = (γ+1) / ((γ+2)²·(γ+3))). The
// trainer tracks two such profiles (--ema-profiles 0.05,0.10) and stores snapshots of both every
// --ema-snapshot-every steps (runs/R/ema_snapshots/step-N/ema_p<k>.safetensors, committed like checkpoints).
// Any other profile (σ_rel, t) is then a linear combination of the snapshots: the weights x minimise
// ∫ (Σ x_i p_i(τ) − p_target(τ))² dτ, whose Gram matrix and right-hand side are closed-form integrals of
// products of power functions; `mugv ema --run R --length σ_rel` writes the combination as a new run.
// Pure functions plus PowerEma (not thread-safe; the shadows are owned, the parameters are read).

#include "train/optim.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace mugv {

// σ_rel of exponent γ, and γ of σ_rel (bisection over γ in [0, 10⁶]: γ = 0 weighs every step alike, the
// widest profile, σ_rel 0.289); Error(invalid_argument) for a σ_rel outside (0, 0.289).
[[nodiscard]] double sigma_rel_of_gamma(double gamma);
[[nodiscard]] double gamma_of_sigma_rel(double sigma_rel);
// β_t of step t ≥ 1 (β_1 = 0: the first update copies the weights).
[[nodiscard]] double power_ema_beta(double gamma, int64_t step);

// A snapshot of a power EMA: its exponent and the step it was taken at.
struct EmaProfilePoint {
  double gamma = 0;
  int64_t step = 0;
};
// The least-squares weights of `snapshots` that reproduce the profile (gamma, step). Throws
// Error(invalid_argument) when there are no snapshots or the target step is past the last one.
[[nodiscard]] std::vector<double> posthoc_ema_weights(const std::vector<EmaProfilePoint>& snapshots,
                                                      const EmaProfilePoint& target);

// Power EMAs of several σ_rel over the same named tensors.
class PowerEma {
 public:
  PowerEma(const NamedTensors& named_parameters, std::vector<double> sigma_rels);
  void update(const NamedTensors& named_parameters, int64_t step);
  size_t profiles() const { return shadows_.size(); }
  double sigma_rel(size_t k) const { return sigma_rels_[k]; }
  double gamma(size_t k) const { return gammas_[k]; }
  // Profile k's averaged tensors, by the parameters' names (owned here; load by copying into them).
  const NamedTensors& tensors(size_t k) const { return shadows_[k]; }
  // "ema_p0", "ema_p1", ...: the checkpoint and snapshot file stem of profile k.
  static std::string stem(size_t k);

 private:
  std::vector<double> sigma_rels_, gammas_;
  std::vector<NamedTensors> shadows_;
};

// "0.05,0.1" -> {0.05, 0.1}; Error(usage) naming --ema-profiles for a value that is no σ_rel.
[[nodiscard]] std::vector<double> parse_sigma_rels(const std::string& text);

}  // namespace mugv
