#pragma once
// Shapes of the three networks of a MUG-V model (DiT, video VAE, text encoder) and the named
// presets that bundle them (presets/models/<name>.toml). Torch-free: the CLI, the parallel
// planner and the studio read these without linking LibTorch. Plain values, freely copyable.
//
// Preset file layout (every key optional except where noted; unknown keys are an error):
//   description = "..."
//   [dit]  hidden, depth, heads, head_dim (= hidden / heads when absent), mlp_ratio, in_channels
//          (= vae.latent_channels), patch = [t, h, w], text_dim (= text.dim), text_tokens
//          (= text.max_tokens), rope_theta, null_caption (true)
//   [vae]  latent_channels, compress = [t, h, w], patch, base_channels, channel_mult = [..],
//          res_blocks, decoder_window, norm ("group" | "channel_rms"), pixel_shortcut, kl_weight
//   [text] kind ("small_transformer" | "t5"), vocab_size, dim, layers, heads, head_dim, ff_dim,
//          max_tokens, relative_buckets, relative_max_distance
//
// Parameter counts and FLOPs here are analytic: mugv-10b (10.8 B) cannot be instantiated in the
// RAM of a workstation, and the planner needs the numbers before anything is allocated. The
// model tests check each count against the instantiated module for the small presets.

#include "core/weight_files.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// Activation recomputation per transformer block: none keeps every activation for backward; selective
// recomputes the attention core (scores and softmax, the activations that grow with the square of the
// sequence); full keeps only each block's input and re-runs the whole block in backward.
enum class Recompute { unknown = 0, none, selective, full };
const char* to_string(Recompute recompute);
std::optional<Recompute> recompute_from_string(std::string_view name);

struct DiTConfig {
  int hidden = 0;
  int depth = 0;
  int heads = 0;
  int head_dim = 0;  // hidden == heads * head_dim
  int mlp_ratio = 4;
  int in_channels = 0;  // latent channels of the VAE
  int patch_t = 1;
  int patch_h = 2;
  int patch_w = 2;
  int text_dim = 0;     // width of the text encoder's output
  int text_tokens = 0;  // text sequence length (also the shape of the learned null caption)
  double rope_theta = 10000.0;
  // Multiplies the queries, so the attention logits are q·k·attention_multiplier/sqrt(head_dim). 1 as
  // released; μP across head widths uses sqrt(base_head_dim / head_dim), i.e. logits ∝ 1/head_dim
  // (train/parametrization.h).
  double attention_multiplier = 1.0;
  int frequency_dim = 256;  // sinusoidal width of the timestep / fps embedders
  // A learned null caption [text_tokens, text_dim] for caption dropout and the unconditional branch of
  // guidance. The released MUG-V models have none (they guide against an encoded negative prompt), so the
  // release-family presets and configurations read from a release checkpoint set it false.
  bool null_caption = true;
};

// The DiT predicts 2·C channels, as the release does; the velocity is the first C (model/dit.h).
[[nodiscard]] inline int dit_out_channels(const DiTConfig& config) {
  return 2 * config.in_channels;
}

// Normalisation inside the VAE's blocks. group: GroupNorm(32) over channels × space × time (the
// MUG-V VAE). channel_rms: RMS over the channels of each voxel with a learned gain, which keeps
// absolute levels (a flat-coloured region is not normalised away), so colours train faster.
enum class VAENorm { group = 0, channel_rms, none };
const char* to_string(VAENorm norm);
std::optional<VAENorm> vae_norm_from_string(std::string_view name);

