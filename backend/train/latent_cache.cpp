#include "train/latent_cache.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/params.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/weights.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"
#include "train/train_support.h"

namespace mugv {
namespace {

std::string meta_or(const std::map<std::string, std::string>& m, const std::string& key, const std::string& fallback) {
  auto it = m.find(key);
  return it == m.end() ? fallback : it->second;
}

}  // namespace

ClipGeometry vae_run_geometry(const std::string& vae_run) {
  RunPaths paths = run_paths(vae_run);
  RunManifest manifest = read_run_manifest(paths);
  const auto& data = manifest.config.value("data", nlohmann::json::object());
  auto size = data.contains("size") && data["size"].is_string() ? parse_size2d(data["size"].get<std::string>())
                                                                : std::nullopt;
  if (!size || !data.contains("frames"))
    throw Error(ErrorCode::format, paths.manifest().string(), "the run's config lacks data.size / data.frames");
  ClipGeometry g;
  g.width = size->width;
  g.height = size->height;
  g.frames = data["frames"].get<int64_t>();
  g.fps = data.value("fps", 0.0);
  return g;
}

fs::path latent_cache_dir(const std::string& dataset, const std::string& vae_run) {
  return mugv_home() / "datasets" / dataset / "cache" / vae_run;
}

void write_cached_clip(const fs::path& cache_dir, const CachedClip& clip, const torch::Tensor& latent,
                       const std::map<std::string, std::string>& extra_metadata) {
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) throw Error(ErrorCode::io, cache_dir.string(), "cannot create the cache folder: " + ec.message());
  auto t = latent.detach().to(torch::kFloat32).contiguous();
  SafetensorsWriter writer;
  writer.add_borrowed("latent", DType::f32, t.sizes().vec(), t.data_ptr(), t.nbytes());
  writer.set_metadata("clip_id", std::to_string(clip.clip_id));
  writer.set_metadata("caption", clip.caption);
  writer.set_metadata("caption_sha256", sha256_hex(clip.caption));
  writer.set_metadata("fps", cat(clip.fps));
  writer.set_metadata("frames", std::to_string(clip.frames));
  writer.set_metadata("height", std::to_string(clip.height));
  writer.set_metadata("width", std::to_string(clip.width));
  for (const auto& [k, v] : extra_metadata) writer.set_metadata(k, v);
  writer.write(cache_dir / cat("clip-", clip.clip_id, ".safetensors"));
}

std::vector<CachedClip> list_cached_clips(const fs::path& cache_dir) {
  std::vector<CachedClip> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !starts_with(name, "clip-") || !ends_with(name, ".safetensors")) continue;
    try {
      auto file = SafetensorsFile::open(entry.path());
      const auto& m = file.metadata();
      CachedClip c;
      c.path = entry.path();
      c.clip_id = std::stoll(meta_or(m, "clip_id", "0"));
      c.caption = meta_or(m, "caption", "");
      c.fps = std::stod(meta_or(m, "fps", "0"));
      c.frames = std::stoll(meta_or(m, "frames", "0"));
      c.height = std::stoll(meta_or(m, "height", "0"));
      c.width = std::stoll(meta_or(m, "width", "0"));
      c.latent_shape = file.at("latent").shape;
      if (c.latent_shape.size() != 4) throw Error(ErrorCode::format, entry.path().string(), "latent is not [C,T,H,W]");
      out.push_back(std::move(c));
    } catch (const std::exception& e) {
      log_warning(cat(entry.path().string(), ": skipped: ", e.what()));
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.clip_id < b.clip_id; });
  return out;
}

torch::Tensor read_cached_latent(const CachedClip& clip) {
  auto file = SafetensorsFile::open(clip.path);
  return tensor_from_view(file.at("latent"), clip.path.string()).to(torch::kFloat32);
}

LatentCacheReport encode_latents(Catalog& catalog, const LatentCacheOptions& options, const CancelToken& cancel,
                                 const ProgressFn& progress) {
  auto dataset = find_dataset(catalog, options.dataset);
  if (!dataset) throw Error(ErrorCode::not_found, options.dataset, "no such dataset");
  if (options.threads > 0) torch::set_num_threads(static_cast<int>(options.threads));

  LatentCacheReport report;
  report.cache_dir = latent_cache_dir(dataset->name, options.vae_run);
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

  const ClipGeometry geometry = vae_run_geometry(options.vae_run);
  ModelPreset preset;
  VAEBundle bundle = load_vae_run(options.vae_run, &preset);
  CheckpointStore store(run_paths(options.vae_run).checkpoints());
  const std::string vae_step = std::to_string(store.latest_good()->step);

  std::map<int64_t, std::map<std::string, std::string>> existing;
  {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(report.cache_dir, ec)) {
      if (!ends_with(entry.path().filename().string(), ".safetensors")) continue;
      try {
        auto file = SafetensorsFile::open(entry.path());
        existing[std::stoll(meta_or(file.metadata(), "clip_id", "0"))] = file.metadata();
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
    if (it != existing.end() && meta_or(it->second, "caption_sha256", "") == sha256_hex(w.caption) &&
        meta_or(it->second, "vae_step", "") == vae_step && meta_or(it->second, "vae_run", "") == options.vae_run) {
      ++report.already_cached;
      meter.advance(1);
      continue;
    }
    try {
      auto source = get_source(catalog, w.clip.source_id);
      if (!source) throw Error(ErrorCode::not_found, cat("clip ", w.clip.id), "its source is gone");
      const double fps = geometry.fps > 0 ? geometry.fps : w.clip.fps;
      auto video = decode_clip_video(source->path, w.clip.start_s, geometry.frames, geometry.width, geometry.height,
                                     geometry.fps);
      auto [mean, logvar] = bundle->vae->encode(video.unsqueeze(0));
      auto latent = bundle->vae->normalize(mean)[0];
      CachedClip entry;
      entry.clip_id = w.clip.id;
      entry.caption = w.caption;
      entry.fps = fps;
      entry.frames = geometry.frames;
      entry.height = geometry.height;
      entry.width = geometry.width;
      write_cached_clip(report.cache_dir, entry, latent, {{"vae_run", options.vae_run}, {"vae_step", vae_step}});
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
