#include "media/encoder.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/av_util.h"
#include "media/gif_comment.h"
#include "media/image.h"
#include "media/scale.h"

extern "C" {
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/opt.h>
}

#include <nlohmann/json.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <utility>

namespace mugv {

const char* to_string(ContainerFormat format) {
  switch (format) {
    case ContainerFormat::mp4:
      return "mp4";
    case ContainerFormat::webm:
      return "webm";
    case ContainerFormat::gif:
      return "gif";
    case ContainerFormat::png_sequence:
      return "png_sequence";
    case ContainerFormat::unknown:
      break;
  }
  return "unknown";
}

std::optional<ContainerFormat> container_format_from_string(std::string_view name) {
  for (ContainerFormat f : {ContainerFormat::unknown, ContainerFormat::mp4, ContainerFormat::webm,
                            ContainerFormat::gif, ContainerFormat::png_sequence})
    if (name == to_string(f)) return f;
  return std::nullopt;
}

std::optional<ContainerFormat> format_from_path(const fs::path& path) {
  const std::string text = path.string();
  if (text.find('%') != std::string::npos) return ContainerFormat::png_sequence;
  std::error_code ec;
  if (ends_with(text, "/") || fs::is_directory(path, ec)) return ContainerFormat::png_sequence;
  const std::string ext = to_lower(path.extension().string());
  if (ext == ".mp4" || ext == ".m4v" || ext == ".mov") return ContainerFormat::mp4;
  if (ext == ".webm" || ext == ".mkv") return ContainerFormat::webm;
  if (ext == ".gif") return ContainerFormat::gif;
  if (ext.empty()) return ContainerFormat::png_sequence;
  return std::nullopt;
}

namespace {

// The encoder of each format (png_sequence: one PNG per frame).
const char* video_encoder_name(ContainerFormat format) {
  switch (format) {
    case ContainerFormat::mp4:
      return "libx264";
    case ContainerFormat::webm:
      return "libvpx-vp9";
    case ContainerFormat::gif:
      return "gif";
    case ContainerFormat::png_sequence:
      return "png";
    case ContainerFormat::unknown:
      break;
  }
  return "";
}

// Frames smaller than this on a side are encoded without x264's macroblock tree (VideoEncoder::open_video).
constexpr int kMacroblockTreeMinSide = 128;

constexpr std::array<const char*, 9> kSpeedPresets = {"ultrafast", "superfast", "veryfast", "faster",  "fast",
                                                      "medium",    "slow",      "slower",   "veryslow"};

int speed_index(const std::string& preset, const std::string& subject) {
  for (size_t i = 0; i < kSpeedPresets.size(); ++i)
    if (preset == kSpeedPresets[i]) return static_cast<int>(i);
  throw Error(ErrorCode::invalid_argument, subject,
              cat("unknown speed preset \"", preset,
                  "\" (use ultrafast, veryfast, fast, medium, slow, veryslow...)"));
}

// A temporary file or directory beside the destination; removed unless commit() moved it into place.
class TempOutput {
 public:
  TempOutput() = default;
  TempOutput(const fs::path& final_path, bool directory) : final_(final_path) {
    fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec)
      throw Error(ErrorCode::io, final_path.string(),
                  cat("cannot create directory ", parent.string(), ": ", ec.message()));
    std::string tmpl = (parent / ("." + final_path.filename().string() + ".part-XXXXXX")).string();
    if (directory) {
      if (!::mkdtemp(tmpl.data()))
        throw Error(ErrorCode::io, final_path.string(), cat("cannot write here: ", std::strerror(errno)));
      ::chmod(tmpl.c_str(), 0755);  // mkdtemp makes 0700; outputs are meant to be shared like any file
    } else {
      int fd = ::mkstemp(tmpl.data());
      if (fd < 0)
        throw Error(ErrorCode::io, final_path.string(), cat("cannot write here: ", std::strerror(errno)));
      ::fchmod(fd, 0644);  // mkstemp makes 0600
      ::close(fd);
    }
    temp_ = tmpl;
  }
  TempOutput(TempOutput&& other) noexcept { *this = std::move(other); }
  TempOutput& operator=(TempOutput&& other) noexcept {
    discard();
    final_ = std::move(other.final_);
    temp_ = std::exchange(other.temp_, fs::path());
    return *this;
  }
  ~TempOutput() { discard(); }

