#pragma once
// Post-training objectives for rectified flow (`mugv train --from BASE --objective dpo|kto`): the policy
// starts from BASE and learns from labelled generations (catalog/preferences.h) against a frozen copy of
// BASE, the reference.
//
// For a generation x with caption c, a training step draws t and noise ε per sample (flow.h) and measures
// the per-sample flow error of the policy, e_θ(x) = mean ‖v_θ(x_t, t, c) − (x − ε)‖², and of the reference,
// e_ref(x). A lower error than the reference means the policy now gives x more likelihood.
//
//   Diffusion-DPO (pairs: winner w, loser l, the same t and ε for both):
//     Δ = (e_θ(w) − e_ref(w)) − (e_θ(l) − e_ref(l))
//     loss = −log σ(−β/2 · Δ)                                  averaged over the pairs
//            + λ · mean e_θ(w)                                 the winners' flow loss (RPO), λ ≥ 0
//   KTO (single labels; a labelled pair gives its winner as desirable and its loser as undesirable):
//     r = e_ref(x) − e_θ(x)                                     the implicit reward
//     z = max(0, mean over the batch of r), no gradient         the reference point
//     loss = λ_D·(1 − σ(β·(r − z)))  for a desirable x,  λ_U·(1 − σ(β·(z − r)))  for an undesirable one,
//            averaged, + λ · (mean e_θ over the batch's desirable items)
//
// The λ term (--preference-sft-weight, 0 by default) anchors the policy to what was preferred: the
// preference terms alone are met as well by raising the loser's error as by lowering the winner's, and a
// normalised optimizer (AdamW, Muon) takes full-size steps along that difference however noisy it is, which
// moves the model away from every video, preferred ones included (measured in docs/BENCHMARKS.md).
//
// The labelled latents are copied into the run folder when it starts (runs/R/preference_data/: one latent
// cache entry per item, clip-<k>.safetensors, and items.json naming the generations and labels), so a resume
// reads exactly the data the run began with whatever is labelled or deleted later. A DPO item's latent holds
// the winner's channels then the loser's ([2C, T, H, W]); a KTO item's is one generation's ([C, T, H, W]).
// Generations are usable when `mugv generate` kept their latent (settings "latent", a file beside the video)
// in the base's latent space; others are skipped with the reason logged.
// Reading the labels from the catalog is preference_collect.h (the trainer itself is catalog-free).
// Pure functions and file readers; not thread-safe over one run folder.

#include "train/latent_cache.h"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class TrainObjective { unknown = 0, flow, dpo, kto };
const char* to_string(TrainObjective objective);
std::optional<TrainObjective> train_objective_from_string(std::string_view name);
inline bool is_preference_objective(TrainObjective o) {
  return o == TrainObjective::dpo || o == TrainObjective::kto;
}

// Sums a small float64 CPU tensor over the data-parallel ranks in place (empty: one process). The losses
// below then give each rank its part of the whole batch's loss, so that the ranks' gradients summed (as the
// gradient sync does) are the gradient of the whole batch's loss, and every statistic is the whole batch's.
using SumOverRanks = std::function<void(torch::Tensor&)>;

struct PreferenceLoss {
  torch::Tensor loss;    // scalar, with gradient: this rank's part of the batch's loss
  double value = 0;      // the whole batch's loss (every rank's parts together)
  double accuracy = 0;   // DPO: pairs with Δ < 0; KTO: items whose reward is on their label's side of z
  double margin = 0;     // DPO: mean −Δ; KTO: mean r of desirable minus mean r of undesirable items
  double reference = 0;  // KTO: z
  double sft = 0;  // the λ-weighted term's flow error (winners / desirable items), before λ; 0 when λ = 0
};

// Per-sample errors [B] of this rank's items (policy with gradient, reference without). Throws
// Error(invalid_argument) for shapes that differ, beta <= 0 or sft_weight < 0. DPO sums over the ranks once a
// step, KTO twice (its reference point z is the whole batch's).
[[nodiscard]] PreferenceLoss dpo_loss(const torch::Tensor& policy_winner, const torch::Tensor& policy_loser,
                                      const torch::Tensor& reference_winner,
                                      const torch::Tensor& reference_loser, double beta,
                                      double sft_weight = 0.0, const SumOverRanks& sum_over_ranks = {});
// `desirable` [B] bool. A batch of only desirable (or only undesirable) items is fine.
[[nodiscard]] PreferenceLoss kto_loss(const torch::Tensor& policy, const torch::Tensor& reference,
                                      const torch::Tensor& desirable, double beta, double sft_weight = 0.0,
                                      double desirable_weight = 1.0, double undesirable_weight = 1.0,
                                      const SumOverRanks& sum_over_ranks = {});

// The latent file `mugv generate` keeps beside a video: "latent" F32 [C, T, H, W] (normalised, what the DiT
// denoised) with metadata prompt, latent_space (the VAE run, or the released model's latent space), fps,
// frames, height, width. `video` "out.mp4" gives "out.mp4.latent.safetensors".
[[nodiscard]] std::filesystem::path generation_latent_path(const std::filesystem::path& video);
void write_generation_latent(const std::filesystem::path& file, const torch::Tensor& latent,
                             const std::string& prompt, const std::string& latent_space, double fps,
                             int64_t frames, int64_t height, int64_t width);

// One training item: the generations it was made from and, for KTO, its label.
struct PreferenceItem {
  std::vector<int64_t> generations;  // DPO: {winner, loser}; KTO: {generation}
  bool desirable = true;
  std::string caption;
};

// What collect_preferences found.
struct PreferenceCollection {
  std::vector<PreferenceItem> items;
  std::vector<torch::Tensor> latents;  // per item, as stored in the run folder
  std::vector<ClipGeometry> geometry;  // per item: the generation's pixel size, frames and fps
  std::vector<std::string> skipped;    // "generation 12: ..." reasons
};

// runs/R/preference_data: writes the collection (items.json and one cache entry per item), and reads it
// back. Throws Error(io) when it cannot be written, Error(not_found)/Error(format) naming the file when a
// run's data is missing or damaged.
void write_preference_data(const std::filesystem::path& dir, const PreferenceCollection& collection);
struct PreferenceData {
  std::vector<CachedClip> clips;  // clip_id = item index
  std::vector<PreferenceItem> items;
};
[[nodiscard]] PreferenceData read_preference_data(const std::filesystem::path& dir);

}  // namespace mugv
