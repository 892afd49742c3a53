#pragma once
// Internal to backend/media: fitting a picture to a target size (resize geometry) and converting any FFmpeg
// pixel layout to RgbFrame with swscale. Not thread-safe; one RgbConverter per decoder/thread.

#include "media/av_util.h"
#include "media/frame.h"

namespace mugv::media_detail {

// Where a source picture goes in an out_w x out_h target: the source rectangle read (crop) and the
// destination rectangle written (the rest of the target is black padding).
struct ResizePlan {
  int crop_x = 0, crop_y = 0, crop_w = 0, crop_h = 0;
  int dst_x = 0, dst_y = 0, dst_w = 0, dst_h = 0;
};

// Target size for a request where 0 means "native"; one side 0 keeps the source aspect for the other.
void resolve_size(int src_w, int src_h, int& out_w, int& out_h);

// Crop offsets are rounded down to multiples of align_x/align_y (chroma subsampling of the source).
ResizePlan plan_resize(int src_w, int src_h, int out_w, int out_h, ResizeMode mode, int align_x = 1,
                       int align_y = 1);

// A picture described by planes, as swscale reads it.
struct PlanarView {
  const uint8_t* data[4] = {};
  int linesize[4] = {};
  AVPixelFormat format = AV_PIX_FMT_NONE;
  int width = 0, height = 0;
  AVColorSpace colorspace = AVCOL_SPC_UNSPECIFIED;
  AVColorRange range = AVCOL_RANGE_UNSPECIFIED;
};

PlanarView view_of(const AVFrame& frame);
// An FFmpeg-allocated RGB24 copy of `frame`, width x height (>= the frame's size; extra columns/rows repeat
// the last one). swscale's SIMD input readers load past the end of a row, so they must never read a
// caller's tightly packed buffer directly.
av::FramePtr padded_copy(const RgbFrame& frame, int width, int height);

class RgbConverter {
 public:
  // Writes `src` into `out` as out_w x out_h RGB24 (0 = native, see resolve_size); keeps out.pts_s/index.
  void convert(const PlanarView& src, int out_w, int out_h, ResizeMode mode, RgbFrame& out);

 private:
  SwsContext* context_for(const PlanarView& src, const ResizePlan& plan);
  av::SwsPtr sws_;
  AVColorSpace colorspace_ = AVCOL_SPC_NB;
  AVColorRange range_ = AVCOL_RANGE_NB;
};

}  // namespace mugv::media_detail
