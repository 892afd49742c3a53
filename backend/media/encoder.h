#pragma once
// Writing RgbFrame sequences as mp4 (H.264), webm (VP9), gif (palette based) or a PNG sequence, with the
// metadata a user wants kept (title, comment, prompt, seed, model).
//
// VideoEncoder is move-only and not thread-safe. Output is atomic: frames go to a temporary file (or
// directory) beside the destination, and finish() renames it into place; an encoder destroyed before
// finish() removes its temporary output, so a half-written file never appears under the final name.
// Errors (mugv::Error naming the path): io (cannot create/write the output), invalid_argument (bad options,
// a frame of the wrong size), unsupported (an encoder missing from this FFmpeg build), conflict (a PNG
// sequence directory that already holds files).
//
// Sizes: H.264/VP9 in yuv420p need even sizes; an odd width or height is padded up to the next even value
// by repeating the last column/row, so no picture content is lost (the file is then 1 px wider/taller).
//
// Metadata: mp4 keeps title/comment as standard atoms and other keys as mdta tags (use_metadata_tags);
// webm as Matroska tags; gif as a Comment Extension holding the metadata as a JSON object; png_sequence in
// metadata.json. probe() reads all three containers back into MediaInfo::metadata.

#include "media/frame.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

enum class ContainerFormat { unknown = 0, mp4, webm, gif, png_sequence };

const char* to_string(ContainerFormat format);
std::optional<ContainerFormat> container_format_from_string(std::string_view name);
// From the extension (.mp4/.m4v/.mov, .webm/.mkv, .gif); an existing directory, a path ending in '/', a path
// without extension or a name with a "%05d"-style pattern means png_sequence. nullopt otherwise.
std::optional<ContainerFormat> format_from_path(const fs::path& path);

struct EncodeOptions {
  ContainerFormat format = ContainerFormat::unknown;  // unknown: derived from the path
  double fps = 8;
  int crf = 17;                                 // mp4 0..51, webm 0..63
  std::string speed_preset = "medium";          // x264 names (ultrafast .. veryslow); mapped to VP9 cpu-used
  int threads = 0;                              // encoder threads; 0 = FFmpeg's choice
  std::map<std::string, std::string> metadata;  // title, comment, prompt, seed, model, ...
};

class VideoEncoder {
 public:
  VideoEncoder();
  ~VideoEncoder();
  VideoEncoder(VideoEncoder&&) noexcept;
  VideoEncoder& operator=(VideoEncoder&&) noexcept;
  VideoEncoder(const VideoEncoder&) = delete;
  VideoEncoder& operator=(const VideoEncoder&) = delete;

  // Starts an output of width x height frames. A png_sequence path is a directory (frames are named
  // frame_00001.png ...) or a file pattern such as "out/frame_%05d.png".
  void open(const fs::path& path, int width, int height, const EncodeOptions& options);
  // Appends one frame; its size must equal the size given to open(). Its pts_s is ignored: frames are
  // spaced 1/fps apart. gif buffers frames until finish() (the palette needs them all).
  void write(const RgbFrame& frame);
  // Flushes, writes the trailer and moves the output into place. The encoder is closed afterwards.
  void finish();

  bool is_open() const;
  int64_t frames_written() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Encodes `frames` (all the size of the first) to `path`. Throws Error(invalid_argument) for an empty list.
void encode_video(const fs::path& path, const std::vector<RgbFrame>& frames, const EncodeOptions& options);

// The FFmpeg encoder each format is written with (libx264, libvpx-vp9, gif, png) and whether the FFmpeg this
// build runs with has it: a missing one makes every export to that format fail.
struct EncoderSupport {
  ContainerFormat format = ContainerFormat::unknown;
  std::string encoder;
  bool available = false;
};
[[nodiscard]] std::vector<EncoderSupport> encoder_support();
// The versions of the FFmpeg libraries this process runs with: "libavcodec 59.37.100, libavformat ...".
[[nodiscard]] std::string ffmpeg_library_versions();

}  // namespace mugv