  const fs::path& temp() const { return temp_; }

  void commit() {
    if (::rename(temp_.c_str(), final_.c_str()) != 0) {
      int err = errno;
      if (err == ENOTEMPTY || err == EEXIST)
        throw Error(ErrorCode::conflict, final_.string(),
                    "already exists and is not empty; choose a new directory");
      throw Error(ErrorCode::io, final_.string(),
                  cat("cannot move the finished output into place: ", std::strerror(err)));
    }
    temp_.clear();
  }

 private:
  void discard() noexcept {
    if (temp_.empty()) return;
    std::error_code ec;
    fs::remove_all(temp_, ec);
    temp_.clear();
  }
  fs::path final_;
  fs::path temp_;
};

// "frame_%05d.png" -> "frame_00042.png" for 42; accepts exactly one %d / %0Nd.
std::string expand_pattern(const std::string& pattern, int64_t number, const std::string& subject) {
  size_t pos = pattern.find('%');
  size_t end = pos;
  int width = 0;
  if (pos != std::string::npos) {
    end = pos + 1;
    while (end < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[end])))
      width = width * 10 + (pattern[end++] - '0');
  }
  if (pos == std::string::npos || end >= pattern.size() || pattern[end] != 'd' ||
      pattern.find('%', end) != std::string::npos || width > 12)
    throw Error(ErrorCode::invalid_argument, subject,
                "file pattern must contain one %d or %0Nd, e.g. frame_%05d.png");
  std::string digits = std::to_string(number);
  if (static_cast<int>(digits.size()) < width)
    digits.insert(0, static_cast<size_t>(width) - digits.size(), '0');
  return pattern.substr(0, pos) + digits + pattern.substr(end + 1);
}

struct FilterInOutDeleter {
  void operator()(AVFilterInOut* io) const noexcept { avfilter_inout_free(&io); }
};
using FilterInOutPtr = std::unique_ptr<AVFilterInOut, FilterInOutDeleter>;

}  // namespace

struct VideoEncoder::Impl {
  fs::path path;
  EncodeOptions options;
  int width = 0, height = 0;              // frames as the caller gives them
  int coded_width = 0, coded_height = 0;  // after padding to even sizes
  int64_t frames = 0;
  TempOutput temp;
  av::OutputPtr out;
  av::CodecPtr codec;
  AVStream* stream = nullptr;
  av::SwsPtr sws;
  av::FramePtr yuv;
  av::PacketPtr packet = av::make_packet();
  av::FilterGraphPtr graph;  // gif: palettegen + paletteuse
  AVFilterContext* source = nullptr;
  AVFilterContext* sink = nullptr;
  std::string png_pattern = "frame_%05d.png";

  std::string name() const { return path.string(); }

  void check(int rc, const char* what, ErrorCode code = ErrorCode::io) const {
    if (rc < 0) throw Error(code, name(), cat(what, ": ", av::error_text(rc)));
  }

