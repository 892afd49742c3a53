#include "train/latent_encode.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/release_weights.h"
#include "model/run_models.h"
#include "train/checkpoint_store.h"
#include "train/clip_video.h"
#include "train/run_layout.h"

#include <functional>

namespace mugv {

LatentCacheReport encode_latents(Catalog& catalog, const LatentCacheOptions& options,
                                 const CancelToken& cancel, const ProgressFn& progress) {
  auto dataset = find_dataset(catalog, options.dataset);
  if (!dataset) throw Error(ErrorCode::not_found, options.dataset, "no such dataset");
  if (options.threads > 0) torch::set_num_threads(static_cast<int>(options.threads));

  if (options.vae_run.empty() == options.model.empty())
    throw Error(ErrorCode::usage, "--vae-run",
                "name the encoder: a VAE run (--vae-run) or a released model (--model)");
  if (!options.model.empty() &&
      (options.geometry.width < 1 || options.geometry.height < 1 || options.geometry.frames < 1))
    throw Error(ErrorCode::usage, "--size",
                "a released model's VAE encodes at the size and frames given (--size WxH --frames F)");
  LatentCacheReport report;
  ClipFilter filter;
  filter.dataset_id = dataset->id;
  struct Work {
    Clip clip;
    std::string caption;
  };
  std::vector<Work> work;
  for (auto& clip : list_clips(catalog, filter)) {
    ++report.clips_total;
    if (clip.decision == ClipDecision::reject) {
      ++report.rejected;
      continue;
    }
    auto caption = current_caption(catalog, clip.id);
    if (!caption || trim(caption->text).empty()) {
      ++report.uncaptioned;
      continue;
    }
    work.push_back({std::move(clip), caption->text});
  }
  if (work.empty())
    throw Error(ErrorCode::invalid_argument, dataset->name,
                cat("no clips to encode: the dataset has ", report.clips_total, " clip(s), ", report.rejected,
                    " rejected and ", report.uncaptioned, " without a caption"));

  // The encoder: a VAE run's (its geometry, its latest good checkpoint) or a released model's VAE (the
  // geometry given; identified by its file's content).
  ClipGeometry geometry;
  std::string cache_name, vae_step;
  std::function<torch::Tensor(const torch::Tensor&)> encode;
  if (!options.model.empty()) {
    const ReleaseModelFiles files = resolve_release_model(options.model);
    geometry = options.geometry;
    cache_name = release_latent_cache_name(files);
    auto codec = load_release_codec(files);
    codec->module().eval();
    vae_step = content_hash_of_file(*files.vae).substr(0, 16);
    encode = [codec](const torch::Tensor& video) mutable { return codec->encode(video); };
  } else {
    geometry = vae_run_geometry(options.vae_run);
    cache_name = options.vae_run;
    ModelPreset preset;
    VAEBundle bundle = load_vae_run(options.vae_run, &preset);
    CheckpointStore store(run_paths(options.vae_run).checkpoints());
    vae_step = std::to_string(store.latest_good()->step);
    encode = [bundle](const torch::Tensor& video) mutable {
      auto [mean, logvar] = bundle->vae->encode(video);
      return bundle->vae->normalize(mean);
    };
  }

  report.cache_dir = latent_cache_dir(dataset->name, cache_name);
  std::map<int64_t, std::map<std::string, std::string>> existing;
  {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(report.cache_dir, ec)) {
      if (!ends_with(entry.path().filename().string(), ".safetensors")) continue;
      try {
        auto file = SafetensorsFile::open(entry.path());
        existing[std::stoll(metadata_value(file.metadata(), "clip_id", "0"))] = file.metadata();
      } catch (const std::exception&) {
        // Damaged entries are simply re-encoded.
      }
    }
  }

  ProgressMeter meter(progress, "encode", "clips", static_cast<int64_t>(work.size()));
  torch::NoGradGuard no_grad;
  for (const auto& w : work) {
    cancel.throw_if_cancelled("encode");
    auto it = existing.find(w.clip.id);
    if (it != existing.end() && metadata_value(it->second, "caption_sha256", "") == sha256_hex(w.caption) &&
        metadata_value(it->second, "vae_step", "") == vae_step &&
        metadata_value(it->second, "vae_run", "") == cache_name) {
      ++report.already_cached;
      meter.advance(1);
      continue;
    }
    try {
      auto source = get_source(catalog, w.clip.source_id);
      if (!source) throw Error(ErrorCode::not_found, cat("clip ", w.clip.id), "its source is gone");
      const double fps = geometry.fps > 0 ? geometry.fps : w.clip.fps;
      auto video = decode_clip_video(source->path, w.clip.start_s, geometry.frames, geometry.width,
                                     geometry.height, geometry.fps);
      auto latent = encode(video.unsqueeze(0))[0];
      CachedClip entry;
      entry.clip_id = w.clip.id;
      entry.caption = w.caption;
      entry.fps = fps;
      entry.frames = geometry.frames;
      entry.height = geometry.height;
      entry.width = geometry.width;
      write_cached_clip(report.cache_dir, entry, latent, {{"vae_run", cache_name}, {"vae_step", vae_step}});
      ++report.encoded;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      report.failures.push_back({w.clip.id, e.what()});
      log_warning(cat("clip ", w.clip.id, ": not encoded: ", e.what()));
    } catch (const c10::Error& e) {
      report.failures.push_back({w.clip.id, e.what_without_backtrace()});
      log_warning(cat("clip ", w.clip.id, ": not encoded: ", e.what_without_backtrace()));
    }
    meter.advance(1, cat("clip ", w.clip.id));
  }
  meter.flush();
  return report;
}

}  // namespace mugv
