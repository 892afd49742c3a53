#pragma once
// The video VAE trainer (`mugv train-vae`): reconstruction MSE + L1 + kl_weight·KL (VideoVAE::loss)
// on the dataset's kept-or-undecided clips decoded once at --size / --frames / --fps, AdamW with
// warm-up, gradient clipping, checkpoints through CheckpointStore like the DiT trainer
// (model.safetensors "vae.*", optimizer.safetensors, trainer_state.json). At the end it
//   - measures per-channel latent mean/std over the dataset (encoder means) → latent_stats.json,
//     stored in the final checkpoint's latent_mean/latent_std buffers too;
//   - fits the latent→RGB preview map by least squares between NORMALISED latents and the RGB
//     frames average-pooled over each latent's (t, h, w) block → latent_rgb.json
//     {"weight": [3][C], "bias": [3], "space": "normalized"}, RGB in [-1, 1];
//   - reports reconstruction PSNR (dB, 8-bit scale) on up to --heldout-clips clips of the
//     dataset's heldout.jsonl (beside its manifest, i.e. in the dataset root) when present, as a
//     final metrics.jsonl line {"step", "eval": "heldout", "psnr_db", "clips"}, and draws the first
//     frames of each of those clips above their reconstructions in samples/heldout_reconstruction.png.
// The clip geometry is stored in run.json ("data.size", "data.frames", "data.fps"); `mugv encode`
// decodes at the same geometry. Clips that fail to decode are reported and skipped.
// Not thread-safe: one training per process.

#include "catalog/catalog.h"
#include "core/progress.h"
#include "model/run_models.h"
#include "train/latent_encode.h"
#include "train/train_params.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <vector>

namespace mugv {

struct VAETrainResult {
  int64_t last_step = 0;
  double last_loss = 0;
  int64_t clips = 0;                      // clips trained on
  std::vector<ClipFailure> failures;      // clips that could not be decoded
  std::optional<double> heldout_psnr_db;  // when heldout.jsonl exists
  int64_t heldout_clips = 0;
  LatentStats latent_stats;
  RunPaths paths;
};

// Throws Error(conflict) for an existing run, Error(not_found) for an unknown dataset,
// Error(invalid_argument) for a geometry the VAE cannot encode or a dataset without usable clips,
// Error(out_of_memory) from the preflight, Error(invalid_argument) naming the step on a NaN loss.
VAETrainResult train_vae(Catalog& catalog, const TrainOptions& options, nlohmann::json config,
                         const CancelToken& cancel, const ProgressFn& progress);

}  // namespace mugv
