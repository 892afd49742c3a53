#pragma once
// Fixtures for the media tests: synthetic frames and small hand-written files (WAV, Y4M) for error cases.

#include "media/frame.h"

#include <filesystem>
#include <vector>

namespace mugv::test {

namespace fs = std::filesystem;

// A smooth colour field whose phase moves with `k`, so consecutive frames differ but compress well.
RgbFrame pattern_frame(int width, int height, int k);
std::vector<RgbFrame> pattern_clip(int width, int height, int frames);

// A mono 16-bit PCM WAV of `samples` samples of silence.
void write_wav(const fs::path& path, int samples);
// A YUV4MPEG2 header declaring width x height, with no frames.
void write_y4m_header(const fs::path& path, int width, int height);

}  // namespace mugv::test
