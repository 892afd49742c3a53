#pragma once
// The MUG-V DiT's tensors under Megatron-LM training names and under this engine's names (the released
// dit.pt's, plus `null_caption`), both ways, with the row re-layout attention projections need. Pure and
// thread-safe; no I/O (megatron_convert.h applies this to checkpoints).
//
// Evidence (Shopee-MUG/MUG-V-Megatron-LM-Training): examples/mugv/convertor/mugdit_hf2mcore.py and
// mugdit_mcore2hf.py (the project's own converters between dit.pt and its Megatron checkpoints),
// examples/mugv/mugdit*.py (the module tree that makes the state dict), mugdit_block.py sharded_state_dict
// (layer stacking) and Megatron-Core's make_sharded_object_for_checkpoint (extra-state keys):
//
//   engine (dit.pt)                         Megatron
//   start_token, end_token, x_embedder.*,   same name
//   fps_embedder.*, final_layer.linear.*
//   t_embedder.<rest>                       timestep_embedder.<rest>
//   t_block.<rest>                          timestep_block.<rest>
//   y_embedder.y_proj.<rest>                context_embedder.proj.<rest>
//   null_caption (y_embedder.y_embedding    context_embedder.drop_emb  (the caption-dropout embedding; the
//     in the converter; accepted on export)   released dit.pt has none)
//   final_layer.scale_shift_table          final_layer.scale_shift_table.bias
//   blocks.<i>.<engine suffix>             decoder.layers.<Megatron suffix>, layer i of a tensor stacked on a
//                                          leading axis of num_layers (Megatron-Core's default homogeneous
//                                          sharded state dict; the per-layer form decoder.layers.<i>.<suffix>
//                                          written with non_homogeneous_layers is read too)
//   per-layer suffixes (column-parallel: TP splits axis 0; row-parallel: axis 1):
//     scale_shift_table                    scale_shift_table.bias
//     attn.qkv.{weight,bias}               self_attention.linear_qkv.*       column, rows re-laid (q,k,v)
//     attn.proj.weight / .bias             self_attention.linear_proj.*      row / replicated
//     attn.{q,k}_norm.{weight,bias}        self_attention.{q,k}_layernorm.*
//     cross_attn_norm.{weight,bias}        pre_cross_attn_layernorm.*
//     cross_attn.q_linear.{weight,bias}    cross_attention.linear_q.*        column
//     cross_attn.kv_linear.{weight,bias}   cross_attention.linear_kv.*       column, rows re-laid (k,v)
//     cross_attn.proj.weight / .bias       cross_attention.linear_proj.*     row / replicated
//     cross_attn.{q,k}_norm.{weight,bias}  cross_attention.{q,k}_layernorm.*
//     mlp.fc1.{weight,bias}                mlp.linear_fc1.*                  column
//     mlp.fc2.weight / .bias               mlp.linear_fc2.*                  row / replicated
//
// Re-layout: the release keeps a fused projection's rows as (part, head, channel): all queries, then all
// keys, then all values ("(n nh c)", its attention views qkv as [B, N, 3, heads, head_dim]); Megatron keeps
// them per head: (head, part, channel), "(nh n c)", so that a tensor-parallel split along the rows hands
// each rank whole heads. n = 3 for the self-attention QKV, 2 for the cross-attention KV (MUG-V uses one
// query group per head, so Megatron's grouped-query layout is this per-head one). Biases move with their
// rows.
//
// Keys of a Megatron checkpoint that hold no weight of this engine's model: optimizer.* (optimizer states),
// rng_state, rerun_state_machine and every ShardedObject ("<key>/shard_<offsets>_<shape>": Transformer
// Engine's `_extra_state`, which the converter drops as well).

#include "interop/torch_archive.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class HeadLayout {
  none = 0,
  qkv,  // self-attention Q, K, V: 3 parts
  kv,   // cross-attention K, V: 2 parts
};
// 3, 2, or 1 for none.
int head_layout_parts(HeadLayout layout);

struct MegatronKey {
  std::string name;  // the checkpoint key
  int layer = -1;    // stacked decoder keys: the index along the leading layer axis; else -1
  HeadLayout heads = HeadLayout::none;
  int tp_axis = -1;  // the parameter's axis Megatron's tensor parallelism splits; -1: replicated
};

// The Megatron key of an engine tensor (stacked form for blocks.<i>.*); nullopt for a name outside the map.
[[nodiscard]] std::optional<MegatronKey> megatron_key_for(std::string_view engine_name);

struct EngineKey {
  std::string name;
  HeadLayout heads = HeadLayout::none;
};
// The engine name of a Megatron key: a stacked decoder key needs `layer` (its index along the leading
// axis); a per-layer key (decoder.layers.<i>.*) or a top-level key ignores it. nullopt for a key outside
// the map.
[[nodiscard]] std::optional<EngineKey> engine_key_for(std::string_view megatron_name, int layer = -1);

// True for decoder.layers.<suffix> with a non-numeric first component: a tensor stacked over the layers.
[[nodiscard]] bool is_stacked_layer_key(std::string_view megatron_name);

enum class MegatronKeyRole {
  unknown = 0,
  weight,          // a tensor of the DiT this map names
  optimizer,       // optimizer.*
  extra_state,     // a ShardedObject holding a module's _extra_state
  training_state,  // rng_state, rerun_state_machine and other ShardedObjects of the training loop
};
const char* to_string(MegatronKeyRole role);
[[nodiscard]] MegatronKeyRole megatron_key_role(std::string_view key);

// The ShardedObject keys Megatron-Core gives the Transformer Engine / ScaleShiftTable `_extra_state` of a
// MUG-V DiT of `layers` layers (the modules the converter gives an extra state: linear_qkv, linear_proj,
// linear_q, linear_kv, linear_fc1, linear_fc2, scale_shift_table), as
// "<stacked key>._extra_state/shard_<layer>_<layers>" and
// "final_layer.scale_shift_table._extra_state/shard_0_1".
[[nodiscard]] std::vector<std::string> megatron_extra_state_keys(int layers);

// Re-lays a tensor's rows (its first axis, of parts × heads × head_dim rows) from the release order
// (part, head, channel) to Megatron's (head, part, channel), or back. `tensor` keeps its dtype and shape.
// Throws Error(invalid_argument) naming `what` when the first axis is not a multiple of parts × heads.
[[nodiscard]] TensorData heads_to_megatron(const TensorData& tensor, HeadLayout layout, int heads,
                                           const std::string& what);
[[nodiscard]] TensorData heads_to_engine(const TensorData& tensor, HeadLayout layout, int heads,
                                         const std::string& what);

}  // namespace mugv
