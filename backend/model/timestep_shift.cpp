#include "model/timestep_shift.h"

#include "core/error.h"

#include <cmath>

namespace mugv {

double timestep_shift_ratio(int64_t latent_frames, int64_t height_px, int64_t width_px, double base_px) {
  if (latent_frames < 1 || height_px < 1 || width_px < 1 || !(base_px > 0))
    throw Error(ErrorCode::invalid_argument, "timestep shift",
                "frames, size and base resolution must be positive");
  return std::sqrt(double(height_px) * double(width_px) / (base_px * base_px)) *
         std::sqrt(double(latent_frames));
}

double shift_timestep(double t, double ratio) {
  return ratio * t / (1.0 + (ratio - 1.0) * t);
}

double unshift_timestep(double shifted, double ratio) {
  return shifted / (ratio - (ratio - 1.0) * shifted);
}

}  // namespace mugv
