#pragma once
// A released MUG-V model folder (model/release_files.h: dit.pt, vae.pt, a T5 folder) loaded for sampling as a
// ModelBundle, so the sampler, previews and export work on it as on a trained run:
//   DiT    configuration from the checkpoint's shapes (model/config.h), release tensor names, no learned null
//          caption: guidance runs against the encoded negative prompt
//   VAE    the released video VAE (model/mugv_vae.h), configuration from its shapes
//   text   T5 v1.1 from the folder's config.json and weights (encoder tensors only), spiece.model, 300
//   tokens,
//          prompts cut as the release's tokenizer cuts them
//   flow   shift base 512 (the release's timestep transform)
//
// Before anything is built, the memory of the three phases (model/info.h) is compared with what the device
// has; a generation that cannot fit fails at once with the numbers, and OffloadMode::automatic turns block
// swap (model/block_offload.h) on when that is what makes it fit. Weights are read straight into modules
// built in the compute dtype, one tensor at a time (model/weights.h).
//
// Not thread-safe: one load at a time; the bundle is used as any other (sample/sampler.h).

#include "model/block_offload.h"
#include "sample/model_bundle.h"

#include <torch/torch.h>

#include <filesystem>

namespace mugv {

// What the release's inference pipeline sets (infer_pipeline.py) and `mugv generate --model` uses by default.
struct ReleaseDefaults {
  static constexpr int text_tokens = kReleaseTextTokens;
  static constexpr double fps = 30.0;
  static constexpr int steps = 25;
  static constexpr double cfg_scale = 4.0;
  static constexpr double shift_base_px = 512.0;
  static constexpr int frames_5s = 105;
  static constexpr int frames_3s = 73;
};
// The negative prompt the release guides against.
[[nodiscard]] const char* release_negative_prompt();
// The release appends the aesthetic score it conditions on to every prompt: "<prompt> aesthetic score: 6.0.".
[[nodiscard]] std::string with_aesthetic_score(const std::string& prompt, double score = 6.0);

struct ReleaseLoadOptions {
  torch::Device device = torch::kCPU;
  // Weights and activations of the DiT and T5; undefined = bf16 on a GPU, fp32 on a CPU. The VAE runs in
  // fp32.
  std::optional<torch::ScalarType> dtype;
  OffloadMode offload = OffloadMode::automatic;
  // The video to be generated, for the memory check (0 = skip the check).
  int frames = 0;
  int height = 0;
  int width = 0;
};

// Throws Error(not_found) naming the folder and what it lacks (VAE, T5 folder, spiece.model), the errors of
// model/config.h, model/mugv_vae.h and model/weights.h for files that do not fit (naming file and tensor),
// Error(out_of_memory) when the generation cannot fit the device even with block swap, and Error(unsupported)
// for OffloadMode::blocks on a DiT split across ranks.
[[nodiscard]] ModelBundle load_release_model(const std::filesystem::path& dir,
                                             const ReleaseLoadOptions& options);

}  // namespace mugv
