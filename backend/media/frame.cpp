#include "media/frame.h"

#include "core/error.h"
#include "core/strings.h"

#include <cmath>
#include <cstdlib>
#include <limits>

namespace mugv {

const char* to_string(ResizeMode mode) {
  switch (mode) {
    case ResizeMode::stretch:
      return "stretch";
    case ResizeMode::center_crop:
      return "center_crop";
    case ResizeMode::fit_pad:
      return "fit_pad";
    case ResizeMode::unknown:
      break;
  }
  return "unknown";
}

std::optional<ResizeMode> resize_mode_from_string(std::string_view name) {
  for (ResizeMode m :
       {ResizeMode::unknown, ResizeMode::stretch, ResizeMode::center_crop, ResizeMode::fit_pad})
    if (name == to_string(m)) return m;
  return std::nullopt;
}

namespace {

void check_comparable(const RgbFrame& a, const RgbFrame& b) {
  if (a.empty() || b.empty())
    throw Error(ErrorCode::invalid_argument, "frame comparison", "a frame has no pixels");
  if (a.width != b.width || a.height != b.height || a.rgb.size() != b.rgb.size())
    throw Error(ErrorCode::invalid_argument, "frame comparison",
                cat("sizes differ: ", a.width, "x", a.height, " vs ", b.width, "x", b.height));
}

}  // namespace

double psnr(const RgbFrame& a, const RgbFrame& b) {
  check_comparable(a, b);
  double sum_sq = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) {
    double d = static_cast<double>(a.rgb[i]) - static_cast<double>(b.rgb[i]);
    sum_sq += d * d;
  }
  if (sum_sq == 0) return std::numeric_limits<double>::infinity();
  double mse = sum_sq / static_cast<double>(a.rgb.size());
  return 10.0 * std::log10(255.0 * 255.0 / mse);
}

double mean_abs_diff(const RgbFrame& a, const RgbFrame& b) {
  check_comparable(a, b);
  uint64_t sum = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i)
    sum += static_cast<uint64_t>(std::abs(int(a.rgb[i]) - int(b.rgb[i])));
  return static_cast<double>(sum) / static_cast<double>(a.rgb.size());
}

}  // namespace mugv
