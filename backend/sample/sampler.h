#pragma once
// Text/image-to-video sampling (docs/MUGV.md §4): shifted Euler ODE (schedule.h) with classifier-free
// guidance, first-frame conditioning, live previews, full VAE decode and export with metadata.
//
//   x_1 ~ N(0, I) from a CPU generator seeded by request.seed (same seed, same request, same
//   bundle → bit-identical output; the global torch RNG is never used)
//   per step: v = v_uncond + cfg·(v_cond − v_uncond), one batched DiT forward of 2 (cond, uncond);
//   cfg == 1 runs the conditional branch alone. uncond = the negative prompt, else the DiT's learned
//   null caption, else (release-layout DiTs have none) the encoded empty prompt. x ← x + (t_i − t_{i+1})·v;
//   conditioning latent frames are re-pinned to their clean value after every step. I2V / TI2V: the
//   first-frame image is fitted to the target size, VAE-encoded (mean, normalised) and pinned as latent frame
//   0 with cond_mask[0] = true.
//
// The conditioning image arrives in memory at the request's size; reading and fitting a file is
// video_io.h (load_condition_image), as is writing the result (save_video): the sampler itself needs
// no codec, so the compute-only build has it.
//
// Errors (mugv::Error, checked before any compute): prompt beyond the text token limit
// (invalid_argument, "prompt has 41 tokens; the limit is 32"), an image not of the request's size
// (invalid_argument), height/width not a multiple of VAE
// compression × patch ("height 70 is not a multiple of 16"), frames not k·compress_t or
// k·compress_t + 1, steps < 1, cfg < 0, fps <= 0; cancelled when the token fires (checked every step).
//
// Not thread-safe: one sample() per ModelBundle at a time.

#include "core/progress.h"
#include "media/frame.h"
#include "sample/model_bundle.h"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

// An I2V / TI2V first frame: `pixels` exactly the request's width × height; `name` (the file it came from)
// is recorded in the result's metadata.
struct ConditionImage {
  std::string name;
  RgbFrame pixels;
};

struct GenerateRequest {
  std::string prompt;
  std::string
      negative_prompt;  // empty: guide against the learned null caption, or an empty prompt without one
  uint64_t seed = 0;
  int steps = 25;
  double cfg_scale = 4.0;
  int frames = 17;
  int height = 64;
  int width = 64;
  double fps = 8;
  std::optional<ConditionImage> first_frame;  // I2V / TI2V conditioning image
  std::optional<double> shift_base_px;        // overrides the run's value (schedule.h)
};

// Called once per step with the step just finished (1..total) and the current x0 prediction as
// one small RGB frame per latent frame (latent height × width), through the run's latent → RGB map.
using PreviewFn = std::function<void(int step, int total, const std::vector<RgbFrame>& frames)>;

struct SampleResult {
  torch::Tensor latent;          // final normalised latent [1, C, n, h, w] on the bundle's device
  torch::Tensor cond_latent;     // pinned conditioning latent [1, C, 1, h, w]; undefined for T2V
  std::vector<RgbFrame> frames;  // decoded video, request.frames frames of width × height
  std::map<std::string, std::string> metadata;  // prompt, negative_prompt, seed, steps, cfg, model, run, ...
  double shift_ratio = 0;
};

// Checks `request` against the bundle's model (see Errors above) without computing anything.
void validate_request(const ModelBundle& bundle, const GenerateRequest& request);

// Runs the sampler. `preview` and `progress` may be empty.
[[nodiscard]] SampleResult sample(ModelBundle& bundle, const GenerateRequest& request,
                                  const CancelToken& cancel, const PreviewFn& preview = nullptr,
                                  const ProgressFn& progress = nullptr);

// How strongly words steer the model: along the request's own T2V trajectory (its noise, schedule and
// CFG), at every step, the model's guess of the clean latent x0 = x_t + t·v for request.prompt is compared
// with the guesses for each group of alternative prompts (the same x_t, no guidance). change[group][i] is
// the mean over the group's prompts of rms(x0_alt − x0) / rms(x0) after step i. A word the model has bound
// moves the guess; one it ignores leaves it where it was. Errors as sample() (every prompt is checked).
struct PromptSensitivity {
  std::vector<double> times;                          // t at which each step's guesses were compared
  std::map<std::string, std::vector<double>> change;  // group -> one value per step
};
[[nodiscard]] PromptSensitivity prompt_sensitivity(
    ModelBundle& bundle, const GenerateRequest& request,
    const std::map<std::string, std::vector<std::string>>& groups, const CancelToken& cancel);

// Enhancer (docs/MUGV.md §4): an SDEdit-style refine of a finished latent with `enhancer` (the same or a
// second run sharing the VAE latent space): noise to t = sigma, then `steps` Euler steps to 0 with
// CFG `cfg_scale`, conditioning frames kept. Replaces result.latent and result.frames and records
// the pass in the metadata. Throws Error(invalid_argument) when the enhancer's latent shape differs.
struct EnhanceOptions {
  double sigma = 0.3;
  int steps = 1;
  double cfg_scale = 2.0;
};
void enhance(ModelBundle& enhancer, const GenerateRequest& request, const EnhanceOptions& options,
             SampleResult& result, const CancelToken& cancel);

}  // namespace mugv