  void open(const fs::path& p, int w, int h, const EncodeOptions& o) {
    av::install_log_bridge();
    path = p;
    options = o;
    width = w;
    height = h;
    if (options.format == ContainerFormat::unknown) {
      auto guessed = format_from_path(path);
      if (!guessed)
        throw Error(
            ErrorCode::invalid_argument, name(),
            "cannot tell the output format from the extension (use .mp4, .webm, .gif or a directory)");
      options.format = *guessed;
    }
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
      throw Error(ErrorCode::invalid_argument, name(), cat("frame size ", w, "x", h, " is out of range"));
    if (!(options.fps > 0 && options.fps <= 1000))
      throw Error(ErrorCode::invalid_argument, name(), cat("fps must be in (0, 1000], got ", options.fps));
    coded_width = w + (w & 1);
    coded_height = h + (h & 1);
    switch (options.format) {
      case ContainerFormat::mp4:
      case ContainerFormat::webm:
        open_video();
        break;
      case ContainerFormat::gif:
        open_gif();
        break;
      case ContainerFormat::png_sequence:
        open_png_sequence();
        break;
      case ContainerFormat::unknown:
        throw Error(ErrorCode::invalid_argument, name(), "no output format given");
    }
  }

  AVRational frame_rate() const { return av_d2q(options.fps, 100000); }

  void open_muxer(const char* muxer) {
    temp = TempOutput(path, false);
    AVFormatContext* raw = nullptr;
    check(avformat_alloc_output_context2(&raw, nullptr, muxer, temp.temp().c_str()),
          "cannot create the muxer", ErrorCode::unsupported);
    out.reset(raw);
    for (const auto& [key, value] : options.metadata)
      av_dict_set(&out->metadata, key.c_str(), value.c_str(), 0);
  }

  void start_file(AVDictionary** muxer_options) {
    int rc = avio_open(&out->pb, temp.temp().c_str(), AVIO_FLAG_WRITE);
    if (rc < 0) throw Error(ErrorCode::io, name(), cat("cannot write: ", av::error_text(rc)));
    rc = avformat_write_header(out.get(), muxer_options);
    av_dict_free(muxer_options);
    check(rc, "cannot write the file header");
  }

  void open_video() {
    const bool mp4 = options.format == ContainerFormat::mp4;
    const int speed = speed_index(options.speed_preset, name());
    const int max_crf = mp4 ? 51 : 63;
    if (options.crf < 0 || options.crf > max_crf)
      throw Error(ErrorCode::invalid_argument, name(),
                  cat("crf must be 0..", max_crf, ", got ", options.crf));
    open_muxer(mp4 ? "mp4" : "webm");
    const char* encoder_name = video_encoder_name(options.format);
    const AVCodec* encoder = avcodec_find_encoder_by_name(encoder_name);
    if (!encoder)
      throw Error(ErrorCode::unsupported, name(), cat("this FFmpeg has no ", encoder_name, " encoder"));
    AVDictionary* codec_options = nullptr;
    av_dict_set_int(&codec_options, "crf", options.crf, 0);
    if (mp4) {
      av_dict_set(&codec_options, "preset", options.speed_preset.c_str(), 0);
      // x264's macroblock-tree rate control reads memory it never wrote when a frame is only a few
      // macroblocks on a side: the same frames encoded twice gave different files depending on what the heap
      // held before (libx264 164 at the default preset, medium: 32 to 96 px varied, 128 and 256 px did not).
      // Small videos (the tiny presets' samples, tests) encode without it, so one input always gives one
      // file; the cost is some compression on files of a few kilobytes.
      if (std::min(coded_width, coded_height) < kMacroblockTreeMinSide)
        av_dict_set(&codec_options, "mbtree", "0", 0);
    } else {
      av_dict_set(&codec_options, "deadline", "good", 0);
      av_dict_set_int(&codec_options, "cpu-used", 8 - speed, 0);
      av_dict_set_int(&codec_options, "row-mt", 1, 0);
    }
    const AVRational rate = frame_rate();
    auto configure = [&](AVCodecContext* c) {
      c->width = coded_width;
      c->height = coded_height;
      c->pix_fmt = AV_PIX_FMT_YUV420P;
      c->time_base = av_inv_q(rate);
      c->framerate = rate;
      c->sample_aspect_ratio = AVRational{1, 1};
      c->colorspace = AVCOL_SPC_SMPTE170M;
      c->color_range = AVCOL_RANGE_MPEG;
      c->bit_rate = 0;  // constant quality: CRF alone decides (VP9 needs b=0 for pure CRF)
    };
    open_codec_configured(encoder, &codec_options, configure);
    yuv = av::make_frame();
    yuv->format = AV_PIX_FMT_YUV420P;
    yuv->width = coded_width;
    yuv->height = coded_height;
    check(av_frame_get_buffer(yuv.get(), 0), "cannot allocate a frame", ErrorCode::out_of_memory);
    sws.reset(sws_getContext(coded_width, coded_height, AV_PIX_FMT_RGB24, coded_width, coded_height,
                             AV_PIX_FMT_YUV420P, SWS_BILINEAR | SWS_ACCURATE_RND, nullptr, nullptr, nullptr));
    if (!sws) throw Error(ErrorCode::unsupported, name(), "cannot set up RGB to YUV conversion");
    AVDictionary* muxer_options = nullptr;
    if (mp4) av_dict_set(&muxer_options, "movflags", "+faststart+use_metadata_tags", 0);
    start_file(&muxer_options);
  }

