#pragma once
// Building a latent cache from a dataset (`mugv encode`, the format is in latent_cache.h): every kept-or-
// undecided clip that has a caption is decoded (FFmpeg) at the VAE run's geometry, encoded and written.
// Needs the catalog and a video decoder, so it lives apart from the cache reader the trainer uses.

#include "catalog/catalog.h"
#include "core/progress.h"
#include "train/latent_cache.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mugv {

struct LatentCacheOptions {
  std::string dataset;
  std::string vae_run;  // a VAE run of this project (its encoder and geometry), or:
  // a released model folder or installed model name (model/release_files.h): its VAE at `geometry`, into the
  // cache release_latent_cache_name() names
  std::string model;
  ClipGeometry geometry;
  int64_t threads = 0;  // torch threads; 0 keeps the current setting
};

struct ClipFailure {
  int64_t clip_id = 0;
  std::string reason;
};

struct LatentCacheReport {
  fs::path cache_dir;
  int64_t clips_total = 0;  // clips in the dataset
  int64_t rejected = 0;     // not considered: decision reject
  int64_t uncaptioned = 0;  // not considered: no current caption
  int64_t encoded = 0;
  int64_t already_cached = 0;
  std::vector<ClipFailure> failures;
};

// Throws Error(usage) when neither or both of vae_run and model are given, or model without a geometry;
// Error(not_found) for an unknown dataset, VAE run or model, Error(invalid_argument) when the dataset
// has no clip to encode (the message counts rejected and uncaptioned clips), Error(cancelled).
LatentCacheReport encode_latents(Catalog& catalog, const LatentCacheOptions& options,
                                 const CancelToken& cancel, const ProgressFn& progress);

}  // namespace mugv
