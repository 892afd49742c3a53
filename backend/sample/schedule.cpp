#include "sample/schedule.h"

#include "core/error.h"
#include "core/strings.h"

#include <cmath>

namespace mugv {

double schedule_shift_ratio(int64_t latent_frames, int64_t height_px, int64_t width_px, double base_px) {
  if (latent_frames < 1 || height_px < 1 || width_px < 1 || !(base_px > 0))
    throw Error(ErrorCode::invalid_argument, "schedule", "frames, size and base resolution must be positive");
  return std::sqrt(double(height_px) * double(width_px) / (base_px * base_px)) *
         std::sqrt(double(latent_frames));
}

double shift_time(double t, double ratio) {
  return ratio * t / (1.0 + (ratio - 1.0) * t);
}

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
  const double u0 = start_t / (ratio - (ratio - 1.0) * start_t);
  std::vector<double> t(static_cast<size_t>(steps) + 1);
  for (int i = 0; i <= steps; ++i) t[i] = shift_time(u0 * (1.0 - double(i) / steps), ratio);
  t.front() = start_t;
  t.back() = 0.0;
  return t;
}

}  // namespace mugv