struct VAEConfig {
  int latent_channels = 0;
  int compress_t = 0;  // powers of two
  int compress_h = 0;
  int compress_w = 0;  // == compress_h
  // Spatial pixel-unshuffle at the input (and pixel-shuffle at the output): patch × patch pixels
  // become 3·patch² channels before the first convolution, so the full-resolution levels, which
  // cost most and learn slowest, are skipped. Power of two dividing compress_h; 1 = none. The
  // remaining spatial compression (compress_h / patch) is done by stride-2 convolutions.
  int patch = 1;
  int base_channels = 0;
  std::vector<int> channel_mult;  // one level per entry; at least log2(max compression) levels
  int res_blocks = 1;             // residual blocks per level
  int decoder_window = 1;         // latents on each side that the decoder sees for one chunk
  VAENorm norm = VAENorm::group;
  // Adds a fixed linear path around both networks: the first three latent means also receive the
  // RGB average of their (compress_t × compress_h × compress_w) block, and the decoder output receives
  // those three channels repeated over the block. The untrained VAE is then a block-average codec,
  // so colours and backgrounds are right from the first step and the convolutions learn only the
  // detail; without it a small VAE learns luminance first and colour thousands of steps later.
  bool pixel_shortcut = false;
  double kl_weight = 1e-6;
};

enum class TextEncoderKind { unknown = 0, small_transformer, t5 };
const char* to_string(TextEncoderKind kind);
std::optional<TextEncoderKind> text_encoder_kind_from_string(std::string_view name);

struct TextEncoderConfig {
  TextEncoderKind kind = TextEncoderKind::unknown;
  int vocab_size = 0;
  int dim = 0;
  int layers = 0;
  int heads = 0;
  int head_dim = 0;  // T5's d_kv; = dim / heads when absent
  int ff_dim = 0;
  int max_tokens = 0;
  int relative_buckets = 32;        // T5 only
  int relative_max_distance = 128;  // T5 only
};

struct ModelPreset {
  std::string name;
  std::string description;
  DiTConfig dit;
  VAEConfig vae;
  TextEncoderConfig text;
  // A released model's VAE is the release's (model/mugv_vae_config.h), not this project's: `vae` then holds
  // only its compression and latent channels, and this its parameter count (from the checkpoint's shapes).
  std::optional<int64_t> released_vae_parameters;
};

// Throw Error(invalid_argument) naming `subject` and the first inconsistent value
// ("tiny: dit.hidden 100 is not heads 3 x head_dim 32").
void validate(const DiTConfig& config, const std::string& subject);
void validate(const VAEConfig& config, const std::string& subject);
void validate(const TextEncoderConfig& config, const std::string& subject);
void validate(const ModelPreset& preset);

// Builds a preset from the nested JSON that core/presets.h returns; fills defaults derived from
// the other tables and validates. Throws Error(invalid_argument) naming `subject` and the key for
// unknown keys, wrong types and inconsistent values.
[[nodiscard]] ModelPreset model_preset_from_json(const nlohmann::json& values, const std::string& name,
                                                 const std::string& subject);
// Loads presets/models/<name>.toml through the preset search path (core/presets.h).
[[nodiscard]] ModelPreset load_model_preset(std::string_view name);
// Names of the model presets found on the preset search path, sorted.
[[nodiscard]] std::vector<std::string> model_preset_names();

// The mugv-10b preset's DiT (release layout: 24 latent channels, T5 width 4096, 300 tokens, no learned null
// caption) at another width and depth, for benchmarks that need the release's shapes without its 56 blocks.
// Throws as load_model_preset, and Error(invalid_argument) when heads do not divide hidden.
[[nodiscard]] DiTConfig release_width_dit(int hidden, int heads, int depth);

// The shape of a checkpoint's tensor by name; std::nullopt when the checkpoint has no such tensor.
using TensorShapeLookup = std::function<std::optional<std::vector<int64_t>>(const std::string& name)>;
// The shapes of the tensors in `files` (which must outlive the lookup).
[[nodiscard]] TensorShapeLookup shapes_of(const WeightFiles& files);
// The standard deviation linear layers are initialised with (docs/MUGV.md §5), for the DiT and for the text
// encoders this project trains from scratch.
constexpr double kInitStd = 0.014;
// The release's T5 reads prompts of this many tokens; a checkpoint without a learned null caption has this
// text length.
constexpr int kReleaseTextTokens = 300;

