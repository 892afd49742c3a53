#pragma once
// The rectified-flow training objective of MUG-V (docs/MUGV.md §4).
//
//   t  ~ logit-normal(0, 1)                          (sigmoid of a standard normal draw)
//   t' = r·t / (1 + (r − 1)·t),  r = sqrt(H·W / base²) · sqrt(T_latent)   (model/timestep_shift.h)
//   x_t = (1 − t')·x0 + t'·ε,    target v = x0 − ε   (the sign convention of the public code)
//   loss = mean squared error over the latent elements of non-conditioning frames
//
// H and W are the PIXEL size of the clip and `base` the resolution at which no shift is wanted.
// MUG-V uses base 512 (r ≈ 7 at 720p, 5 s). For the 64×64 starter clips base 512 would give
// r = 0.125·sqrt(5) ≈ 0.28, pushing t towards 0 (nearly clean inputs) — the opposite of what small
// latents need — so the tiny presets use base 64 (r = sqrt(5) ≈ 2.2). r < 1 is allowed but unusual.
//
// Randomness: every random draw of sample b at training step s comes from a CPU torch::Generator
// seeded with sample_seed(seed, s, b), never from the global generator, so a resumed run draws
// exactly what an uninterrupted one would, whatever happened in between.
//
// Conditioning (I2V / TI2V training): with probability p_first_frame a sample keeps its clean first
// latent frame (cond_mask[b, 0] = true, x_t = x0 there); those frames get t = 0 modulation in the DiT
// and are excluded from the loss. Caption dropout: with probability p_caption_dropout a sample's
// caption is replaced by the DiT's learned null caption (DiTImpl::drop_captions).
// Pure functions over tensors; thread-safe as long as callers do not share tensors.

#include <torch/torch.h>

#include <cstdint>

namespace mugv {

struct FlowOptions {
  double shift_base_px = 512.0;  // resolution with r = 1 at one latent frame; see above
  double p_first_frame = 0.0;    // probability of first-frame conditioning per sample
  double p_caption_dropout = 0.1;
};

// Seed of one sample's generator: a SplitMix64 mix of (seed, step, sample), never 0-correlated across steps.
[[nodiscard]] uint64_t sample_seed(uint64_t seed, int64_t step, int64_t sample);

// One noised batch, ready for the DiT.
struct FlowBatch {
  torch::Tensor x_t;           // [B,C,T,H,W]
  torch::Tensor t;             // [B] shifted timesteps in (0, 1)
  torch::Tensor target;        // [B,C,T,H,W] velocity x0 − ε
  torch::Tensor cond_mask;     // [B,T] bool: frames that keep their clean latent
  torch::Tensor drop_caption;  // [B] bool: use the null caption
};

// Draws noise, t, conditioning and caption dropout for the clean latents x0 [B,C,T,H,W] of training
// step `step`; `height_px`/`width_px` are the clip's pixel size (for the shift). x0[b] is sample
// `first_sample + b` of the step's batch: a data-parallel rank holding part of the batch draws exactly what
// one process holding all of it would.
[[nodiscard]] FlowBatch make_flow_batch(const torch::Tensor& x0, uint64_t seed, int64_t step,
                                        int64_t height_px, int64_t width_px, const FlowOptions& options,
                                        int64_t first_sample = 0);
// The same batch with every tensor on `device` (no copies when already there).
[[nodiscard]] FlowBatch to_device(const FlowBatch& batch, const torch::Device& device);

// Mean of (prediction − target)² over the elements of frames where cond_mask is false. cond_mask
// [B,T] bool or undefined (every frame counts). Returns 0 (with gradient) when every frame is masked.
[[nodiscard]] torch::Tensor masked_flow_loss(const torch::Tensor& prediction, const torch::Tensor& target,
                                             const torch::Tensor& cond_mask);
// The same loss as its two parts, for data-parallel ranks that each hold part of a batch: the sum of the
// squared errors (with gradient) and how many elements counted. The batch loss is Σ sums / Σ counts.
struct FlowLossParts {
  torch::Tensor squared_error_sum;
  double counted = 0;
};
[[nodiscard]] FlowLossParts masked_flow_loss_parts(const torch::Tensor& prediction,
                                                   const torch::Tensor& target,
                                                   const torch::Tensor& cond_mask);

// How many elements of a prediction shaped like `target` [B,C,T,H,W] the loss counts: those of frames where
// cond_mask [B,T] is false (undefined: all). Known before the forward, so micro-batches can scale their
// losses by the whole step's count.
[[nodiscard]] double flow_loss_elements(const torch::Tensor& target, const torch::Tensor& cond_mask);

// Each sample's own mean squared error [B] over its non-conditioning elements (post-training compares them
// sample by sample, train/preference.h).
[[nodiscard]] torch::Tensor per_sample_flow_error(const torch::Tensor& prediction,
                                                  const torch::Tensor& target,
                                                  const torch::Tensor& cond_mask);
// The samples of `a` followed by those of `b`.
[[nodiscard]] FlowBatch concat(const FlowBatch& a, const FlowBatch& b);

}  // namespace mugv
