#include "media/decoder.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "media/av_util.h"
#include "media/probe_detail.h"
#include "media/scale.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mugv {

const char* to_string(PixelOutput output) {
  switch (output) {
    case PixelOutput::rgb24:
      return "rgb24";
    case PixelOutput::none:
      return "none";
    case PixelOutput::unknown:
      break;
  }
  return "unknown";
}

std::optional<PixelOutput> pixel_output_from_string(std::string_view name) {
  for (PixelOutput o : {PixelOutput::unknown, PixelOutput::rgb24, PixelOutput::none})
    if (name == to_string(o)) return o;
  return std::nullopt;
}

namespace {
// Rounding of time-base ticks to double never exceeds this; frame durations are orders of magnitude larger.
constexpr double kTimeEpsilonS = 1e-4;
// A codec that keeps failing without consuming input is treated as finished rather than spun on forever.
constexpr int kMaxConsecutiveErrors = 64;
}  // namespace

struct VideoDecoder::Impl {
  fs::path path;
  DecodeOptions options;
  MediaInfo info;
  av::InputPtr format;
  av::CodecPtr codec;
  int stream = -1;
  AVRational time_base{1, 1};
  int64_t start_pts = 0;
  double frame_duration_s = 0.04;
  av::PacketPtr packet = av::make_packet();
  av::FramePtr decoded = av::make_frame();
  av::FramePtr pending = av::make_frame();  // decoded, not yet returned
  bool has_pending = false;
  double pending_pts_s = 0;
  av::FramePtr held = av::make_frame();  // fps resampling: last source frame with pts <= the output time
  bool has_held = false;
  double held_pts_s = 0;
  double out_start_s = 0;
  int64_t out_k = 0;
  double last_pts_s = -1;
  double last_end_s = 0;
  bool demux_eof = false;
  bool codec_eof = false;
  bool seeked = false;
  int64_t sequential_index = 0;
  media_detail::RgbConverter converter;
  DecodeStats stats;
  int64_t error_lost = 0;  // frames known lost from codec errors
  int64_t packets_read = 0, frames_received = 0;
  int64_t base_packets = 0, base_frames = 0;  // counters at the last seek, when in-flight frames were flushed

  Impl(const fs::path& p, DecodeOptions o) : path(p), options(o) {
    if (options.fps < 0 || options.threads < 0 || options.width < 0 || options.height < 0)
      throw Error(ErrorCode::invalid_argument, path.string(), "decode options must not be negative");
    if (options.resize == ResizeMode::unknown) options.resize = ResizeMode::center_crop;
    if (options.output == PixelOutput::unknown) options.output = PixelOutput::rgb24;
    format = av::open_input(path);
    stream = av::find_video_stream(format.get(), path);
    info = media_detail::describe_headers(format.get(), stream, path);
    for (unsigned i = 0; i < format->nb_streams; ++i)
      if (static_cast<int>(i) != stream) format->streams[i]->discard = AVDISCARD_ALL;
    const AVStream* st = format->streams[stream];
    time_base = st->time_base;
    start_pts = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    const double rate = info.nominal_fps > 0 ? info.nominal_fps : info.fps;
    if (rate > 0) frame_duration_s = 1.0 / rate;

    const AVCodec* decoder = avcodec_find_decoder(st->codecpar->codec_id);
    if (!decoder)
      throw Error(ErrorCode::unsupported, path.string(), cat("no decoder for codec ", info.video_codec));
    codec.reset(avcodec_alloc_context3(decoder));
    if (!codec) throw Error(ErrorCode::out_of_memory, path.string(), "cannot allocate a decoder");
    int rc = avcodec_parameters_to_context(codec.get(), st->codecpar);
    if (rc < 0)
      throw Error(ErrorCode::unsupported, path.string(), cat("decoder setup failed: ", av::error_text(rc)));
    codec->pkt_timebase = st->time_base;
    codec->thread_count = std::max(1, options.threads);
    codec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    rc = avcodec_open2(codec.get(), decoder, nullptr);
    if (rc < 0)
      throw Error(ErrorCode::unsupported, path.string(),
                  cat("cannot open the ", info.video_codec, " decoder: ", av::error_text(rc)));
  }

