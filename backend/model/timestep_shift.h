#pragma once
// The resolution-dependent timestep shift of MUG-V's rectified flow (docs/MUGV.md §4), one formula for
// training (train/flow.h shifts each drawn t) and sampling (sample/schedule.h shifts a uniform grid):
//
//   r  = sqrt(H·W / base²) · sqrt(T_latent)      H, W in pixels, T_latent the latent frames
//   t' = r·t / (1 + (r − 1)·t)                   maps 0 → 0 and 1 → 1, monotone for r > 0
//
// `base` is the resolution at which one latent frame is not shifted: 512 for the MUG-V sizes (r ≈ 7 at
// 720p, 5 s), 64 for the tiny starter presets (r = sqrt(5) ≈ 2.2 at 64×64, 5 latent frames); r > 1 moves
// the draws towards noise, which larger latents need. Torch-free pure functions; thread-safe.

#include <cstdint>

namespace mugv {

// Throws Error(invalid_argument) for non-positive frames, size or base.
[[nodiscard]] double timestep_shift_ratio(int64_t latent_frames, int64_t height_px, int64_t width_px,
                                          double base_px);
[[nodiscard]] double shift_timestep(double t, double ratio);
// The t whose shifted value is `shifted` (the inverse of shift_timestep).
[[nodiscard]] double unshift_timestep(double shifted, double ratio);

}  // namespace mugv
