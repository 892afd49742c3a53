#pragma once
// Sequential and exact-seek video decoding to RgbFrame, with optional resize and frame-rate resampling.
//
// VideoDecoder owns its FFmpeg objects; it is move-only and not thread-safe (use one per thread; separate
// decoders on the same file are independent). Opening throws the same errors as probe() (see probe.h).
// Damage inside the stream never throws: the decoder continues with the next packet and counts what was
// lost in stats() (and logs one warning per decoder), so a user sees "decoded 240, lost 10" instead of
// a crash or a silently shorter clip.
//
// Times: RgbFrame::pts_s is seconds from the stream's first frame (stream start_time subtracted), taken
// from best_effort_timestamp, so variable-frame-rate files keep their real gaps.
// RgbFrame::index: without fps resampling, the number of the frame in decode order counted from 0 at the
// start of the stream; after seek() it is estimated as round(pts_s * nominal_fps). With resampling, it is the
// output frame number k (pts_s = start + k / fps, start = 0 or the last seek target).

#include "core/progress.h"
#include "media/frame.h"
#include "media/probe.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

enum class PixelOutput {
  unknown = 0,
  rgb24,  // convert every frame to RgbFrame pixels
  none,   // decode only: frames carry size and time but no pixels (benchmarks, counting)
};

const char* to_string(PixelOutput output);
std::optional<PixelOutput> pixel_output_from_string(std::string_view name);

struct DecodeOptions {
  int width = 0;  // 0 = native; one side 0 keeps the aspect ratio
  int height = 0;
  ResizeMode resize = ResizeMode::center_crop;
  double fps = 0;   // 0 = native; else output frame k is the last source frame with pts <= start + k / fps
  int threads = 1;  // decoder threads (frame + slice threading when > 1)
  PixelOutput output = PixelOutput::rgb24;
};

struct DecodeStats {
  int64_t frames_decoded = 0;   // frames that came out of the codec (including ones skipped by seek or fps)
  int64_t packets_corrupt = 0;  // packets the codec rejected, or unreadable parts of the file
  int64_t frames_lost = 0;      // frames the file should have had that could not be decoded
  int64_t frames_damaged = 0;   // frames delivered but flagged by the codec as concealed/corrupt
  std::string first_error;      // the first problem, in words; empty when none
};

class VideoDecoder {
 public:
  explicit VideoDecoder(const fs::path& path, DecodeOptions options = {});
  ~VideoDecoder();
  VideoDecoder(VideoDecoder&&) noexcept;
  VideoDecoder& operator=(VideoDecoder&&) noexcept;
  VideoDecoder(const VideoDecoder&) = delete;
  VideoDecoder& operator=(const VideoDecoder&) = delete;

  // Frame-accurate seek: the next frame returned is the first whose pts >= t_s - half a frame. Returns
  // false when no frame at or after t_s exists (next() then returns nullopt).
  [[nodiscard]] bool seek(double t_s);
  // The next frame, or nullopt at the end of the stream.
  [[nodiscard]] std::optional<RgbFrame> next();

  // Header-level information (ProbeDepth::headers: frame_count is the container's own count).
  const MediaInfo& info() const;
  const DecodeOptions& options() const;
  DecodeStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes frames with start_s <= pts_s < end_s (end_s <= 0: to the end). Checks `cancel` once per frame
// (Error(cancelled)). Damage is reported through the log, as with VideoDecoder.
[[nodiscard]] std::vector<RgbFrame> decode_range(const fs::path& path, double start_s, double end_s,
                                                 const DecodeOptions& options = {},
                                                 const CancelToken* cancel = nullptr);

}  // namespace mugv
