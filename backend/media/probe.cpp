#include "media/probe.h"

#include "core/error.h"
#include "core/strings.h"
#include "media/av_util.h"
#include "media/gif_comment.h"
#include "media/probe_detail.h"

extern "C" {
#include <libavutil/display.h>
}

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace mugv {

const char* to_string(ProbeDepth depth) {
  switch (depth) {
    case ProbeDepth::headers:
      return "headers";
    case ProbeDepth::packets:
      return "packets";
    case ProbeDepth::unknown:
      break;
  }
  return "unknown";
}

std::optional<ProbeDepth> probe_depth_from_string(std::string_view name) {
  for (ProbeDepth d : {ProbeDepth::unknown, ProbeDepth::headers, ProbeDepth::packets})
    if (name == to_string(d)) return d;
  return std::nullopt;
}

namespace media_detail {
namespace {

int rotation_of(const AVStream* st) {
  size_t size = 0;
  const uint8_t* matrix = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
  if (!matrix || size < 9 * sizeof(int32_t)) return 0;
  double ccw = av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
  if (std::isnan(ccw)) return 0;
  int cw = static_cast<int>(std::lround(-ccw)) % 360;
  return cw < 0 ? cw + 360 : cw;
}

std::string read_head(const fs::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(max_bytes, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(max_bytes));
  bytes.resize(static_cast<size_t>(in.gcount()));
  return bytes;
}

}  // namespace

MediaInfo describe_headers(AVFormatContext* ctx, int video_stream, const fs::path& path) {
  const AVStream* st = ctx->streams[video_stream];
  const AVCodecParameters* par = st->codecpar;
  MediaInfo info;
  info.path = path;
  info.container = ctx->iformat ? ctx->iformat->name : "";
  info.has_video = true;
  for (unsigned i = 0; i < ctx->nb_streams; ++i)
    info.has_audio = info.has_audio || ctx->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO;
  info.video_codec = avcodec_get_name(par->codec_id);
  info.width = par->width;
  info.height = par->height;
  if (info.width <= 0 || info.height <= 0 || info.width > kMaxVideoSide || info.height > kMaxVideoSide)
    throw Error(ErrorCode::format, path.string(),
                cat("implausible frame size ", info.width, "x", info.height, " (each side must be 1..",
                    kMaxVideoSide, ")"));
  if (st->avg_frame_rate.num > 0 && st->avg_frame_rate.den > 0) info.fps = av_q2d(st->avg_frame_rate);
  if (st->r_frame_rate.num > 0 && st->r_frame_rate.den > 0) info.nominal_fps = av_q2d(st->r_frame_rate);
  if (info.fps <= 0) info.fps = info.nominal_fps;
  if (ctx->duration > 0 && ctx->duration != AV_NOPTS_VALUE)
    info.duration_s = static_cast<double>(ctx->duration) / AV_TIME_BASE;
  else if (st->duration > 0 && st->duration != AV_NOPTS_VALUE)
    info.duration_s = av::to_seconds(st->duration, st->time_base);
  if (st->start_time != AV_NOPTS_VALUE) info.start_time_s = av::to_seconds(st->start_time, st->time_base);
  info.rotation_deg = rotation_of(st);
  info.frame_count = st->nb_frames > 0 ? st->nb_frames : 0;
  info.bit_rate = ctx->bit_rate > 0 ? ctx->bit_rate : 0;
  const AVDictionaryEntry* tag = nullptr;
  while ((tag = av_dict_get(ctx->metadata, "", tag, AV_DICT_IGNORE_SUFFIX)))
    info.metadata[to_lower(tag->key)] = tag->value;
  if (info.container == "gif") {
    // A GIF's metadata lives in comment blocks near the start; 1 MiB covers any header we write. The gif
    // demuxer exposes the raw text as "comment"; it is replaced by the keys the comments hold.
    info.metadata.erase("comment");
    for (auto& [key, value] : gif::metadata_from_comments(gif::read_comments(read_head(path, 1 << 20))))
      info.metadata[key] = value;
  }
  info.depth = ProbeDepth::headers;
  return info;
}

}  // namespace media_detail

namespace {

// Reads every packet of the video stream: counts frames, checks the stream is as long as its index says,
// and decides variable frame rate from the spread of presentation-time steps.
void scan_packets(AVFormatContext* ctx, int video_stream, MediaInfo& info) {
  const AVStream* st = ctx->streams[video_stream];
  for (unsigned i = 0; i < ctx->nb_streams; ++i)
    if (static_cast<int>(i) != video_stream) ctx->streams[i]->discard = AVDISCARD_ALL;
  auto pkt = av::make_packet();
  std::vector<int64_t> pts;
  int64_t packets = 0;
  int rc = 0;
  while ((rc = av_read_frame(ctx, pkt.get())) >= 0) {
    if (pkt->stream_index == video_stream) {
      ++packets;
      int64_t t = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
      if (!(pkt->flags & AV_PKT_FLAG_DISCARD) && t != AV_NOPTS_VALUE) pts.push_back(t);
    }
    av_packet_unref(pkt.get());
  }
  const std::string name = info.path.string();
  if (st->nb_frames > 0 && packets < st->nb_frames)
    throw Error(
        ErrorCode::corrupt, name,
        cat("truncated or damaged: the index lists ", st->nb_frames, " video frames but only ", packets,
            " are in the file (", rc == AVERROR_EOF ? "unexpected end of file" : av::error_text(rc), ")"));
  info.frame_count = static_cast<int64_t>(pts.size());
  info.variable_frame_rate = false;
  if (pts.size() >= 3) {
    std::sort(pts.begin(), pts.end());
    std::vector<int64_t> steps;
    steps.reserve(pts.size() - 1);
    for (size_t i = 1; i < pts.size(); ++i) steps.push_back(pts[i] - pts[i - 1]);
    std::vector<int64_t> sorted = steps;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    const double median = static_cast<double>(sorted[sorted.size() / 2]);
    // Timestamps rounded to the time base jitter by a tick; anything beyond 10 % of a frame is a real change.
    const double tolerance = std::max(1.0, 0.1 * median);
    for (int64_t s : steps)
      if (std::abs(static_cast<double>(s) - median) > tolerance) info.variable_frame_rate = true;
  }
  if (info.duration_s <= 0 && !pts.empty())
    info.duration_s = av::to_seconds(pts.back() - pts.front(), st->time_base);
  info.depth = ProbeDepth::packets;
}

}  // namespace

MediaInfo probe(const fs::path& path, ProbeDepth depth) {
  av::InputPtr ctx = av::open_input(path);
  int video_stream = av::find_video_stream(ctx.get(), path);
  MediaInfo info = media_detail::describe_headers(ctx.get(), video_stream, path);
  if (depth == ProbeDepth::packets) scan_packets(ctx.get(), video_stream, info);
  return info;
}

}  // namespace mugv
