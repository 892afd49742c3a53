#pragma once
// Internal to backend/media (not for other layers): unique_ptr owners for FFmpeg objects, FFmpeg error
// text, and opening an input with errors mapped to mugv::Error naming the file.
// Every FFmpeg object in backend/media lives in one of these owners, so early returns and exceptions
// free them. FFmpeg's own log output is routed to mugv::log at debug level (installed once, process-wide),
// because every failure that matters is reported through Error or DecodeStats instead.

#include <filesystem>
#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

namespace mugv::av {

namespace fs = std::filesystem;

struct InputDeleter {
  void operator()(AVFormatContext* c) const noexcept { avformat_close_input(&c); }
};
struct OutputDeleter {
  void operator()(AVFormatContext* c) const noexcept;
};
struct CodecDeleter {
  void operator()(AVCodecContext* c) const noexcept { avcodec_free_context(&c); }
};
struct FrameDeleter {
  void operator()(AVFrame* f) const noexcept { av_frame_free(&f); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const noexcept { av_packet_free(&p); }
};
struct SwsDeleter {
  void operator()(SwsContext* s) const noexcept { sws_freeContext(s); }
};
struct FilterGraphDeleter {
  void operator()(AVFilterGraph* g) const noexcept { avfilter_graph_free(&g); }
};

using InputPtr = std::unique_ptr<AVFormatContext, InputDeleter>;
using OutputPtr = std::unique_ptr<AVFormatContext, OutputDeleter>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecDeleter>;
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
using SwsPtr = std::unique_ptr<SwsContext, SwsDeleter>;
using FilterGraphPtr = std::unique_ptr<AVFilterGraph, FilterGraphDeleter>;

// Allocating constructors that throw Error(out_of_memory) instead of returning null.
FramePtr make_frame();
PacketPtr make_packet();

// "Invalid data found when processing input" for an AVERROR code.
std::string error_text(int averror);

// Routes FFmpeg's log to mugv::log; idempotent and thread-safe.
void install_log_bridge();

// Opens `path` for demuxing and reads stream info. Errors name the file:
// not_found (missing), io (a directory, unreadable), format ("not a <noun> (reason)": empty, unrecognised).
InputPtr open_input(const fs::path& path, const char* noun = "video file");

// The main video stream (not cover art). Throws Error(format, "no video stream") naming `path`.
int find_video_stream(AVFormatContext* ctx, const fs::path& path);

inline double to_seconds(int64_t ts, AVRational time_base) {
  return static_cast<double>(ts) * av_q2d(time_base);
}

}  // namespace mugv::av
