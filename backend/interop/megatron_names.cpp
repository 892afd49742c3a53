#include "interop/megatron_names.h"

#include "core/error.h"
#include "core/strings.h"

#include <array>
#include <cstring>

namespace mugv {
namespace {

struct LayerName {
  const char* engine;    // after "blocks.<i>."
  const char* megatron;  // after "decoder.layers." (stacked) or "decoder.layers.<i>."
  HeadLayout heads;
  int tp_axis;
};

// mugdit_hf2mcore.py / mugdit_mcore2hf.py name for name; tp_axis is their chunk_dim.
constexpr std::array<LayerName, 25> kLayerNames{{
    {"scale_shift_table", "scale_shift_table.bias", HeadLayout::none, -1},
    {"attn.qkv.weight", "self_attention.linear_qkv.weight", HeadLayout::qkv, 0},
    {"attn.qkv.bias", "self_attention.linear_qkv.bias", HeadLayout::qkv, 0},
    {"attn.proj.weight", "self_attention.linear_proj.weight", HeadLayout::none, 1},
    {"attn.proj.bias", "self_attention.linear_proj.bias", HeadLayout::none, -1},
    {"attn.q_norm.weight", "self_attention.q_layernorm.weight", HeadLayout::none, -1},
    {"attn.q_norm.bias", "self_attention.q_layernorm.bias", HeadLayout::none, -1},
    {"attn.k_norm.weight", "self_attention.k_layernorm.weight", HeadLayout::none, -1},
    {"attn.k_norm.bias", "self_attention.k_layernorm.bias", HeadLayout::none, -1},
    {"cross_attn_norm.weight", "pre_cross_attn_layernorm.weight", HeadLayout::none, -1},
    {"cross_attn_norm.bias", "pre_cross_attn_layernorm.bias", HeadLayout::none, -1},
    {"cross_attn.q_linear.weight", "cross_attention.linear_q.weight", HeadLayout::none, 0},
    {"cross_attn.q_linear.bias", "cross_attention.linear_q.bias", HeadLayout::none, 0},
    {"cross_attn.kv_linear.weight", "cross_attention.linear_kv.weight", HeadLayout::kv, 0},
    {"cross_attn.kv_linear.bias", "cross_attention.linear_kv.bias", HeadLayout::kv, 0},
    {"cross_attn.proj.weight", "cross_attention.linear_proj.weight", HeadLayout::none, 1},
    {"cross_attn.proj.bias", "cross_attention.linear_proj.bias", HeadLayout::none, -1},
    {"cross_attn.q_norm.weight", "cross_attention.q_layernorm.weight", HeadLayout::none, -1},
    {"cross_attn.q_norm.bias", "cross_attention.q_layernorm.bias", HeadLayout::none, -1},
    {"cross_attn.k_norm.weight", "cross_attention.k_layernorm.weight", HeadLayout::none, -1},
    {"cross_attn.k_norm.bias", "cross_attention.k_layernorm.bias", HeadLayout::none, -1},
    {"mlp.fc1.weight", "mlp.linear_fc1.weight", HeadLayout::none, 0},
    {"mlp.fc1.bias", "mlp.linear_fc1.bias", HeadLayout::none, 0},
    {"mlp.fc2.weight", "mlp.linear_fc2.weight", HeadLayout::none, 1},
    {"mlp.fc2.bias", "mlp.linear_fc2.bias", HeadLayout::none, -1},
}};

// The modules of a layer the converter gives an _extra_state (its extra_state_layers), by Megatron name.
constexpr std::array<const char*, 8> kExtraStateModules{{
    "self_attention.linear_qkv",
    "self_attention.linear_proj",
    "cross_attention.linear_q",
    "cross_attention.linear_kv",
    "cross_attention.linear_proj",
    "mlp.linear_fc1",
    "mlp.linear_fc2",
    "scale_shift_table",
}};

struct Renamed {
  const char* engine;
  const char* megatron;
};
// Whole names outside the blocks.
constexpr std::array<Renamed, 4> kExactNames{{
    {"start_token", "start_token"},
    {"end_token", "end_token"},
    {"null_caption", "context_embedder.drop_emb"},
    {"final_layer.scale_shift_table", "final_layer.scale_shift_table.bias"},
}};
// Prefixes outside the blocks; the rest of the name is kept.
constexpr std::array<Renamed, 6> kPrefixes{{
    {"x_embedder.", "x_embedder."},
    {"fps_embedder.", "fps_embedder."},
    {"final_layer.linear.", "final_layer.linear."},
    {"t_embedder.", "timestep_embedder."},
    {"t_block.", "timestep_block."},
    {"y_embedder.y_proj.", "context_embedder.proj."},
}};
// The converter's name for the caption-dropout embedding, accepted when exporting.
constexpr const char* kReleaseNullCaption = "y_embedder.y_embedding";

constexpr std::string_view kBlocks = "blocks.";
constexpr std::string_view kLayers = "decoder.layers.";

// "<digits>.<rest>" -> index and rest; nullopt when `s` does not start so.
std::optional<std::pair<int, std::string_view>> split_index(std::string_view s) {
  size_t i = 0;
  long value = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i < 9) value = value * 10 + (s[i++] - '0');
  if (i == 0 || i >= s.size() || s[i] != '.') return std::nullopt;
  return std::make_pair(int(value), s.substr(i + 1));
}

TensorData permute_blocks(const TensorData& t, int64_t a, int64_t b, const std::string& what) {
  if (t.shape.empty() || a <= 0 || b <= 0 || t.shape[0] % (a * b) != 0)
    throw Error(ErrorCode::invalid_argument,
                what + ": first axis of " +
                    (t.shape.empty() ? std::string("a scalar") : std::to_string(t.shape[0])) +
                    " rows is not a multiple of " + std::to_string(a) + " x " + std::to_string(b));
  const size_t rows = size_t(t.shape[0]);
  const size_t row_bytes = rows ? t.bytes.size() / rows : 0;
  const size_t block = rows / size_t(a * b) * row_bytes;
  TensorData out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.bytes.resize(t.bytes.size());
  // Input block (i, j) of an a x b grid goes to (j, i) of a b x a grid: "(a b c) -> (b a c)".
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j)
      std::memcpy(out.bytes.data() + size_t(j * a + i) * block, t.bytes.data() + size_t(i * b + j) * block,
                  block);
  return out;
}

}  // namespace

