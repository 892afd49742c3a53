#include "media/image.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/av_util.h"
#include "media/decoder.h"
#include "media/probe.h"
#include "media/scale.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

namespace mugv {
namespace {

AVCodecID sniff_image_codec(const std::string& bytes) {
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return AV_CODEC_ID_PNG;
  if (bytes.size() >= 3 && bytes.compare(0, 3, "\xFF\xD8\xFF") == 0) return AV_CODEC_ID_MJPEG;
  if (bytes.size() >= 14 && bytes.compare(0, 2, "BM") == 0) return AV_CODEC_ID_BMP;
  return AV_CODEC_ID_NONE;
}

av::CodecPtr open_image_codec(const AVCodec* codec, const std::string& subject) {
  if (!codec) throw Error(ErrorCode::unsupported, subject, "this FFmpeg lacks the image codec");
  av::CodecPtr ctx(avcodec_alloc_context3(codec));
  if (!ctx) throw Error(ErrorCode::out_of_memory, subject, "cannot allocate an image codec");
  ctx->thread_count = 1;
  return ctx;
}

void blit(RgbFrame& dst, const RgbFrame& src, int x0, int y0) {
  for (int y = 0; y < src.height && y0 + y < dst.height; ++y) {
    const int w = std::min(src.width, dst.width - x0);
    if (w <= 0) return;
    std::memcpy(dst.pixel(x0, y0 + y), src.pixel(0, y), static_cast<size_t>(w) * 3);
  }
}

}  // namespace

RgbFrame read_image(const fs::path& path) {
  av::install_log_bridge();
  const std::string name = path.string();
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw Error(ErrorCode::not_found, name, "no such file");
  if (fs::is_directory(status)) throw Error(ErrorCode::io, name, "is a directory, expected an image file");
  if (::access(path.c_str(), R_OK) != 0)
    throw Error(ErrorCode::io, name, cat("cannot open for reading: ", std::strerror(errno)));
  const std::string bytes = read_text_file(path);
  if (bytes.empty()) throw Error(ErrorCode::format, name, "not an image (empty file)");
  const AVCodecID id = sniff_image_codec(bytes);
  if (id == AV_CODEC_ID_NONE)
    throw Error(ErrorCode::format, name, "not a supported image (expected PNG, JPEG or BMP)");

  av::CodecPtr ctx = open_image_codec(avcodec_find_decoder(id), name);
  int rc = avcodec_open2(ctx.get(), ctx->codec, nullptr);
  if (rc < 0)
    throw Error(ErrorCode::unsupported, name, cat("cannot open the image decoder: ", av::error_text(rc)));
  av::PacketPtr packet = av::make_packet();
  if (av_new_packet(packet.get(), static_cast<int>(bytes.size())) < 0)
    throw Error(ErrorCode::out_of_memory, name, "cannot allocate the image buffer");
  std::memcpy(packet->data, bytes.data(), bytes.size());
  av::FramePtr frame = av::make_frame();
  rc = avcodec_send_packet(ctx.get(), packet.get());
  if (rc >= 0) rc = avcodec_send_packet(ctx.get(), nullptr);
  if (rc >= 0) rc = avcodec_receive_frame(ctx.get(), frame.get());
  if (rc < 0) throw Error(ErrorCode::corrupt, name, cat("the image does not decode: ", av::error_text(rc)));
  if (frame->width <= 0 || frame->height <= 0 || frame->width > kMaxVideoSide ||
      frame->height > kMaxVideoSide)
    throw Error(ErrorCode::format, name, cat("implausible image size ", frame->width, "x", frame->height));
  RgbFrame out;
  media_detail::RgbConverter converter;
  converter.convert(media_detail::view_of(*frame), 0, 0, ResizeMode::stretch, out);
  return out;
}

std::string encode_png(const RgbFrame& frame) {
  av::install_log_bridge();
  if (frame.empty() || frame.rgb.size() != static_cast<size_t>(frame.width) * frame.height * 3)
    throw Error(ErrorCode::invalid_argument, "png", "frame has no pixels or a wrong buffer size");
  av::CodecPtr ctx = open_image_codec(avcodec_find_encoder(AV_CODEC_ID_PNG), "png");
  ctx->width = frame.width;
  ctx->height = frame.height;
  ctx->pix_fmt = AV_PIX_FMT_RGB24;
  ctx->time_base = AVRational{1, 1};
  int rc = avcodec_open2(ctx.get(), ctx->codec, nullptr);
  if (rc < 0)
    throw Error(ErrorCode::internal, "png", cat("cannot open the PNG encoder: ", av::error_text(rc)));
  av::FramePtr f = av::make_frame();
  f->format = AV_PIX_FMT_RGB24;
  f->width = frame.width;
  f->height = frame.height;
  // The encoder only reads; pointing at the caller's pixels avoids a copy.
  f->data[0] = const_cast<uint8_t*>(frame.rgb.data());
  f->linesize[0] = static_cast<int>(frame.stride_bytes());
  av::PacketPtr packet = av::make_packet();
  rc = avcodec_send_frame(ctx.get(), f.get());
  if (rc >= 0) rc = avcodec_send_frame(ctx.get(), nullptr);
  if (rc >= 0) rc = avcodec_receive_packet(ctx.get(), packet.get());
  if (rc < 0) throw Error(ErrorCode::internal, "png", cat("PNG encoding failed: ", av::error_text(rc)));
  return std::string(reinterpret_cast<const char*>(packet->data), static_cast<size_t>(packet->size));
}

void write_png(const fs::path& path, const RgbFrame& frame) {
  const std::string bytes = encode_png(frame);
  write_file_atomic(path, bytes.data(), bytes.size());
}

RgbFrame resize(const RgbFrame& frame, int width, int height, ResizeMode mode) {
  if (frame.empty()) throw Error(ErrorCode::invalid_argument, "resize", "frame has no pixels");
  if (width < 0 || height < 0 || width > kMaxVideoSide || height > kMaxVideoSide)
    throw Error(ErrorCode::invalid_argument, "resize",
                cat("target size ", width, "x", height, " is out of range"));
  RgbFrame out;
  out.pts_s = frame.pts_s;
  out.index = frame.index;
  av::FramePtr source = media_detail::padded_copy(frame, frame.width, frame.height);
  media_detail::RgbConverter converter;
  converter.convert(media_detail::view_of(*source), width, height, mode, out);
  return out;
}

RgbFrame thumbnail(const fs::path& video_path, double t_s, int max_side) {
  if (max_side <= 0 || max_side > kMaxVideoSide)
    throw Error(ErrorCode::invalid_argument, video_path.string(),
                cat("thumbnail size ", max_side, " is out of range"));
  VideoDecoder decoder(video_path);
  const MediaInfo& info = decoder.info();
  const double frame_s = info.fps > 0 ? 1.0 / info.fps : 0.04;
  const double last_s = std::max(0.0, info.duration_s - frame_s);
  std::optional<RgbFrame> frame;
  if (decoder.seek(std::clamp(t_s, 0.0, last_s))) frame = decoder.next();
  if (!frame && decoder.seek(0)) frame = decoder.next();
  if (!frame) throw Error(ErrorCode::corrupt, video_path.string(), "no decodable frame for a thumbnail");
  const bool landscape = frame->width >= frame->height;
  return resize(*frame, landscape ? max_side : 0, landscape ? 0 : max_side, ResizeMode::stretch);
}

RgbFrame contact_sheet(const std::vector<RgbFrame>& frames, int columns, int tile_width, int tile_height) {
  if (frames.empty()) throw Error(ErrorCode::invalid_argument, "contact sheet", "no frames");
  if (columns <= 0 || tile_width <= 0 || tile_height <= 0)
    throw Error(ErrorCode::invalid_argument, "contact sheet", "columns and tile sizes must be positive");
  const int rows =
      static_cast<int>((frames.size() + static_cast<size_t>(columns) - 1) / static_cast<size_t>(columns));
  const int64_t sheet_w = static_cast<int64_t>(columns) * tile_width;
  const int64_t sheet_h = static_cast<int64_t>(rows) * tile_height;
  if (sheet_w > kMaxVideoSide || sheet_h > kMaxVideoSide)
    throw Error(ErrorCode::invalid_argument, "contact sheet",
                cat("sheet ", sheet_w, "x", sheet_h, " is too large"));
  RgbFrame sheet(static_cast<int>(sheet_w), static_cast<int>(sheet_h));
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].empty()) continue;
    RgbFrame tile = resize(frames[i], tile_width, tile_height, ResizeMode::fit_pad);
    blit(sheet, tile, static_cast<int>(i % static_cast<size_t>(columns)) * tile_width,
         static_cast<int>(i / static_cast<size_t>(columns)) * tile_height);
  }
  return sheet;
}

RgbFrame video_contact_sheet(const fs::path& path, int tiles, int columns, int tile_width) {
  if (tiles <= 0 || columns <= 0 || tile_width <= 0)
    throw Error(ErrorCode::invalid_argument, path.string(), "tiles, columns and tile width must be positive");
  const MediaInfo info = probe(path, ProbeDepth::headers);
  const int tile_height =
      std::max(1, static_cast<int>(std::lround(static_cast<double>(tile_width) * info.height / info.width)));
  DecodeOptions options;
  options.width = tile_width;
  options.height = tile_height;
  options.resize = ResizeMode::stretch;
  VideoDecoder decoder(path, options);
  std::vector<RgbFrame> frames;
  for (int i = 0; i < tiles; ++i) {
    const double t = info.duration_s * (i + 0.5) / tiles;
    std::optional<RgbFrame> frame;
    if (decoder.seek(t)) frame = decoder.next();
    frames.push_back(frame ? std::move(*frame) : RgbFrame(tile_width, tile_height));
  }
  return contact_sheet(frames, columns, tile_width, tile_height);
}

}  // namespace mugv
