#include "media/scale.h"

#include "core/error.h"
#include "core/strings.h"

extern "C" {
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
}

#include <algorithm>
#include <cmath>
#include <cstring>

namespace mugv::media_detail {

void resolve_size(int src_w, int src_h, int& out_w, int& out_h) {
  if (out_w < 0 || out_h < 0) throw Error(ErrorCode::invalid_argument, "resize", "negative target size");
  if (out_w == 0 && out_h == 0) {
    out_w = src_w;
    out_h = src_h;
  } else if (out_w == 0) {
    out_w = std::max(1, static_cast<int>(std::lround(static_cast<double>(out_h) * src_w / src_h)));
  } else if (out_h == 0) {
    out_h = std::max(1, static_cast<int>(std::lround(static_cast<double>(out_w) * src_h / src_w)));
  }
}

ResizePlan plan_resize(int src_w, int src_h, int out_w, int out_h, ResizeMode mode, int align_x,
                       int align_y) {
  ResizePlan p;
  p.crop_w = src_w;
  p.crop_h = src_h;
  p.dst_w = out_w;
  p.dst_h = out_h;
  const double src_aspect = static_cast<double>(src_w) / src_h;
  const double dst_aspect = static_cast<double>(out_w) / out_h;
  if (mode == ResizeMode::center_crop &&
      src_w * static_cast<int64_t>(out_h) != src_h * static_cast<int64_t>(out_w)) {
    if (src_aspect > dst_aspect)
      p.crop_w = std::clamp(static_cast<int>(std::lround(src_h * dst_aspect)), 1, src_w);
    else
      p.crop_h = std::clamp(static_cast<int>(std::lround(src_w / dst_aspect)), 1, src_h);
    p.crop_x = (src_w - p.crop_w) / 2 / align_x * align_x;
    p.crop_y = (src_h - p.crop_h) / 2 / align_y * align_y;
  } else if (mode == ResizeMode::fit_pad) {
    if (src_aspect > dst_aspect)
      p.dst_h = std::clamp(static_cast<int>(std::lround(out_w / src_aspect)), 1, out_h);
    else
      p.dst_w = std::clamp(static_cast<int>(std::lround(out_h * src_aspect)), 1, out_w);
    p.dst_x = (out_w - p.dst_w) / 2;
    p.dst_y = (out_h - p.dst_h) / 2;
  }
  return p;
}

PlanarView view_of(const AVFrame& frame) {
  PlanarView v;
  for (int i = 0; i < 4; ++i) {
    v.data[i] = frame.data[i];
    v.linesize[i] = frame.linesize[i];
  }
  v.format = static_cast<AVPixelFormat>(frame.format);
  v.width = frame.width;
  v.height = frame.height;
  v.colorspace = frame.colorspace;
  v.range = frame.color_range;
  return v;
}

av::FramePtr padded_copy(const RgbFrame& frame, int width, int height) {
  av::FramePtr f = av::make_frame();
  f->format = AV_PIX_FMT_RGB24;
  f->width = width;
  f->height = height;
  if (av_frame_get_buffer(f.get(), 0) < 0)
    throw Error(ErrorCode::out_of_memory, "frame", "cannot allocate a frame");
  const size_t row_bytes = frame.stride_bytes();
  for (int y = 0; y < height; ++y) {
    uint8_t* dst = f->data[0] + static_cast<ptrdiff_t>(y) * f->linesize[0];
    const uint8_t* src = frame.pixel(0, std::min(y, frame.height - 1));
    std::memcpy(dst, src, row_bytes);
    for (int x = frame.width; x < width; ++x)
      std::memcpy(dst + static_cast<size_t>(x) * 3, src + row_bytes - 3, 3);
  }
  return f;
}

SwsContext* RgbConverter::context_for(const PlanarView& src, const ResizePlan& plan) {
  const bool downscale = plan.dst_w < plan.crop_w || plan.dst_h < plan.crop_h;
  const int flags = downscale ? SWS_AREA : SWS_BILINEAR;
  SwsContext* ctx = sws_getCachedContext(sws_.release(), plan.crop_w, plan.crop_h, src.format, plan.dst_w,
                                         plan.dst_h, AV_PIX_FMT_RGB24, flags, nullptr, nullptr, nullptr);
  sws_.reset(ctx);
  if (!ctx)
    throw Error(
        ErrorCode::unsupported, "swscale",
        cat("cannot convert ", av_get_pix_fmt_name(src.format) ? av_get_pix_fmt_name(src.format) : "?", " ",
            plan.crop_w, "x", plan.crop_h, " to RGB ", plan.dst_w, "x", plan.dst_h));
  if (src.colorspace != colorspace_ || src.range != range_) {
    // Tagged BT.709 material must not be converted with the BT.601 default; untagged input keeps the default.
    const int* coefficients = sws_getCoefficients(
        src.colorspace == AVCOL_SPC_UNSPECIFIED || src.colorspace == AVCOL_SPC_RGB ? SWS_CS_DEFAULT
                                                                                   : src.colorspace);
    const int src_full = src.range == AVCOL_RANGE_JPEG || src.format == AV_PIX_FMT_YUVJ420P ||
                         src.format == AV_PIX_FMT_YUVJ422P || src.format == AV_PIX_FMT_YUVJ444P;
    sws_setColorspaceDetails(ctx, coefficients, src_full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16,
                             1 << 16);
    colorspace_ = src.colorspace;
    range_ = src.range;
  }
  return ctx;
}

void RgbConverter::convert(const PlanarView& src, int out_w, int out_h, ResizeMode mode, RgbFrame& out) {
  resolve_size(src.width, src.height, out_w, out_h);
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(src.format);
  if (!desc || (desc->flags & AV_PIX_FMT_FLAG_HWACCEL))
    throw Error(ErrorCode::unsupported, "swscale", "pixel format cannot be converted in memory");
  const int align_x = 1 << desc->log2_chroma_w;
  const int align_y = 1 << desc->log2_chroma_h;
  if (mode == ResizeMode::unknown) mode = ResizeMode::center_crop;
  ResizePlan plan = plan_resize(src.width, src.height, out_w, out_h, mode, align_x, align_y);

  const uint8_t* planes[4] = {};
  int max_step[4] = {};
  av_image_fill_max_pixsteps(max_step, nullptr, desc);
  for (int i = 0; i < 4 && src.data[i]; ++i) {
    const bool chroma = (i == 1 || i == 2) && !(desc->flags & AV_PIX_FMT_FLAG_RGB);
    const int x = chroma ? plan.crop_x >> desc->log2_chroma_w : plan.crop_x;
    const int y = chroma ? plan.crop_y >> desc->log2_chroma_h : plan.crop_y;
    planes[i] =
        src.data[i] + static_cast<ptrdiff_t>(y) * src.linesize[i] + static_cast<ptrdiff_t>(x) * max_step[i];
  }

  out.width = out_w;
  out.height = out_h;
  const size_t bytes = static_cast<size_t>(out_w) * out_h * 3;
  if (mode == ResizeMode::fit_pad)
    out.rgb.assign(bytes, 0);
  else
    out.rgb.resize(bytes);
  uint8_t* dst[4] = {out.pixel(plan.dst_x, plan.dst_y), nullptr, nullptr, nullptr};
  int dst_linesize[4] = {static_cast<int>(out.stride_bytes()), 0, 0, 0};
  SwsContext* ctx = context_for(src, plan);
  sws_scale(ctx, planes, src.linesize, 0, plan.crop_h, dst, dst_linesize);
}

}  // namespace mugv::media_detail