  void note(const std::string& problem) {
    if (!stats.first_error.empty()) return;
    stats.first_error = problem;
    log_warning(
        cat(path.string(), ": ", problem, " (decoding continues; losses are counted in the decode stats)"));
  }

  double pts_seconds(const AVFrame* f) {
    int64_t ts = f->best_effort_timestamp != AV_NOPTS_VALUE ? f->best_effort_timestamp : f->pts;
    if (ts == AV_NOPTS_VALUE) return last_pts_s < 0 ? 0 : last_pts_s + frame_duration_s;
    return av::to_seconds(ts - start_pts, time_base);
  }

  // At the end of the stream every packet read should have become a frame; the difference is loss the
  // codec did not report as an error (frames it dropped, or the file ending before its index does).
  void account_end_of_stream() {
    int64_t missing = (packets_read - base_packets) - (frames_received - base_frames);
    const int64_t indexed = format->streams[stream]->nb_frames;
    if (!seeked && indexed > packets_read) {
      missing += indexed - packets_read;
      note(cat("file ends after ", packets_read, " of ", indexed, " indexed frames (truncated?)"));
    }
    stats.frames_lost = std::max(error_lost, missing);
  }

  // Decodes the next source frame into `out`; false at the end of the stream.
  bool decode_one(AVFrame* out, double& pts_s) {
    int consecutive_errors = 0;
    while (!codec_eof) {
      int rc = avcodec_receive_frame(codec.get(), out);
      if (rc == 0) {
        ++stats.frames_decoded;
        ++frames_received;
        pts_s = pts_seconds(out);
        if (out->decode_error_flags || (out->flags & AV_FRAME_FLAG_CORRUPT)) {
          ++stats.frames_damaged;
          note(cat("damaged frame at ", pts_s, " s (concealed by the decoder)"));
        }
        last_pts_s = pts_s;
        double duration_s =
            out->pkt_duration > 0 ? av::to_seconds(out->pkt_duration, time_base) : frame_duration_s;
        last_end_s = std::max(last_end_s, pts_s + duration_s);
        return true;
      }
      if (rc == AVERROR_EOF) {
        codec_eof = true;
        account_end_of_stream();
        break;
      }
      if (rc != AVERROR(EAGAIN)) {
        ++error_lost;
        stats.frames_lost = std::max(stats.frames_lost, error_lost);
        note(cat("decode error: ", av::error_text(rc)));
        if (++consecutive_errors > kMaxConsecutiveErrors) {
          codec_eof = true;
          account_end_of_stream();
          break;
        }
        continue;
      }
      feed_packet(consecutive_errors);
    }
    return false;
  }

  void feed_packet(int& consecutive_errors) {
    if (demux_eof) {
      // Draining already requested; a codec asking for more input here is done.
      codec_eof = true;
      account_end_of_stream();
      return;
    }
    int rc = av_read_frame(format.get(), packet.get());
    if (rc < 0) {
      if (rc != AVERROR_EOF && rc != AVERROR(EAGAIN)) {
        ++stats.packets_corrupt;
        note(cat("read error: ", av::error_text(rc)));
      }
      if (rc == AVERROR(EAGAIN)) return;
      demux_eof = true;
      avcodec_send_packet(codec.get(), nullptr);
      return;
    }
    if (packet->stream_index != stream) {
      av_packet_unref(packet.get());
      return;
    }
    ++packets_read;
    rc = avcodec_send_packet(codec.get(), packet.get());
    av_packet_unref(packet.get());
    if (rc < 0 && rc != AVERROR(EAGAIN)) {
      ++stats.packets_corrupt;
      note(cat("corrupt packet: ", av::error_text(rc)));
      ++consecutive_errors;
    }
  }

  RgbFrame to_rgb(const AVFrame* f, double pts_s, int64_t index) {
    RgbFrame out;
    out.pts_s = pts_s;
    out.index = index;
    if (options.output == PixelOutput::none) {
      out.width = f->width;
      out.height = f->height;
      return out;
    }
    converter.convert(media_detail::view_of(*f), options.width, options.height, options.resize, out);
    return out;
  }

