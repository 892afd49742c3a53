#pragma once
// Shared pieces of the trainers, the latent encoder and the sampler:
//   - the module bundles whose parameter paths are the checkpoint tensor names of run_layout.h
//     ("dit.*" + "text.*" for DiT runs, "vae.*" for VAE runs), and loaders for a run's weights;
//   - decoding a catalog clip to a video tensor at a fixed size / frame count / fps;
//   - machine measurements for metrics: GEMM rate, peak RSS, available memory;
//   - base64 for RNG state in JSON.
// Loaders throw Error(not_found) naming the run when it has no good checkpoint. Not thread-safe
// (torch modules); the measurement functions are thread-safe.

#include "media/frame.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/text_encoder.h"
#include "model/vae.h"
#include "train/run_layout.h"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
[[nodiscard]] std::vector<std::pair<std::string, torch::Tensor>> named_parameters(const torch::nn::Module& module);

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

// Measured GEMM rate in FLOP/s of `dtype` on `device` (on the CPU at the current torch thread count; a few
// n×n matmuls, ~0.2 s): the peak an MFU is measured against, so a bf16 run's MFU is against the bf16 rate.
[[nodiscard]] double measure_gemm_flops(int64_t n = 512, int repeats = 6, torch::ScalarType dtype = torch::kFloat32,
                                        const torch::Device& device = torch::kCPU);
// Peak resident set size of this process (VmHWM), bytes; 0 when unknown.
[[nodiscard]] int64_t peak_rss_bytes();
// MemAvailable from /proc/meminfo, bytes; nullopt when unknown.
[[nodiscard]] std::optional<int64_t> available_memory_bytes();

[[nodiscard]] std::string base64_encode(const uint8_t* bytes, size_t size);
// Throws Error(format) naming `subject` for characters outside the alphabet.
[[nodiscard]] std::vector<uint8_t> base64_decode(std::string_view text, const std::string& subject);

// The global CPU generator's state as base64, and back (exact resume).
[[nodiscard]] std::string torch_rng_state_base64();
void set_torch_rng_state_base64(const std::string& state, const std::string& subject);

}  // namespace mugv
