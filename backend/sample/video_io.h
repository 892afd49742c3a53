#pragma once
// Files in and out of the sampler: the I2V conditioning image read and fitted to the request's size, and
// the finished video written with its metadata (FFmpeg, media/). Kept apart from sampler.h so sampling
// itself needs no codec (the compute-only build).
//
// Image fitting (documented choice): an image of a different size is scaled and centre-cropped to the
// target when the two aspect ratios differ by at most 2× (a note is logged); beyond that it is refused,
// because cropping would lose more than half of the picture.

#include "sample/sampler.h"

#include <filesystem>

namespace mugv {

// Reads `path` and fits it to width × height. Errors: not_found (missing), format (not an image),
// invalid_argument (aspect ratio too different), each naming the file.
[[nodiscard]] ConditionImage load_condition_image(const std::filesystem::path& path, int width, int height);

// Writes result.frames to `path` (mp4 / webm / gif / PNG folder, by path) with result.metadata.
void save_video(const std::filesystem::path& path, const SampleResult& result, double fps, int crf = 17);

}  // namespace mugv