  std::optional<RgbFrame> next_native() {
    double pts_s = 0;
    AVFrame* f = decoded.get();
    if (has_pending) {
      av_frame_unref(decoded.get());
      av_frame_move_ref(decoded.get(), pending.get());
      pts_s = pending_pts_s;
      has_pending = false;
    } else {
      av_frame_unref(decoded.get());
      if (!decode_one(f, pts_s)) return std::nullopt;
    }
    int64_t index = seeked ? std::llround(pts_s / frame_duration_s) : sequential_index;
    ++sequential_index;
    return to_rgb(f, pts_s, index);
  }

  std::optional<RgbFrame> next_resampled() {
    const double t = out_start_s + static_cast<double>(out_k) / options.fps;
    while (true) {
      if (!has_pending) {
        av_frame_unref(pending.get());
        has_pending = decode_one(pending.get(), pending_pts_s);
        if (!has_pending) {
          if (!has_held || t >= last_end_s - kTimeEpsilonS) return std::nullopt;
          break;
        }
      }
      if (pending_pts_s <= t + kTimeEpsilonS || !has_held) {
        // The first frame after a start or seek stands in for earlier output times too.
        av_frame_unref(held.get());
        av_frame_move_ref(held.get(), pending.get());
        held_pts_s = pending_pts_s;
        has_held = true;
        has_pending = false;
        continue;
      }
      break;
    }
    RgbFrame out = to_rgb(held.get(), t, out_k);
    ++out_k;
    return out;
  }

  bool seek(double t_s) {
    t_s = std::max(0.0, t_s);
    has_pending = has_held = false;
    av_frame_unref(pending.get());
    av_frame_unref(held.get());
    out_start_s = t_s;
    out_k = 0;
    const int64_t target = start_pts + static_cast<int64_t>(std::llround(t_s / av_q2d(time_base)));
    int rc = avformat_seek_file(format.get(), stream, std::numeric_limits<int64_t>::min(), target, target, 0);
    if (rc < 0) rc = av_seek_frame(format.get(), stream, target, AVSEEK_FLAG_BACKWARD);
    if (rc < 0) {
      note(cat("cannot seek to ", t_s, " s: ", av::error_text(rc)));
      return false;
    }
    avcodec_flush_buffers(codec.get());
    demux_eof = codec_eof = false;
    seeked = true;
    base_packets = packets_read;
    base_frames = frames_received;
    last_end_s = 0;
    const double threshold = t_s - frame_duration_s / 2;
    double pts_s = 0;
    while (true) {
      av_frame_unref(pending.get());
      if (!decode_one(pending.get(), pts_s)) return false;
      if (pts_s >= threshold) break;
    }
    has_pending = true;
    pending_pts_s = pts_s;
    return true;
  }
};

VideoDecoder::VideoDecoder(const fs::path& path, DecodeOptions options)
    : impl_(std::make_unique<Impl>(path, options)) {}
VideoDecoder::~VideoDecoder() = default;
VideoDecoder::VideoDecoder(VideoDecoder&&) noexcept = default;
VideoDecoder& VideoDecoder::operator=(VideoDecoder&&) noexcept = default;

bool VideoDecoder::seek(double t_s) {
  return impl_->seek(t_s);
}

std::optional<RgbFrame> VideoDecoder::next() {
  return impl_->options.fps > 0 ? impl_->next_resampled() : impl_->next_native();
}

const MediaInfo& VideoDecoder::info() const {
  return impl_->info;
}
const DecodeOptions& VideoDecoder::options() const {
  return impl_->options;
}
DecodeStats VideoDecoder::stats() const {
  return impl_->stats;
}

std::vector<RgbFrame> decode_range(const fs::path& path, double start_s, double end_s,
                                   const DecodeOptions& options, const CancelToken* cancel) {
  VideoDecoder decoder(path, options);
  std::vector<RgbFrame> frames;
  if (start_s > 0 && !decoder.seek(start_s)) return frames;
  while (true) {
    if (cancel) cancel->throw_if_cancelled(path.string());
    std::optional<RgbFrame> frame = decoder.next();
    if (!frame || (end_s > 0 && frame->pts_s >= end_s - kTimeEpsilonS)) break;
    frames.push_back(std::move(*frame));
  }
  return frames;
}

}  // namespace mugv
