#pragma once
// What a run's checkpoints hold, as modules whose parameter paths are the checkpoint tensor names of
// train/run_layout.h ("dit.*" + "text.*" for DiT runs, "vae.*" for VAE runs), shared by the trainers, the
// latent encoder and the sampler: the bundles, a VAE run's weights and latent statistics, and the pictures
// a video tensor stands for. Loaders throw Error(not_found) naming the run when it has no good checkpoint.
// Not thread-safe (torch modules).

#include "media/frame.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/text_encoder.h"
#include "model/vae.h"
#include "train/run_layout.h"

#include <torch/torch.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv {

// DiT + its jointly trained text encoder, registered as "dit" and "text".
class DiTBundleImpl : public torch::nn::Module {
 public:
  explicit DiTBundleImpl(const ModelPreset& preset);
  DiT dit{nullptr};
  std::shared_ptr<TextEncoderBase> text;
};
TORCH_MODULE(DiTBundle);

// The video VAE registered as "vae".
class VAEBundleImpl : public torch::nn::Module {
 public:
  explicit VAEBundleImpl(const VAEConfig& config);
  VideoVAE vae{nullptr};
};
TORCH_MODULE(VAEBundle);

// Parameters with their full names ("dit.blocks.0.attn.qkv.weight"), registration order.
[[nodiscard]] std::vector<std::pair<std::string, torch::Tensor>> named_parameters(
    const torch::nn::Module& module);

// Which weights of a DiT run to load.
enum class WeightSet { unknown = 0, model, ema };
const char* to_string(WeightSet set);
std::optional<WeightSet> weight_set_from_string(std::string_view name);

// The VAE of a VAE run at its newest good checkpoint, with latent_stats.json applied when present,
// in eval mode. Throws Error(not_found) naming the run when it has no good checkpoint.
[[nodiscard]] VAEBundle load_vae_run(const std::string& run_name, ModelPreset* preset_out = nullptr);
// Per-channel latent statistics of a VAE run (latent_stats.json); nullopt when not measured yet.
struct LatentStats {
  std::vector<double> mean, std;
};
[[nodiscard]] std::optional<LatentStats> read_latent_stats(const RunPaths& paths);
void write_latent_stats(const RunPaths& paths, const LatentStats& stats);
// Loads a VAE run's latent_stats.json into `vae` (nothing when the run has none yet). Error(format) naming
// the file when it is malformed or its channel count differs from the VAE's.
void apply_latent_stats(VideoVAEImpl& vae, const RunPaths& paths);

// The inverse for writing: an image [3, H, W] or a video [3, T, H, W] in [-1, 1] (any device, any
// float type) as RGB24 frames, values clamped.
[[nodiscard]] RgbFrame to_rgb_frame(const torch::Tensor& image);
[[nodiscard]] std::vector<RgbFrame> video_to_frames(const torch::Tensor& video);

}  // namespace mugv
