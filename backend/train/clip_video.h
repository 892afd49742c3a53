#pragma once
// Decoding a clip's pixels for the VAE and the latent encoder (FFmpeg, media/decoder.h). Kept apart from
// the training loop, which needs no video codec (the compute-only build, README).

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>

namespace mugv {

// Video of one clip: decodes `frames` frames from start_s at width×height (centre crop) and `fps`
// (0 = the source rate), as [3, frames, height, width] float in [-1, 1]. A clip shorter than
// `frames` repeats its last frame when at least half of the frames exist; otherwise Error(invalid_argument)
// ("x.mp4 @ 1.00s: 3 frames, 17 needed").
[[nodiscard]] torch::Tensor decode_clip_video(const std::filesystem::path& path, double start_s,
                                              int64_t frames, int64_t width, int64_t height, double fps);

}  // namespace mugv