// The DiT configuration that a checkpoint in the release's tensor layout (model/dit.h) implies: hidden,
// latent channels and patch from x_embedder.proj.weight [d, C, pt, ph, pw]; head_dim from the q-norm width
// (blocks.0.attn.q_norm.weight) and heads = d / head_dim; depth from the blocks present; mlp_ratio from
// blocks.0.mlp.fc1.weight; text width from y_embedder.y_proj.fc1.weight; the sinusoid width from
// t_embedder.mlp.0.weight; a learned null caption (and text_tokens) from null_caption when present, else
// text_tokens = `text_tokens` (the release's T5 reads 300). The output width (final_layer.linear.weight) must
// be 2·C·patch volume. Throws Error(format) naming `subject` and the tensor that is missing or whose shape
// does not fit ("dit.pt: blocks.0.mlp.fc1.weight is [100, 96]: not a whole multiple of hidden 96").
[[nodiscard]] DiTConfig dit_config_from_checkpoint(const TensorShapeLookup& shape, int text_tokens,
                                                   const std::string& subject);
// Compares a preset's DiT with the one a checkpoint implies (dit_config_from_checkpoint); throws
// Error(invalid_argument) naming `subject` and the tensor that carries the first difference
// ("dit.pt: x_embedder.proj.weight says hidden 3456; preset mugv-4b has 2304").
void check_dit_matches_checkpoint(const DiTConfig& preset, const std::string& preset_name,
                                  const TensorShapeLookup& shape, const std::string& subject);

// The T5 encoder a Hugging Face `config.json` describes (model_type "t5", feed_forward_proj "gated-gelu":
// T5 v1.1): d_model, d_kv, d_ff, num_layers, num_heads, vocab_size, relative_attention_num_buckets and
// relative_attention_max_distance; max_tokens is the caller's (the release encodes 300 tokens). Throws
// Error(format) naming `subject` and the key that is missing or wrong, Error(unsupported) for another
// model type or a ReLU (v1.0) feed-forward.
[[nodiscard]] TextEncoderConfig t5_config_from_hf_json(const nlohmann::json& config, int max_tokens,
                                                       const std::string& subject);

// Video tokens of the DiT for a latent of the given shape (patchified, without start/end tokens).
[[nodiscard]] int64_t dit_video_tokens(const DiTConfig& config, int64_t latent_frames, int64_t latent_height,
                                       int64_t latent_width);
// Trainable parameters of DiT(config), counted from the shapes alone: what comes before the blocks
// (patchify, embedders, adaLN-single, caption projection, null caption, start / end tokens), depth ×
// dit_block_parameter_count and dit_final_layer_parameter_count.
[[nodiscard]] int64_t dit_parameter_count(const DiTConfig& config);
// One block's parameters (its adaLN table, self-attention, cross-attention and MLP).
[[nodiscard]] int64_t dit_block_parameter_count(const DiTConfig& config);
// The final layer's parameters (its adaLN table and the linear to the predicted channels).
[[nodiscard]] int64_t dit_final_layer_parameter_count(const DiTConfig& config);
// Training FLOPs per video token (forward + backward) following docs/MUGV.md §6:
// 6·N + 12·L·d·S + 12·L·d·S_text, where S = video_tokens + 2 (the start and end tokens).
[[nodiscard]] double dit_flops_per_token(const DiTConfig& config, int64_t video_tokens, int64_t text_tokens);
[[nodiscard]] int64_t vae_parameter_count(const VAEConfig& config);
// Stride-2 stages of the VAE: temporal log2(compress_t), spatial log2(compress_h / patch).
[[nodiscard]] int vae_temporal_downsamples(const VAEConfig& config);
[[nodiscard]] int vae_spatial_downsamples(const VAEConfig& config);
[[nodiscard]] int64_t text_encoder_parameter_count(const TextEncoderConfig& config);

}  // namespace mugv
