// Curation throughput on one thread of decoding: VideoDecoder alone (threads=1, no pixel output) against
// analyze_video (decode at the analysis size on one thread, scene detection + clip scores on another).
// Prints one JSON line; the target is analysis_fps / decode_fps >= 0.6.
// Usage: bench_curate [--input FILE] [--seconds N] [--keep]

#include "core/error.h"
#include "curation/analyze.h"
#include "media/decoder.h"
#include "media/encoder.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// 1280x720 moving gradients with grain; the look changes twice so that the pass finds real cuts.
mugv::RgbFrame synthetic_frame(int k, int total) {
  const int w = 1280, h = 720;
  const int shot = 3 * k / total;
  mugv::RgbFrame f(w, h);
  uint32_t noise = 12345u + static_cast<uint32_t>(k) * 2654435761u;
  for (int y = 0; y < h; ++y) {
    uint8_t* p = f.pixel(0, y);
    for (int x = 0; x < w; ++x, p += 3) {
      noise = noise * 1664525u + 1013904223u;
      const int n = static_cast<int>((noise >> 29) & 3) - 2;
      int r = (x + 3 * k) & 255, g = (y + 2 * k) & 255, b = ((x ^ y) + 5 * k) & 255;
      if (shot == 1) r = ((x * y) / 64 + 4 * k) & 255, g = 255 - g, b = (y / 2) & 255;
      if (shot == 2) r = (x / 5) & 255, g = ((x + y) / 3 - 2 * k) & 255, b = 128 + ((x * 3 - k) & 127);
      auto clamp = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); };
      p[0] = clamp(r + n);
      p[1] = clamp(g + n);
      p[2] = clamp(b + n);
    }
  }
  return f;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    fs::path input;
    double seconds = 10;
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--input" && i + 1 < argc) {
        input = argv[++i];
      } else if (arg == "--seconds" && i + 1 < argc) {
        seconds = std::stod(argv[++i]);
      } else if (arg == "--keep") {
        keep = true;
      } else {
        std::cerr << "usage: bench_curate [--input FILE] [--seconds N] [--keep]\n";
        return 2;
      }
    }
    bool generated = false;
    if (input.empty()) {
      input = fs::temp_directory_path() / "mugv-bench-curate-720p.mp4";
      mugv::EncodeOptions options;
      options.fps = 24;
      options.crf = 20;
      options.speed_preset = "veryfast";
      mugv::VideoEncoder encoder;
      encoder.open(input, 1280, 720, options);
      const int total = static_cast<int>(seconds * options.fps);
      for (int k = 0; k < total; ++k) encoder.write(synthetic_frame(k, total));
      encoder.finish();
      generated = true;
    }

    mugv::DecodeOptions pure;
    pure.threads = 1;
    pure.output = mugv::PixelOutput::none;
    int64_t decoded = 0;
    auto start = Clock::now();
    {
      mugv::VideoDecoder decoder(input, pure);
      while (auto frame = decoder.next()) ++decoded;
    }
    const double decode_s = seconds_since(start);

    start = Clock::now();
    const mugv::VideoAnalysis analysis = mugv::analyze_video(input);
    const double analysis_s = seconds_since(start);

    const double decode_fps = decode_s > 0 ? decoded / decode_s : 0;
    const double analysis_fps = analysis_s > 0 ? analysis.frames / analysis_s : 0;
    nlohmann::json out{{"bench", "curate"},
                       {"input", input.string()},
                       {"frames", decoded},
                       {"decode_fps", decode_fps},
                       {"analysis_fps", analysis_fps},
                       {"ratio", decode_fps > 0 ? analysis_fps / decode_fps : 0},
                       {"cuts", analysis.scenes.cuts.size()},
                       {"clips", analysis.clips.size()},
                       {"analysis_width", mugv::kScoreAnalysisWidth}};
    std::cout << out.dump() << std::endl;
    if (generated && !keep) fs::remove(input);
    return 0;
  } catch (const mugv::Error& e) {
    std::cerr << "bench_curate: " << e.what() << "\n";
    return mugv::exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::cerr << "bench_curate: " << e.what() << "\n";
    return 1;
  }
}
