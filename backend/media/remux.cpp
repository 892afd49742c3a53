#include "media/remux.h"

#include "core/error.h"
#include "core/strings.h"
#include "media/av_util.h"

extern "C" {
#include <libavformat/avformat.h>
}

#include <cmath>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;
using namespace av;

std::optional<int64_t> remux_range(const fs::path& input, double start_s, double end_s,
                                   const fs::path& output) {
  InputPtr in = open_input(input);
  const int index = find_video_stream(in.get(), input);
  AVStream* stream = in->streams[index];
  const AVRational tb = stream->time_base;
  const double origin = stream->start_time != AV_NOPTS_VALUE ? to_seconds(stream->start_time, tb) : 0.0;
  AVRational rate = stream->avg_frame_rate.num > 0 ? stream->avg_frame_rate : stream->r_frame_rate;
  const double half_frame = rate.num > 0 ? 0.5 * av_q2d(av_inv_q(rate)) : 0.02;

  int64_t seek_ts = static_cast<int64_t>(std::llround((start_s + origin) / av_q2d(tb)));
  if (av_seek_frame(in.get(), index, seek_ts, AVSEEK_FLAG_BACKWARD) < 0) return std::nullopt;

  // Gather the range's packets first: whether a stream copy is possible is only known at its end.
  std::vector<PacketPtr> packets;
  bool started = false, ended_on_keyframe = false, reached_eof = true, past_end = false;
  while (true) {
    PacketPtr pkt = make_packet();
    if (av_read_frame(in.get(), pkt.get()) < 0) break;
    if (pkt->stream_index != index) continue;
    int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    double t = to_seconds(ts, tb) - origin;
    bool key = pkt->flags & AV_PKT_FLAG_KEY;
    if (!started) {
      if (t < start_s - half_frame) continue;  // before the range (seek lands on an earlier keyframe)
      if (!key || std::fabs(t - start_s) > half_frame) return std::nullopt;
      started = true;
    } else if (t >= end_s - half_frame) {
      // The range may end only where a keyframe starts the rest (or at the end of the stream).
      if (key) {
        ended_on_keyframe = std::fabs(t - end_s) <= half_frame;
        reached_eof = false;
        break;
      }
      past_end = true;
      continue;
    }
    packets.push_back(std::move(pkt));
  }
  if (!started || packets.empty() || !(ended_on_keyframe || (reached_eof && !past_end))) return std::nullopt;

  fs::path tmp =
      output.parent_path() / ("." + output.filename().string() + ".part" + output.extension().string());
  struct RemoveUnlessMoved {  // a failed write leaves nothing behind
    const fs::path& path;
    bool moved = false;
    ~RemoveUnlessMoved() {
      std::error_code ec;
      if (!moved) fs::remove(path, ec);
    }
  } guard{tmp};
  AVFormatContext* raw = nullptr;
  if (avformat_alloc_output_context2(&raw, nullptr, nullptr, tmp.c_str()) < 0 || !raw)
    throw Error(ErrorCode::unsupported, output.string(), "no container for this file extension");
  OutputPtr out(raw);
  AVStream* os = avformat_new_stream(out.get(), nullptr);
  if (!os || avcodec_parameters_copy(os->codecpar, stream->codecpar) < 0)
    throw Error(ErrorCode::out_of_memory, output.string(), "cannot create the output stream");
  os->codecpar->codec_tag = 0;
  os->time_base = tb;
  if (!(out->oformat->flags & AVFMT_NOFILE) && avio_open(&out->pb, tmp.c_str(), AVIO_FLAG_WRITE) < 0)
    throw Error(ErrorCode::io, output.string(), "cannot create the output file");
  if (int rc = avformat_write_header(out.get(), nullptr); rc < 0)
    throw Error(ErrorCode::io, output.string(), "cannot write the header: " + error_text(rc));
  const int64_t first_dts =
      packets.front()->dts != AV_NOPTS_VALUE ? packets.front()->dts : packets.front()->pts;
  int64_t copied = 0;
  for (auto& pkt : packets) {
    if (pkt->pts != AV_NOPTS_VALUE) pkt->pts -= first_dts;
    if (pkt->dts != AV_NOPTS_VALUE) pkt->dts -= first_dts;
    pkt->stream_index = 0;
    av_packet_rescale_ts(pkt.get(), tb, os->time_base);
    pkt->pos = -1;
    if (int rc = av_interleaved_write_frame(out.get(), pkt.get()); rc < 0)
      throw Error(ErrorCode::io, output.string(), "cannot write a packet: " + error_text(rc));
    ++copied;
  }
  if (int rc = av_write_trailer(out.get()); rc < 0)
    throw Error(ErrorCode::io, output.string(), "cannot finish the file: " + error_text(rc));
  out.reset();
  std::error_code ec;
  fs::rename(tmp, output, ec);
  if (ec) throw Error(ErrorCode::io, output.string(), "cannot move the file into place: " + ec.message());
  guard.moved = true;
  return copied;
}

}  // namespace mugv
