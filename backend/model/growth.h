#pragma once
// Width growth of a DiT by HyperCloning: a model k times as wide (hidden and heads × k, head width, RoPE and
// depth unchanged) that computes exactly what the narrow one computes, so training continues from the narrow
// model's function instead of from noise.
//
// The wide model's hidden vector is the narrow one repeated k times, [h, h, …]. Every weight keeps that
// invariant: an output that is hidden-sized is repeated (fused projections per part: qkv 3, kv 2, the adaLN
// table 6), and a hidden-sized input is split k ways: W → [W/k + N₁, …, W/k + N_k] with Σ N_j = 0, so on a
// repeated input the copies sum back to W·h. Heads are copied whole (head i and head i + H see the same
// q, k, v), LayerNorm/RMSNorm statistics of a repeated vector equal the original's, SiLU/GELU act
// elementwise, and the modulation, gates and residuals stay repeated: the output equals the narrow model's
// up to float rounding. The noise N (zero-sum, `noise` × the weight's standard deviation) breaks the copies'
// symmetry: without it, every copy would get the same gradient and the wide model would stay narrow.
//
// Which tensors carry the hidden size is known by name (the release's tensor names, model/dit.h); a DiT
// tensor of another name is an error, so a new layer cannot be grown silently wrong. The text encoder is not
// grown (its width is the DiT's text_dim, unchanged). Pure functions over tensors.

#include "model/config.h"

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mugv {

// `config` with hidden and heads × factor. Throws Error(invalid_argument) for factor < 2.
[[nodiscard]] DiTConfig grown_dit_config(const DiTConfig& config, int factor);

struct GrowthOptions {
  int factor = 2;
  double noise = 0.1;  // symmetry-breaking noise, relative to each weight's standard deviation (0: none)
  uint64_t seed = 0;
};

// The DiT tensors (names as in a DiT module's state, without the "dit." prefix) of the grown model. Throws
// Error(invalid_argument) naming a tensor whose role in the hidden size is unknown or whose shape does not
// fit `config` (the narrow model's).
[[nodiscard]] std::vector<std::pair<std::string, torch::Tensor>> grow_dit_tensors(
    const std::vector<std::pair<std::string, torch::Tensor>>& narrow, const DiTConfig& config,
    const GrowthOptions& options);

}  // namespace mugv
