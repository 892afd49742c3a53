#include "sample/training_samples.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "sample/sampler.h"
#include "sample/video_io.h"
#include "train/latent_cache.h"
#include "train/run_layout.h"
#include "train/run_samples.h"

#include <set>

namespace mugv {

namespace {

std::vector<std::string> cached_captions(const RunManifest& run, size_t count) {
  std::vector<std::string> prompts;
  std::set<std::string> seen;
  for (const auto& clip : list_cached_clips(latent_cache_dir(run.dataset, run.vae_run))) {
    if (clip.caption.empty() || !seen.insert(clip.caption).second) continue;
    prompts.push_back(clip.caption);
    if (prompts.size() == count) break;
  }
  return prompts;
}

// The clip geometry samples are rendered at: the VAE run's, or (a latent cache of a released model's VAE,
// which has no run) the cached clips' own.
ClipGeometry sample_geometry(const RunManifest& run) {
  std::error_code ec;
  if (fs::exists(run_paths(run.vae_run).manifest(), ec)) return vae_run_geometry(run.vae_run);
  for (const auto& clip : list_cached_clips(latent_cache_dir(run.dataset, run.vae_run)))
    return ClipGeometry{clip.width, clip.height, clip.frames, clip.fps};
  throw Error(ErrorCode::not_found, run.name,
              cat("no VAE run and no cached clip of '", run.vae_run, "' to take the sample size from"));
}

}  // namespace

TrainingSampler::TrainingSampler(std::string run_name, TrainingSampleOptions options)
    : run_name_(std::move(run_name)), options_(std::move(options)) {
  const RunManifest run = read_run_manifest(run_paths(run_name_));
  if (options_.prompts.empty()) options_.prompts = cached_captions(run, 2);
  if (options_.prompts.empty())
    throw Error(ErrorCode::invalid_argument, run_name_,
                "no sample prompts: give --sample-prompts or caption the dataset");
  if (options_.frames <= 0 || options_.width <= 0 || options_.height <= 0) {
    const ClipGeometry g = sample_geometry(run);
    if (options_.frames <= 0) options_.frames = static_cast<int>(g.frames);
    if (options_.width <= 0) options_.width = static_cast<int>(g.width);
    if (options_.height <= 0) options_.height = static_cast<int>(g.height);
    if (options_.fps <= 0) options_.fps = g.fps > 0 ? g.fps : 8.0;
  }
}

RenderedSamples TrainingSampler::render(int64_t step, DiTBundleImpl& model, const CancelToken& cancel) {
  if (!bundle_) bundle_ = bundle_for_training_samples(run_name_, model.dit, model.text, step);
  bundle_->checkpoint_step = step;
  RenderedSamples out;
  out.step = step;
  const auto dir = sample_step_dir(run_paths(run_name_), step);
  fs::create_directories(dir);
  for (size_t i = 0; i < options_.prompts.size(); ++i) {
    GenerateRequest request;
    request.prompt = options_.prompts[i];
    request.seed = options_.seed + i;
    request.steps = options_.steps;
    request.cfg_scale = options_.cfg_scale;
    request.frames = options_.frames;
    request.width = options_.width;
    request.height = options_.height;
    request.fps = options_.fps;
    SampleResult result = sample(*bundle_, request, cancel);
    result.metadata["step"] = std::to_string(step);
    result.metadata["weights"] = "training";
    const auto file = dir / sample_file_name(i);
    save_video(file, result, request.fps);
    out.files.push_back(file);
    if (i == 0) out.first_video = std::move(result.frames);
  }
  log_info(cat(run_name_, ": samples of step ", step, " in ", dir.string()));
  return out;
}

}  // namespace mugv
