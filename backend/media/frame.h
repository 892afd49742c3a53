#pragma once
// Decoded pictures as plain memory: RgbFrame owns packed RGB24 pixels (row stride = 3 * width, no padding),
// so frames can be copied, compared and handed to OpenCV/LibTorch without FFmpeg types.
// An empty frame (width == 0 or rgb empty) means "no pixels"; a frame from a decoder opened with
// PixelOutput::none carries its size and time but no pixels. Value type; no shared state.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace mugv {

struct RgbFrame {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // packed RGB24, row stride = 3 * width
  double pts_s = 0;          // presentation time, seconds from the first frame of the stream
  int64_t index = 0;         // frame number (see VideoDecoder::next for how it is counted)

  RgbFrame() = default;
  RgbFrame(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 0) {}

  bool empty() const { return width <= 0 || height <= 0 || rgb.empty(); }
  size_t stride_bytes() const { return static_cast<size_t>(width) * 3; }
  uint8_t* pixel(int x, int y) {
    return rgb.data() + static_cast<size_t>(y) * stride_bytes() + static_cast<size_t>(x) * 3;
  }
  const uint8_t* pixel(int x, int y) const {
    return rgb.data() + static_cast<size_t>(y) * stride_bytes() + static_cast<size_t>(x) * 3;
  }
  void set_pixel(int x, int y, uint8_t r, uint8_t g, uint8_t b) {
    uint8_t* p = pixel(x, y);
    p[0] = r;
    p[1] = g;
    p[2] = b;
  }
};

// How a picture is fitted to a target size whose aspect ratio differs from its own.
enum class ResizeMode {
  unknown = 0,
  stretch,      // scale each axis independently; aspect ratio changes
  center_crop,  // scale the short side to fit, crop the long side symmetrically; target aspect kept, nothing
                // padded
  fit_pad,      // scale the long side to fit, pad the rest with black symmetrically; nothing cropped
};

const char* to_string(ResizeMode mode);
std::optional<ResizeMode> resize_mode_from_string(std::string_view name);

// Peak signal-to-noise ratio over all RGB samples, in dB (peak 255). Identical frames give +infinity.
// Throws Error(invalid_argument) when the sizes differ or a frame has no pixels.
[[nodiscard]] double psnr(const RgbFrame& a, const RgbFrame& b);

// Mean absolute difference per RGB sample (0..255); same preconditions as psnr.
[[nodiscard]] double mean_abs_diff(const RgbFrame& a, const RgbFrame& b);

}  // namespace mugv
