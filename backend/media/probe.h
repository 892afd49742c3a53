#pragma once
// Reads what a video file is without decoding pictures: container, codec, size, timing, rotation and
// container metadata. probe() is a pure function of the file; safe to call from any thread.
//
// Errors (mugv::Error, subject = the path): not_found (missing), io (a directory, unreadable),
// format ("not a video file (...)" for empty/unrecognised/text files, "no video stream" for audio-only,
// an implausible frame size), corrupt (the file ends before its own index does: truncated).

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace mugv {

namespace fs = std::filesystem;

// How much of the file probe() reads. `packets` reads every packet of the video stream (no decoding) to
// count frames and detect variable frame rate; `headers` only reads the container header.
enum class ProbeDepth { unknown = 0, headers, packets };

const char* to_string(ProbeDepth depth);
std::optional<ProbeDepth> probe_depth_from_string(std::string_view name);

// Largest width or height accepted (either side); larger values are treated as a damaged header.
inline constexpr int kMaxVideoSide = 16384;

struct MediaInfo {
  fs::path path;
  std::string container;  // demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"
  double duration_s = 0;  // 0 when unknown
  bool has_video = false;
  bool has_audio = false;
  std::string video_codec;  // "h264", "vp9", "gif", ...
  int width = 0;
  int height = 0;
  double fps = 0;                    // average frame rate (avg_frame_rate); 0 when unknown
  double nominal_fps = 0;            // r_frame_rate: the base rate timestamps are multiples of
  bool variable_frame_rate = false;  // valid only with ProbeDepth::packets
  int rotation_deg = 0;              // clockwise rotation a player applies (display matrix), in [0, 360)
  int64_t frame_count = 0;  // packets: video packets scanned; headers: the container's count (0 when absent)
  int64_t bit_rate = 0;     // bits per second of the whole file; 0 when unknown
  double start_time_s = 0;  // pts of the first video frame; decoders report times relative to it
  // Container tags with lower-case keys: title, comment, custom keys (prompt, seed, ...).
  std::map<std::string, std::string> metadata;
  ProbeDepth depth = ProbeDepth::unknown;
};

// Probes `path`. With ProbeDepth::packets (the default) the whole video stream is read once.
[[nodiscard]] MediaInfo probe(const fs::path& path, ProbeDepth depth = ProbeDepth::packets);

}  // namespace mugv
