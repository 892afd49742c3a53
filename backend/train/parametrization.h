#pragma once
// μP (maximal-update parametrisation) of the DiT, so that learning rates tuned at a small proxy width
// transfer to wide models (Yang et al., Tensor Programs V; for diffusion transformers, Zheng et al. 2025).
// The width multiplier is m = hidden / base_hidden; at the base width μP and the standard parametrisation
// coincide.
//
//   role    tensors (DiT)                                  init spread    AdamW lr   Muon lr
//   input   x_embedder, t/fps_embedder.mlp.0, y_proj.fc1   as standard    lr         -
//   hidden  every other weight matrix                      x 1/sqrt(m)    lr / m     lr / sqrt(m)
//   output  final_layer.linear.weight                      zero (as std)  lr / m     -
//   vector  biases, norms, adaLN tables, tokens, null cap. as standard    lr         -
//
// Muon's orthogonalised update has a fixed spectral norm, so μP only needs its size kept constant across
// widths: its RMS-matched scale (train/muon.h) grows as sqrt(width), hence lr / sqrt(m). Attention logits:
// with the head width fixed as heads grow (the presets and `mugv sweep` widen that way) the 1/head_dim rule
// equals the usual 1/sqrt(head_dim) up to a constant; a model preset that changes the head width sets
// dit.attention_multiplier = sqrt(base_head_dim / head_dim) (model/config.h). The text encoder is not widened
// and keeps lr. Pure functions over names and modules.

#include "train/optim.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class Parametrization { unknown = 0, standard, mup };
const char* to_string(Parametrization p);
std::optional<Parametrization> parametrization_from_string(std::string_view name);

enum class MupRole { vector = 0, input, hidden, output };
// The role of a parameter of a DiT run by its checkpoint name ("dit.blocks.0.attn.qkv.weight"); parameters
// outside the DiT ("text.…") are vectors (their width does not change).
[[nodiscard]] MupRole mup_role(const std::string& name, const torch::Tensor& parameter);

// Per-parameter learning-rate multipliers of `params` under μP at width multiplier m; with `muon`, the
// parameters Muon updates (train/muon.h muon_parts > 0) get Muon's rule.
[[nodiscard]] std::vector<double> mup_lr_scales(const NamedTensors& params, double width_multiplier,
                                                bool muon);
// Scales the spread of the hidden weights of a freshly initialised model by 1/sqrt(m) (in place).
void apply_mup_init(const NamedTensors& params, double width_multiplier);

}  // namespace mugv
