#pragma once
// LoRA settings and where adapters go on a MUG-V DiT, from the configuration alone (torch-free: the memory
// model, the planner and the trainer's preflight use it without building a model). The adapters themselves
// are model/lora.h.
//
// Adaptable linears: in every block attn.qkv, attn.proj, cross_attn.q_linear, cross_attn.kv_linear,
// cross_attn.proj, mlp.fc1, mlp.fc2; and t_block.1 (adaLN-single), y_embedder.y_proj.fc1/fc2 (caption
// projection), final_layer.linear. Targets name them by group (attn, cross, mlp, adaln, text, final, all), by
// a path pattern with '*' ("blocks.*.attn.qkv"), or by a path suffix as PEFT's target_modules do ("qkv",
// "mlp.fc1"). A target that names nothing adaptable is an error.
// Pure functions; thread-safe.

#include "model/config.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

struct LoraConfig {
  int64_t rank = 16;
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> targets{"attn"};
  double scale() const { return alpha / double(rank); }
};

// "rank=32,alpha=32,dropout=0.05,targets=attn,mlp": comma-separated key=value pairs; the values of
// `targets` run on over the following items that hold no '=' (also "targets=attn+mlp"). alpha defaults to
// the rank. Throws Error(usage) naming the item that is not understood or out of range.
[[nodiscard]] LoraConfig parse_lora_config(std::string_view spec);
// The canonical spec ("rank=32,alpha=32,dropout=0,targets=attn+mlp"), which parses back to the same config.
[[nodiscard]] std::string to_string(const LoraConfig& config);

// The DiT's linears adapters can attach to, in model order, with their shapes (from the configuration alone,
// so memory estimates need no model).
struct AdaptableLinear {
  std::string path;
  int64_t in = 0, out = 0;
};
[[nodiscard]] std::vector<AdaptableLinear> adaptable_linear_shapes(const DiTConfig& config);
// The paths among `paths` that the targets name, in the order of `paths`. Throws Error(invalid_argument)
// naming a target that matches none (with the groups and examples of what does).
[[nodiscard]] std::vector<std::string> resolve_lora_target_paths(const std::vector<std::string>& paths,
                                                                 const std::vector<std::string>& targets);

// Parameters of the adapters `lora` puts on a DiT of `config` (rank · (in + out) per target). Throws as
// resolve_lora_targets.
[[nodiscard]] int64_t lora_parameter_count(const DiTConfig& config, const LoraConfig& lora);

}  // namespace mugv
