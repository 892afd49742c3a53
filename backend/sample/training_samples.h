#pragma once
// Samples rendered while a DiT trains (`mugv train --sample-every N`, and "sample now" from the studio):
// the same prompts and seeds at every render, so the videos of successive steps show how the model learns.
// Files: runs/<run>/samples/step-<N>/sample-<i>.mp4, with prompt, seed and step in the metadata.
//
// The sampler runs on the live training modules (no checkpoint needed, weights not copied); sampling
// draws its noise from its own generators, so it never disturbs the training RNG stream and exact resume
// holds with samples on. The tokenizer, VAE and latent statistics are loaded at the first render and kept.
// Not thread-safe: call from the training thread.

#include "core/progress.h"
#include "media/frame.h"
#include "model/run_models.h"
#include "sample/model_bundle.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct TrainingSampleOptions {
  std::vector<std::string> prompts;  // empty: up to two captions of the run's latent cache
  uint64_t seed = 0;
  int steps = 10;
  double cfg_scale = 4.0;
  int frames = 0;  // 0: the VAE run's clip geometry
  int width = 0;
  int height = 0;
  double fps = 0;
};

struct RenderedSamples {
  int64_t step = 0;
  std::vector<std::filesystem::path> files;
  std::vector<RgbFrame> first_video;  // frames of the first prompt's video, for a live preview
};

class TrainingSampler {
 public:
  // Resolves empty prompts and geometry from the run (Error(not_found) for an unknown run,
  // Error(invalid_argument) when no prompt can be found).
  TrainingSampler(std::string run_name, TrainingSampleOptions options);

  [[nodiscard]] RenderedSamples render(int64_t step, DiTBundleImpl& model, const CancelToken& cancel);
  const TrainingSampleOptions& options() const { return options_; }

 private:
  std::string run_name_;
  TrainingSampleOptions options_;
  std::optional<ModelBundle> bundle_;
};

}  // namespace mugv
