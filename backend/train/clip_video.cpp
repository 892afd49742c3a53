#include "train/clip_video.h"

#include "core/error.h"
#include "core/strings.h"
#include "media/decoder.h"

#include <cstring>

namespace mugv {

torch::Tensor decode_clip_video(const std::filesystem::path& path, double start_s, int64_t frames,
                                int64_t width, int64_t height, double fps) {
  DecodeOptions options;
  options.width = static_cast<int>(width);
  options.height = static_cast<int>(height);
  options.fps = fps;
  VideoDecoder decoder(path, options);
  if (start_s > 0 && !decoder.seek(start_s))
    throw Error(ErrorCode::invalid_argument, path.string(), cat("no frame at or after ", start_s, " s"));
  auto video = torch::empty({frames, height, width, 3}, torch::kUInt8);
  int64_t got = 0;
  while (got < frames) {
    auto frame = decoder.next();
    if (!frame) break;
    if (frame->width != width || frame->height != height || frame->rgb.empty())
      throw Error(ErrorCode::internal, path.string(), "decoder returned a frame of the wrong size");
    std::memcpy(video[got].data_ptr(), frame->rgb.data(), frame->rgb.size());
    ++got;
  }
  if (got * 2 < frames || got == 0)
    throw Error(ErrorCode::invalid_argument, path.string(),
                cat("@ ", start_s, "s: ", got, " frames, ", frames, " needed"));
  for (int64_t i = got; i < frames; ++i) video[i].copy_(video[got - 1]);
  return video.permute({3, 0, 1, 2}).to(torch::kFloat32).div_(127.5).sub_(1.0).contiguous();
}

}  // namespace mugv
