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

// What generating one video needs on the device, from shapes alone, so a generation that cannot fit fails
// before anything is loaded. All three networks stay loaded; the two phases differ in their activations:
//   sample  the weights + one guided DiT forward (batch 2: cond and uncond)
//   decode  the weights + the VAE decoder's activations for one micro-batch of frames
// A DiT forward holds about 10 token-width tensors of a block at once (the residual stream, the modulated
// input, q/k/v and their rotated copies, the attention output; or the MLP's 4·d hidden and its GELU), plus,
// without a fused attention kernel, the scores and probabilities of self- and cross-attention. The decoder's
// peak is counted as 6 full-resolution tensors of 128 channels per frame of the micro-batch. These are
// estimates with the allocator's slack left to the caller's margin; see docs/BENCHMARKS.md for measured
// peaks.
struct InferenceMemoryInput {
  DiTConfig dit;
  int64_t vae_parameters = 0;
  int64_t text_parameters = 0;
  int64_t latent_frames = 0, latent_height = 0, latent_width = 0;  // the latent sampled
  int64_t height = 0, width = 0;                                   // the video decoded, in pixels
  int64_t text_tokens = 0;
  int weight_bytes = 4;      // bytes per weight element (4 fp32, 2 bf16)
  int activation_bytes = 4;  // bytes per activation element
  bool fused_attention = false;
  bool block_swap = false;  // the DiT keeps only its non-block weights and two blocks on the device
  int vae_micro_frames = 4;
};
struct InferenceMemory {
  int64_t dit_weight_bytes = 0;           // the whole DiT
  int64_t dit_resident_weight_bytes = 0;  // what stays on the device (all of it without block swap)
  int64_t vae_weight_bytes = 0;
  int64_t text_weight_bytes = 0;
  int64_t dit_activation_bytes = 0;
  int64_t vae_activation_bytes = 0;
  int64_t weight_bytes() const { return dit_resident_weight_bytes + vae_weight_bytes + text_weight_bytes; }
  int64_t sample_phase_bytes() const { return weight_bytes() + dit_activation_bytes; }
  int64_t decode_phase_bytes() const { return weight_bytes() + vae_activation_bytes; }
  int64_t peak_bytes() const;
};
[[nodiscard]] InferenceMemory estimate_inference_memory(const InferenceMemoryInput& input);

}  // namespace mugv
