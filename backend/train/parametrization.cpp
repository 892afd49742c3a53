#include "train/parametrization.h"

#include "core/strings.h"
#include "train/muon.h"

#include <cmath>

namespace mugv {

const char* to_string(Parametrization p) {
  switch (p) {
    case Parametrization::standard:
      return "standard";
    case Parametrization::mup:
      return "mup";
    default:
      return "unknown";
  }
}

std::optional<Parametrization> parametrization_from_string(std::string_view name) {
  if (name == "standard" || name == "sp") return Parametrization::standard;
  if (name == "mup") return Parametrization::mup;
  return std::nullopt;
}

MupRole mup_role(const std::string& name, const torch::Tensor& parameter) {
  if (!starts_with(name, "dit.") || parameter.dim() < 2 || name.find("lora_") != std::string::npos ||
      !ends_with(name, ".weight"))
    return MupRole::vector;  // also the [6, d] adaLN tables and the null caption, which are not .weight
  for (const char* input : {"dit.x_embedder.proj.weight", "dit.t_embedder.mlp.0.weight",
                            "dit.fps_embedder.mlp.0.weight", "dit.y_embedder.y_proj.fc1.weight"})
    if (name == input) return MupRole::input;
  if (name == "dit.final_layer.linear.weight") return MupRole::output;
  return MupRole::hidden;
}

std::vector<double> mup_lr_scales(const NamedTensors& params, double m, bool muon) {
  std::vector<double> scales;
  for (const auto& [name, p] : params) {
    const MupRole role = mup_role(name, p);
    if (muon && muon_parts(name, p) > 0)
      scales.push_back(1.0 / std::sqrt(m));
    else if (role == MupRole::hidden || role == MupRole::output)
      scales.push_back(1.0 / m);
    else
      scales.push_back(1.0);
  }
  return scales;
}

void apply_mup_init(const NamedTensors& params, double m) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params)
    if (mup_role(name, p) == MupRole::hidden) p.mul_(1.0 / std::sqrt(m));
}

}  // namespace mugv
