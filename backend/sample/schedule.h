#pragma once
// The sampling schedule of MUG-V (docs/MUGV.md §4): an Euler ODE solver over N steps on the shifted
// timesteps the trainer draws from (train/flow.h).
//
//   u_i = 1 − i/N,  t_i = shift(u_i, r),  i = 0..N     (t_0 = 1 pure noise, t_N = 0 clean)
//   shift and r: model/timestep_shift.h, the formula the trainer uses
//   x_t = (1 − t)·x0 + t·ε,  v = x0 − ε   ⇒   x_{t−Δ} = x_t + Δ·v,  x0 ≈ x_t + t·v
//
// `base` must be the one the run was trained with (train/flow.h FlowOptions::shift_base_px: 512 for
// MUG-V sizes, 64 for the tiny starter presets); the sampler reads it from the run's config.
// Torch-free pure functions; thread-safe.

#include <cstdint>
#include <vector>

namespace mugv {

// The N + 1 timesteps t_0 = 1 > t_1 > ... > t_N = 0 of an N-step shifted Euler schedule.
// Throws Error(invalid_argument) for steps < 1 or ratio <= 0.
[[nodiscard]] std::vector<double> euler_timesteps(int steps, double ratio);

// The tail of a schedule for a refine pass that starts from a partly noised clean video at
// t = start_t (SDEdit): `steps` shifted-uniform steps from start_t down to 0. start_t in (0, 1].
[[nodiscard]] std::vector<double> refine_timesteps(int steps, double start_t, double ratio);

}  // namespace mugv
