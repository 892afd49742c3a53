#pragma once
// What a model preset costs at a given video size, computed from the shapes alone (torch-free):
// parameter counts, latent shape, token counts and training FLOPs. Backs `mugv model info` and
// the parallel planner. Pure functions; thread-safe.

#include "model/config.h"

#include <cstdint>

namespace mugv {

struct ModelInfo {
  int64_t dit_parameters = 0;
  int64_t vae_parameters = 0;
  int64_t text_parameters = 0;
  int64_t total_parameters = 0;
  // Latent the VAE produces for the video: [latent_channels, latent_frames, latent_height, latent_width].
  int64_t latent_channels = 0;
  int64_t latent_frames = 0;
  int64_t latent_height = 0;
  int64_t latent_width = 0;
  int64_t video_tokens = 0;  // DiT tokens after patchify, without the start/end tokens
  int64_t text_tokens = 0;
  double flops_per_token = 0.0;   // training (forward + backward), docs/MUGV.md §6
  double flops_per_sample = 0.0;  // flops_per_token * video_tokens
};

// Latent frames the VAE produces for `frames` video frames: frames / compress_t, or
// (frames - 1) / compress_t + 1 when frames mod compress_t == 1 (frame 0 is repeated to fill
// the first chunk). Throws Error(invalid_argument) for other frame counts ("frames 18 is not a
// multiple of 8, nor a multiple plus 1").
[[nodiscard]] int64_t vae_latent_frames(const VAEConfig& vae, int64_t frames);

// Throws Error(invalid_argument) when height / width are not multiples of the VAE compression
// ("height 70 is not a multiple of 8") or frames do not fit the chunking.
[[nodiscard]] ModelInfo describe(const ModelPreset& preset, int64_t frames, int64_t height, int64_t width);

}  // namespace mugv
