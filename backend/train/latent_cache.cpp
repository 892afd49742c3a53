#include "train/latent_cache.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/params.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/weights.h"
#include "train/run_layout.h"

namespace mugv {

std::string metadata_value(const std::map<std::string, std::string>& metadata, const std::string& key,
                           const std::string& fallback) {
  auto it = metadata.find(key);
  return it == metadata.end() ? fallback : it->second;
}

ClipGeometry vae_run_geometry(const std::string& vae_run) {
  RunPaths paths = run_paths(vae_run);
  RunManifest manifest = read_run_manifest(paths);
  const auto& data = manifest.config.value("data", nlohmann::json::object());
  auto size = data.contains("size") && data["size"].is_string()
                  ? parse_size2d(data["size"].get<std::string>())
                  : std::nullopt;
  if (!size || !data.contains("frames"))
    throw Error(ErrorCode::format, paths.manifest().string(),
                "the run's config lacks data.size / data.frames");
  ClipGeometry g;
  g.width = size->width;
  g.height = size->height;
  g.frames = data["frames"].get<int64_t>();
  g.fps = data.value("fps", 0.0);
  return g;
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
  writer.write(latent_cache_entry(cache_dir, clip.clip_id));
}

std::vector<CachedClip> list_cached_clips(const fs::path& cache_dir) {
  std::vector<CachedClip> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache_dir, ec)) {
    if (!entry.is_regular_file() || !is_latent_cache_entry(entry.path())) continue;
    try {
      auto file = SafetensorsFile::open(entry.path());
      const auto& m = file.metadata();
      CachedClip c;
      c.path = entry.path();
      c.clip_id = std::stoll(metadata_value(m, "clip_id", "0"));
      c.caption = metadata_value(m, "caption", "");
      c.fps = std::stod(metadata_value(m, "fps", "0"));
      c.frames = std::stoll(metadata_value(m, "frames", "0"));
      c.height = std::stoll(metadata_value(m, "height", "0"));
      c.width = std::stoll(metadata_value(m, "width", "0"));
      c.latent_shape = file.at("latent").shape;
      if (c.latent_shape.size() != 4)
        throw Error(ErrorCode::format, entry.path().string(), "latent is not [C,T,H,W]");
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

}  // namespace mugv
