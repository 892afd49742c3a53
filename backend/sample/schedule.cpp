#include "sample/schedule.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/timestep_shift.h"

namespace mugv {

std::vector<double> euler_timesteps(int steps, double ratio) {
  return refine_timesteps(steps, 1.0, ratio);
}

std::vector<double> refine_timesteps(int steps, double start_t, double ratio) {
  if (steps < 1)
    throw Error(ErrorCode::invalid_argument, "steps", cat("steps must be at least 1, got ", steps));
  if (!(ratio > 0))
    throw Error(ErrorCode::invalid_argument, "schedule", cat("shift ratio must be positive, got ", ratio));
  if (!(start_t > 0) || start_t > 1)
    throw Error(ErrorCode::invalid_argument, "schedule", cat("start time must be in (0, 1], got ", start_t));
  // Uniform in the unshifted time u, then shifted: the same warp the trainer applies to its draws.
  // The refine pass starts at the u whose shifted value is start_t (inverse of the shift).
  const double u0 = unshift_timestep(start_t, ratio);
  std::vector<double> t(static_cast<size_t>(steps) + 1);
  for (int i = 0; i <= steps; ++i) t[i] = shift_timestep(u0 * (1.0 - double(i) / steps), ratio);
  t.front() = start_t;
  t.back() = 0.0;
  return t;
}

}  // namespace mugv
