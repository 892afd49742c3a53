#pragma once
// Everything a sampler needs from a trained run, loaded once: the preset, tokenizer, text encoder,
// DiT, the VAE of the run's VAE run with its latent statistics, and the latent → RGB preview map.
//
// Sources (train/run_layout.h):
//   runs/<run>/run.json, tokenizer.model, checkpoints/ (CheckpointStore::latest_good)
//     ema.safetensors preferred, model.safetensors otherwise; tensors named "dit.*" and "text.*"
//   runs/<vae_run>/checkpoints/ latest good model.safetensors with "vae.*"
//   runs/<vae_run>/latent_stats.json   {"mean": [C numbers], "std": [C numbers]} (optional: the
//                                      VAE's own latent_mean/latent_std buffers are used when absent)
//   runs/<vae_run>/latent_rgb.json     {"weight": [[C numbers] x 3], "bias": [3 numbers], "space":
//                                      "normalized" (default) | "raw"}: rgb in [-1, 1] from a latent
//                                      in that space; optional, the first three normalised channels
//                                      are shown as r, g, b when absent
// The flow shift base (schedule.h) is the trainer's "flow.shift_base" from run.json's config (else
// any "shift_base_px" in it); 512 (MUG-V's value) with a warning when the config has neither.
//
// A ModelBundle owns its modules (eval mode, no gradients). Not thread-safe: one sample() at a time.

#include "model/config.h"
#include "model/dit.h"
#include "model/lora_file.h"
#include "model/text_encoder.h"
#include "model/tokenizer.h"
#include "model/vae.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// Which weights of a checkpoint were loaded.
enum class WeightsKind { unknown = 0, ema, model };
const char* to_string(WeightsKind kind);
std::optional<WeightsKind> weights_kind_from_string(std::string_view name);

struct ModelBundle {
  RunManifest run;
  RunManifest vae_run;
  ModelPreset preset;
  std::shared_ptr<Tokenizer> tokenizer;
  std::shared_ptr<TextEncoderBase> text;
  DiT dit{nullptr};
  std::shared_ptr<VideoCodec> codec;  // the run's VAE run's VideoVAE, or a released model's VAE
  int64_t checkpoint_step = 0;
  WeightsKind weights = WeightsKind::unknown;
  int64_t vae_checkpoint_step = 0;
  std::vector<CheckpointProblem> refused;  // damaged checkpoints skipped on the way (both runs)
  torch::Tensor latent_rgb_weight;         // [3, C] float
  torch::Tensor latent_rgb_bias;           // [3] float
  bool latent_rgb_space_raw = false;       // the map reads denormalised latents (else normalised ones)
  double shift_base_px = 512.0;
  torch::Device device = torch::kCPU;
  // Prompts beyond the text length: refused (runs of this studio), or cut keeping the end token (the released
  // model's T5 pipeline truncates at 300 tokens).
  TokenLimitPolicy prompt_limit = TokenLimitPolicy::refuse;
  // Adapter files added by apply_lora_files ("FILE:SCALE", "merged" appended when merged), for the metadata.
  std::vector<std::string> adapters;
};

// Loads run `run_name` for sampling on `device`, with the weights `want` names: unknown = the EMA weights
// when the checkpoint has usable ones, else the training weights; ema or model = exactly those (a
// checkpoint without them throws Error(not_found) naming the file). Throws Error(not_found) naming the run
// for an unknown run (listing the known ones), a missing tokenizer, or a run without a usable checkpoint
// (with the reasons the damaged ones were refused); Error(invalid_argument) for a VAE run or a
// DiT run that names no VAE run; errors of model/weights.h for weights that do not fit the preset.
// `checkpoint_step` picks one checkpoint of the run instead of the latest good one (Error(not_found) when
// there is none of that step, Error(corrupt) when it does not verify).
[[nodiscard]] ModelBundle load_for_inference(const std::string& run_name, torch::Device device = torch::kCPU,
                                             WeightsKind want = WeightsKind::unknown,
                                             std::optional<int64_t> checkpoint_step = std::nullopt);

// Adds adapter files (model/lora_file.h) to the bundle's DiT with their scales: at run time (model/lora.h
// LoraSet), or merged into its weights when `merge`. Every file is read and checked against the model before
// the first one changes anything. Throws the errors of read_lora_file and LoraSet::attach, naming the file
// (a key that matches no module of the model is an error listing the keys).
void apply_lora_files(ModelBundle& bundle, const std::vector<LoraArgument>& adapters, bool merge);

// The weights side of load_for_inference alone, on the CPU: manifest, preset, tokenizer, text encoder and DiT
// (a LoRA run's base with its adapter attached), no VAE. For commands that edit weights (mugv lora); errors
// as load_for_inference.
[[nodiscard]] ModelBundle load_run_weights(const std::string& run_name,
                                           WeightsKind want = WeightsKind::unknown,
                                           std::optional<int64_t> checkpoint_step = std::nullopt);

// A new run `out_run` whose one checkpoint (at the bundle's checkpoint step) holds the bundle's DiT and text
// encoder weights as they are now (edited: adapters merged, width grown), for generation and as a base of
// `train --from`. Its manifest is the bundle's run manifest renamed, with no base and no LoRA settings, and
// `provenance` stored as config[`key`]; the tokenizer is copied. Throws Error(conflict) when a run of that
// name exists (nothing is written then).
void write_bundle_as_run(const ModelBundle& bundle, const std::string& out_run, const std::string& key,
                         const nlohmann::json& provenance);

// A bundle around the live modules of a training run (shared, not copied; their train/eval mode is left
// as it is) with the run's tokenizer, VAE, latent statistics and preview map loaded from disk, for the
// samples rendered during training. `step` is recorded as the checkpoint step. Throws as load_for_inference.
[[nodiscard]] ModelBundle bundle_for_training_samples(const std::string& run_name, DiT dit,
                                                      std::shared_ptr<TextEncoderBase> text, int64_t step);

// The preview map used when no fitted one exists: the first three normalised latent channels as r, g, b.
void set_default_latent_rgb(ModelBundle& bundle, int64_t latent_channels);

// Loads `file` into modules registered under prefixes ("dit", "text", "vae"): tensors named
// "<prefix>.<path>". Tensors under other prefixes are ignored; a missing or misshapen one throws
// (model/weights.h) and leaves the modules unchanged.
using PrefixedModules = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;
void load_prefixed(const PrefixedModules& modules, const std::filesystem::path& file);

}  // namespace mugv
