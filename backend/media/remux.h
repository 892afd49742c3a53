#pragma once
// Stream copy of a time range of a video (no re-encoding: exact quality, a fraction of the time), possible
// when the range starts on a keyframe and ends on a keyframe or at the end of the stream, so that every
// copied frame has all its references inside the range. Only the video stream is copied. Output is
// MP4/MOV/MKV by extension, written atomically (temporary file, then rename).

#include <cstdint>
#include <filesystem>
#include <optional>

namespace mugv {

// The number of video packets copied, or nullopt when the cut points do not allow a stream copy (the caller
// re-encodes instead). Throws Error naming the file when the input cannot be read or the output written.
std::optional<int64_t> remux_range(const std::filesystem::path& input, double start_s, double end_s,
                                   const std::filesystem::path& output);

}  // namespace mugv
