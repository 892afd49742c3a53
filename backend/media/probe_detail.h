#pragma once
// Internal to backend/media: the part of probe() that reads an already opened input, shared with the decoder
// so that opening a VideoDecoder does not open the file twice.

#include "media/av_util.h"
#include "media/probe.h"

namespace mugv::media_detail {

// Fills everything probe() reports from the header of `ctx` (depth = headers), validating the frame size.
MediaInfo describe_headers(AVFormatContext* ctx, int video_stream, const fs::path& path);

}  // namespace mugv::media_detail