  template <typename Configure>
  void open_codec_configured(const AVCodec* encoder, AVDictionary** codec_options, Configure configure) {
    stream = avformat_new_stream(out.get(), nullptr);
    codec.reset(avcodec_alloc_context3(encoder));
    if (!stream || !codec) throw Error(ErrorCode::out_of_memory, name(), "cannot allocate the encoder");
    configure(codec.get());
    if (out->oformat->flags & AVFMT_GLOBALHEADER) codec->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    codec->thread_count = options.threads;
    int rc = avcodec_open2(codec.get(), encoder, codec_options);
    av_dict_free(codec_options);
    check(rc, "cannot open the encoder", ErrorCode::invalid_argument);
    check(avcodec_parameters_from_context(stream->codecpar, codec.get()), "encoder parameters");
    stream->time_base = codec->time_base;
    stream->avg_frame_rate = codec->framerate;
  }

  void open_gif() {
    if (options.fps > 100)
      throw Error(ErrorCode::invalid_argument, name(),
                  cat("gif frame delays are in 1/100 s: fps must be <= 100"));
    open_muxer("gif");
    const AVCodec* encoder = avcodec_find_encoder_by_name(video_encoder_name(ContainerFormat::gif));
    if (!encoder) throw Error(ErrorCode::unsupported, name(), "this FFmpeg has no gif encoder");
    AVDictionary* codec_options = nullptr;
    open_codec_configured(encoder, &codec_options, [&](AVCodecContext* c) {
      c->width = width;
      c->height = height;
      c->pix_fmt = AV_PIX_FMT_PAL8;
      c->time_base = AVRational{1, 100};
      c->framerate = frame_rate();
    });
    build_palette_graph();
    AVDictionary* muxer_options = nullptr;
    start_file(&muxer_options);
  }

  // One palette for the whole clip (palettegen needs every frame before paletteuse emits the first), with
  // error-diffusion dithering so gradients do not band.
  void build_palette_graph() {
    graph.reset(avfilter_graph_alloc());
    if (!graph) throw Error(ErrorCode::out_of_memory, name(), "cannot allocate a filter graph");
    const AVRational tb = av_inv_q(frame_rate());
    std::string args = cat("video_size=", width, "x", height, ":pix_fmt=", static_cast<int>(AV_PIX_FMT_RGB24),
                           ":time_base=", tb.num, "/", tb.den, ":pixel_aspect=1/1");
    check(avfilter_graph_create_filter(&source, avfilter_get_by_name("buffer"), "in", args.c_str(), nullptr,
                                       graph.get()),
          "gif filter source", ErrorCode::internal);
    check(avfilter_graph_create_filter(&sink, avfilter_get_by_name("buffersink"), "out", nullptr, nullptr,
                                       graph.get()),
          "gif filter sink", ErrorCode::internal);
    FilterInOutPtr outputs(avfilter_inout_alloc());
    FilterInOutPtr inputs(avfilter_inout_alloc());
    if (!outputs || !inputs) throw Error(ErrorCode::out_of_memory, name(), "cannot allocate filter pads");
    outputs->name = av_strdup("in");
    outputs->filter_ctx = source;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = sink;
    AVFilterInOut* in_raw = inputs.release();
    AVFilterInOut* out_raw = outputs.release();
    int rc = avfilter_graph_parse_ptr(
        graph.get(), "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a",
        &in_raw, &out_raw, nullptr);
    inputs.reset(in_raw);
    outputs.reset(out_raw);
    check(rc, "gif palette filters", ErrorCode::internal);
    check(avfilter_graph_config(graph.get(), nullptr), "gif palette filters", ErrorCode::internal);
  }

