#include "media/av_util.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace mugv::av {

void OutputDeleter::operator()(AVFormatContext* c) const noexcept {
  if (!c) return;
  if (c->pb && c->oformat && !(c->oformat->flags & AVFMT_NOFILE)) avio_closep(&c->pb);
  avformat_free_context(c);
}

FramePtr make_frame() {
  FramePtr f(av_frame_alloc());
  if (!f) throw Error(ErrorCode::out_of_memory, "ffmpeg", "cannot allocate a frame");
  return f;
}

PacketPtr make_packet() {
  PacketPtr p(av_packet_alloc());
  if (!p) throw Error(ErrorCode::out_of_memory, "ffmpeg", "cannot allocate a packet");
  return p;
}

std::string error_text(int averror) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  if (av_strerror(averror, buf, sizeof buf) < 0) return cat("ffmpeg error ", averror);
  return buf;
}

namespace {

void log_bridge(void* avcl, int level, const char* fmt, va_list args) {
  if (level > AV_LOG_WARNING || level > av_log_get_level()) return;
  char line[1024];
  int print_prefix = 1;
  av_log_format_line2(avcl, level, fmt, args, line, sizeof line, &print_prefix);
  std::string text = trim(line);
  if (!text.empty()) log_debug("ffmpeg: " + text);
}

}  // namespace

void install_log_bridge() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_callback(log_bridge); });
}

InputPtr open_input(const fs::path& path, const char* noun) {
  install_log_bridge();
  const std::string name = path.string();
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw Error(ErrorCode::not_found, name, "no such file");
  if (fs::is_directory(status)) throw Error(ErrorCode::io, name, cat("is a directory, expected a ", noun));
  if (::access(path.c_str(), R_OK) != 0)
    throw Error(ErrorCode::io, name, cat("cannot open for reading: ", std::strerror(errno)));
  if (fs::is_regular_file(status) && fs::file_size(path, ec) == 0)
    throw Error(ErrorCode::format, name, cat("not a ", noun, " (empty file)"));

  AVFormatContext* raw = nullptr;
  // The file: prefix stops FFmpeg from reading "name:rest" as a protocol.
  const std::string url = "file:" + name;
  int rc = avformat_open_input(&raw, url.c_str(), nullptr, nullptr);
  if (rc < 0) {
    if (rc == AVERROR(ENOENT)) throw Error(ErrorCode::not_found, name, "no such file");
    if (rc == AVERROR(EACCES) || rc == AVERROR(EISDIR)) throw Error(ErrorCode::io, name, error_text(rc));
    throw Error(ErrorCode::format, name, cat("not a ", noun, " (", error_text(rc), ")"));
  }
  InputPtr ctx(raw);
  // The tty demuxer claims any .txt file as ANSI art; plain text is never a video here.
  if (ctx->iformat && std::strcmp(ctx->iformat->name, "tty") == 0)
    throw Error(ErrorCode::format, name, cat("not a ", noun, " (text file)"));
  rc = avformat_find_stream_info(ctx.get(), nullptr);
  if (rc < 0) throw Error(ErrorCode::format, name, cat("not a ", noun, " (", error_text(rc), ")"));
  if (ctx->nb_streams == 0) throw Error(ErrorCode::format, name, cat("not a ", noun, " (no streams found)"));
  return ctx;
}

int find_video_stream(AVFormatContext* ctx, const fs::path& path) {
  int best = av_find_best_stream(ctx, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (best >= 0 && !(ctx->streams[best]->disposition & AV_DISPOSITION_ATTACHED_PIC)) return best;
  for (unsigned i = 0; i < ctx->nb_streams; ++i) {
    const AVStream* st = ctx->streams[i];
    if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
      return static_cast<int>(i);
  }
  bool has_audio = false;
  for (unsigned i = 0; i < ctx->nb_streams; ++i)
    has_audio = has_audio || ctx->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO;
  throw Error(ErrorCode::format, path.string(),
              has_audio ? "no video stream (audio only)" : "no video stream");
}

}  // namespace mugv::av
