#pragma once
// The latent cache (`mugv encode`): every kept-or-undecided clip of a dataset that has a caption is
// decoded once at the VAE run's training size / frame count / fps (the "data.size", "data.frames",
// "data.fps" values in its run.json config), encoded with the VAE (mean latent, normalised with the
// run's latent_stats.json) and stored as
//   $MUGV_HOME/datasets/<dataset>/cache/<vae-run>/clip-<id>.safetensors
// holding "latent" F32 [C, T, H, W] and metadata: clip_id, caption, caption_sha256, fps, frames,
// height, width (pixels), vae_run, vae_step. The caption TEXT is stored: the small text encoder is
// trained jointly with the DiT, so its features are computed in the training loop.
// A clip whose file exists with the same caption hash and VAE checkpoint step is skipped; a clip that
// fails (unreadable source, too short) is reported and the rest goes on. Files are written
// atomically, so an interrupted encode leaves only complete entries.
// Not thread-safe (one encoder per cache folder); reading a cache is thread-safe.
// Building one (encode_latents) is latent_encode.h; this file reads and writes entries only.

#include "train/run_layout.h"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

// The clip geometry a VAE run was trained at (its run.json config).
struct ClipGeometry {
  int64_t width = 0;
  int64_t height = 0;
  int64_t frames = 0;
  double fps = 0;  // 0: the source's own rate
};
// Throws Error(format) naming the run when its config lacks data.size / data.frames.
[[nodiscard]] ClipGeometry vae_run_geometry(const std::string& vae_run);

// latent_cache_dir(dataset, vae_run), the folder of one cache, is in train/run_layout.h (torch-free: the
// server lists a dataset's caches).

// One cache entry, as listed from the file headers (no tensor data read).
struct CachedClip {
  int64_t clip_id = 0;
  fs::path path;
  std::string caption;
  double fps = 0;
  int64_t frames = 0;  // pixel frames, height, width of the decoded clip
  int64_t height = 0;
  int64_t width = 0;
  std::vector<int64_t> latent_shape;  // [C, T, H, W]
};

// Entries of a cache folder sorted by clip id; unreadable files are skipped with a warning. Empty when
// the folder is missing or empty.
[[nodiscard]] std::vector<CachedClip> list_cached_clips(const fs::path& cache_dir);
// The latent [C, T, H, W] float32. Throws Error(corrupt/format) naming the file.
[[nodiscard]] torch::Tensor read_cached_latent(const CachedClip& clip);
// metadata[key], or `fallback` when the entry has no such key.
[[nodiscard]] std::string metadata_value(const std::map<std::string, std::string>& metadata,
                                         const std::string& key, const std::string& fallback);
// Writes one entry atomically (used by encode_latents, and by tests for synthetic caches).
void write_cached_clip(const fs::path& cache_dir, const CachedClip& clip, const torch::Tensor& latent,
                       const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace mugv