  void open_png_sequence() {
    const std::string text = path.string();
    fs::path dir = path;
    if (text.find('%') != std::string::npos) {
      dir = path.parent_path();
      png_pattern = path.filename().string();
      (void)expand_pattern(png_pattern, 1, text);
    }
    std::string dir_text = dir.string();
    while (dir_text.size() > 1 && dir_text.back() == '/') dir_text.pop_back();
    if (dir_text.empty() || dir_text == ".") dir_text = fs::current_path().string();
    temp = TempOutput(fs::path(dir_text), true);
  }

  void encode(AVCodecContext* c, const AVFrame* frame) {
    int rc = avcodec_send_frame(c, frame);
    check(rc, "encoder rejected a frame", ErrorCode::internal);
    while (true) {
      rc = avcodec_receive_packet(c, packet.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      check(rc, "encoding failed", ErrorCode::internal);
      av_packet_rescale_ts(packet.get(), c->time_base, stream->time_base);
      packet->stream_index = stream->index;
      rc = av_interleaved_write_frame(out.get(), packet.get());
      check(rc, "cannot write");
    }
  }

  void write(const RgbFrame& frame) {
    if (frame.width != width || frame.height != height ||
        frame.rgb.size() != static_cast<size_t>(width) * height * 3)
      throw Error(
          ErrorCode::invalid_argument, name(),
          cat("frame ", frames, " is ", frame.width, "x", frame.height, ", expected ", width, "x", height));
    switch (options.format) {
      case ContainerFormat::mp4:
      case ContainerFormat::webm:
        write_video(frame);
        break;
      case ContainerFormat::gif:
        write_gif(frame);
        break;
      case ContainerFormat::png_sequence:
        write_png_frame(frame);
        break;
      case ContainerFormat::unknown:
        break;
    }
    ++frames;
  }

  void write_video(const RgbFrame& frame) {
    av::FramePtr rgb = media_detail::padded_copy(frame, coded_width, coded_height);
    check(av_frame_make_writable(yuv.get()), "cannot reuse the frame buffer", ErrorCode::out_of_memory);
    sws_scale(sws.get(), rgb->data, rgb->linesize, 0, coded_height, yuv->data, yuv->linesize);
    yuv->pts = frames;
    encode(codec.get(), yuv.get());
  }

  void write_gif(const RgbFrame& frame) {
    av::FramePtr f = media_detail::padded_copy(frame, width, height);
    f->pts = frames;
    check(av_buffersrc_add_frame(source, f.get()), "gif palette filters", ErrorCode::internal);
    drain_gif_filters();
  }

  void drain_gif_filters() {
    av::FramePtr f = av::make_frame();
    while (true) {
      int rc = av_buffersink_get_frame(sink, f.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      check(rc, "gif palette filters", ErrorCode::internal);
      f->pts = av_rescale_q(f->pts, av_buffersink_get_time_base(sink), codec->time_base);
      f->pict_type = AV_PICTURE_TYPE_NONE;
      encode(codec.get(), f.get());
      av_frame_unref(f.get());
    }
  }

  void write_png_frame(const RgbFrame& frame) {
    const fs::path file = temp.temp() / expand_pattern(png_pattern, frames + 1, name());
    const std::string bytes = encode_png(frame);
    std::ofstream stream_out(file, std::ios::binary);
    stream_out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    stream_out.close();
    if (!stream_out) throw Error(ErrorCode::io, name(), cat("cannot write ", file.filename().string()));
  }

  void finish() {
    if (frames == 0) throw Error(ErrorCode::invalid_argument, name(), "no frames were written");
    if (options.format == ContainerFormat::png_sequence) {
      nlohmann::json meta = {{"fps", options.fps}, {"frame_count", frames},  {"width", width},
                             {"height", height},   {"pattern", png_pattern}, {"metadata", options.metadata}};
      write_text_atomic(temp.temp() / "metadata.json", meta.dump(2) + "\n");
      temp.commit();
      return;
    }
    if (options.format == ContainerFormat::gif) {
      check(av_buffersrc_add_frame(source, nullptr), "gif palette filters", ErrorCode::internal);
      drain_gif_filters();
    }
    encode(codec.get(), nullptr);
    check(av_write_trailer(out.get()), "cannot finish the file");
    int rc = avio_closep(&out->pb);
    check(rc, "cannot close");
    if (options.format == ContainerFormat::gif && !options.metadata.empty()) add_gif_comment();
    temp.commit();
  }

  void add_gif_comment() {
    std::string bytes = read_text_file(temp.temp());
    std::string text = nlohmann::json(options.metadata).dump();
    write_text_atomic(temp.temp(), gif::insert_comment(bytes, text, name()));
  }
};

VideoEncoder::VideoEncoder() = default;
VideoEncoder::~VideoEncoder() = default;
VideoEncoder::VideoEncoder(VideoEncoder&&) noexcept = default;
VideoEncoder& VideoEncoder::operator=(VideoEncoder&&) noexcept = default;

void VideoEncoder::open(const fs::path& path, int width, int height, const EncodeOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->open(path, width, height, options);
  impl_ = std::move(impl);
}

void VideoEncoder::write(const RgbFrame& frame) {
  if (!impl_) throw Error(ErrorCode::invalid_argument, "encoder", "write() before open()");
  impl_->write(frame);
}

void VideoEncoder::finish() {
  if (!impl_) throw Error(ErrorCode::invalid_argument, "encoder", "finish() before open()");
  std::unique_ptr<Impl> impl = std::move(impl_);
  impl->finish();
}

bool VideoEncoder::is_open() const {
  return impl_ != nullptr;
}
int64_t VideoEncoder::frames_written() const {
  return impl_ ? impl_->frames : 0;
}

void encode_video(const fs::path& path, const std::vector<RgbFrame>& frames, const EncodeOptions& options) {
  if (frames.empty()) throw Error(ErrorCode::invalid_argument, path.string(), "no frames to encode");
  VideoEncoder encoder;
  encoder.open(path, frames.front().width, frames.front().height, options);
  for (const RgbFrame& frame : frames) encoder.write(frame);
  encoder.finish();
}

std::vector<EncoderSupport> encoder_support() {
  std::vector<EncoderSupport> support;
  for (ContainerFormat format :
       {ContainerFormat::mp4, ContainerFormat::webm, ContainerFormat::gif, ContainerFormat::png_sequence}) {
    const char* encoder = video_encoder_name(format);
    support.push_back({format, encoder, avcodec_find_encoder_by_name(encoder) != nullptr});
  }
  return support;
}

std::string ffmpeg_library_versions() {
  auto version = [](const char* name, unsigned v) {
    return cat(name, " ", AV_VERSION_MAJOR(v), ".", AV_VERSION_MINOR(v), ".", AV_VERSION_MICRO(v));
  };
  return cat(version("libavcodec", avcodec_version()), ", ", version("libavformat", avformat_version()), ", ",
             version("libavutil", avutil_version()), ", ", version("libswscale", swscale_version()));
}

}  // namespace mugv
