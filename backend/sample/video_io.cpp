#include "sample/video_io.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "media/encoder.h"
#include "media/image.h"

#include <algorithm>

namespace mugv {

namespace fs = std::filesystem;

namespace {

// The image as read, after checking that it can be fitted to width x height.
RgbFrame read_fittable_image(const fs::path& path, int width, int height) {
  RgbFrame image = read_image(path);
  const double image_aspect = double(image.width) / image.height, target_aspect = double(width) / height;
  const double mismatch = std::max(image_aspect / target_aspect, target_aspect / image_aspect);
  if (mismatch > 2.0)
    throw Error(ErrorCode::invalid_argument, path.string(),
                cat("image is ", image.width, "x", image.height,
                    "; its aspect ratio is too far from the target ", width, "x", height,
                    " to crop (more than half would be lost); crop it yourself or change --size"));
  return image;
}

}  // namespace

ConditionImage load_condition_image(const fs::path& path, int width, int height) {
  RgbFrame image = read_fittable_image(path, width, height);
  ConditionImage out{path.filename().string(), {}};
  if (image.width == width && image.height == height) {
    out.pixels = std::move(image);
    return out;
  }
  log_info(cat(path.string(), ": ", image.width, "x", image.height, " scaled and centre-cropped to ", width,
               "x", height));
  out.pixels = resize(image, width, height, ResizeMode::center_crop);
  return out;
}

void save_video(const fs::path& path, const SampleResult& result, double fps, int crf) {
  EncodeOptions options;
  options.fps = fps;
  options.crf = crf;
  options.metadata = result.metadata;
  encode_video(path, result.frames, options);
}

}  // namespace mugv