int head_layout_parts(HeadLayout layout) {
  switch (layout) {
    case HeadLayout::qkv:
      return 3;
    case HeadLayout::kv:
      return 2;
    default:
      return 1;
  }
}

std::optional<MegatronKey> megatron_key_for(std::string_view engine_name) {
  if (starts_with(engine_name, kBlocks)) {
    auto split = split_index(engine_name.substr(kBlocks.size()));
    if (!split) return std::nullopt;
    for (const auto& n : kLayerNames)
      if (split->second == n.engine)
        return MegatronKey{std::string(kLayers) + n.megatron, split->first, n.heads, n.tp_axis};
    return std::nullopt;
  }
  for (const auto& n : kExactNames)
    if (engine_name == n.engine) return MegatronKey{n.megatron, -1, HeadLayout::none, -1};
  if (engine_name == kReleaseNullCaption)
    return MegatronKey{"context_embedder.drop_emb", -1, HeadLayout::none, -1};
  for (const auto& p : kPrefixes)
    if (starts_with(engine_name, p.engine) && engine_name.size() > std::strlen(p.engine))
      return MegatronKey{p.megatron + std::string(engine_name.substr(std::strlen(p.engine))), -1,
                         HeadLayout::none, -1};
  return std::nullopt;
}

bool is_stacked_layer_key(std::string_view megatron_name) {
  return starts_with(megatron_name, kLayers) && !split_index(megatron_name.substr(kLayers.size()));
}

std::optional<EngineKey> engine_key_for(std::string_view megatron_name, int layer) {
  if (starts_with(megatron_name, kLayers)) {
    std::string_view rest = megatron_name.substr(kLayers.size());
    if (auto split = split_index(rest)) {
      layer = split->first;
      rest = split->second;
    }
    if (layer < 0) return std::nullopt;
    for (const auto& n : kLayerNames)
      if (rest == n.megatron)
        return EngineKey{std::string(kBlocks) + std::to_string(layer) + "." + n.engine, n.heads};
    return std::nullopt;
  }
  for (const auto& n : kExactNames)
    if (megatron_name == n.megatron) return EngineKey{n.engine, HeadLayout::none};
  for (const auto& p : kPrefixes)
    if (starts_with(megatron_name, p.megatron) && megatron_name.size() > std::strlen(p.megatron))
      return EngineKey{p.engine + std::string(megatron_name.substr(std::strlen(p.megatron))),
                       HeadLayout::none};
  return std::nullopt;
}

const char* to_string(MegatronKeyRole role) {
  switch (role) {
    case MegatronKeyRole::weight:
      return "weight";
    case MegatronKeyRole::optimizer:
      return "optimizer";
    case MegatronKeyRole::extra_state:
      return "extra_state";
    case MegatronKeyRole::training_state:
      return "training_state";
    default:
      return "unknown";
  }
}

MegatronKeyRole megatron_key_role(std::string_view key) {
  if (starts_with(key, "optimizer.")) return MegatronKeyRole::optimizer;
  // ShardedObject.unique_key: "<key>/shard_<offsets>_<shape>".
  if (key.find("/shard_") != std::string_view::npos)
    return key.find("._extra_state") != std::string_view::npos ? MegatronKeyRole::extra_state
                                                               : MegatronKeyRole::training_state;
  if (starts_with(key, "rng_state") || starts_with(key, "rerun_state_machine"))
    return MegatronKeyRole::training_state;
  if (key.find("._extra_state") != std::string_view::npos) return MegatronKeyRole::extra_state;
  if (engine_key_for(key, 0)) return MegatronKeyRole::weight;
  return MegatronKeyRole::unknown;
}

std::vector<std::string> megatron_extra_state_keys(int layers) {
  std::vector<std::string> keys;
  const std::string shape = std::to_string(layers);
  for (const char* m : kExtraStateModules)
    for (int i = 0; i < layers; ++i)
      keys.push_back(std::string(kLayers) + m + "._extra_state/shard_" + std::to_string(i) + "_" + shape);
  keys.emplace_back("final_layer.scale_shift_table._extra_state/shard_0_1");
  return keys;
}

TensorData heads_to_megatron(const TensorData& tensor, HeadLayout layout, int heads,
                             const std::string& what) {
  if (layout == HeadLayout::none) return tensor;
  // (part, head, channel) -> (head, part, channel)
  return permute_blocks(tensor, head_layout_parts(layout), heads, what);
}

TensorData heads_to_engine(const TensorData& tensor, HeadLayout layout, int heads, const std::string& what) {
  if (layout == HeadLayout::none) return tensor;
  // (head, part, channel) -> (part, head, channel)
  return permute_blocks(tensor, heads, head_layout_parts(layout), what);
}

}  // namespace mugv
