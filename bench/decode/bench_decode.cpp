// Decode throughput, one thread: the ffmpeg CLI decoding to the null muxer against VideoDecoder with
// (a) no pixel conversion, (b) RGB at native size, (c) RGB at a 256-px-wide analysis size.
// Prints one JSON line. Usage: bench_decode [--input FILE] [--seconds N] [--keep]

#include "core/error.h"
#include "core/strings.h"
#include "media/decoder.h"
#include "media/encoder.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// A 1280x720 picture with moving gradients and texture, so the encoder spends real bits on it.
mugv::RgbFrame synthetic_frame(int k) {
  const int w = 1280, h = 720;
  mugv::RgbFrame f(w, h);
  uint32_t noise = 12345u + static_cast<uint32_t>(k) * 2654435761u;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      noise = noise * 1664525u + 1013904223u;
      const int n = static_cast<int>((noise >> 29) & 3) - 2;
      const int r = (x + 3 * k) & 255;
      const int g = (y + 2 * k) & 255;
      const int b = ((x ^ y) + 5 * k) & 255;
      auto clamp = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); };
      f.set_pixel(x, y, clamp(r + n), clamp(g + n), clamp(b + n));
    }
  }
  return f;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Run {
  int64_t frames = 0;
  double seconds = 0;
  double fps() const { return seconds > 0 ? frames / seconds : 0; }
};

Run run_ours(const fs::path& input, mugv::DecodeOptions options) {
  Run run;
  auto start = Clock::now();
  mugv::VideoDecoder decoder(input, options);
  while (auto frame = decoder.next()) ++run.frames;
  run.seconds = seconds_since(start);
  return run;
}

Run run_ffmpeg(const fs::path& input, int64_t frames) {
  Run run;
  const std::string command =
      "ffmpeg -nostdin -hide_banner -loglevel error -threads 1 -i '" + input.string() + "' -f null - 2>&1";
  auto start = Clock::now();
  int rc = std::system(command.c_str());
  run.seconds = seconds_since(start);
  run.frames = rc == 0 ? frames : 0;
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    fs::path input;
    double seconds = 10;
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--input" && i + 1 < argc)
        input = argv[++i];
      else if (arg == "--seconds" && i + 1 < argc)
        seconds = std::atof(argv[++i]);
      else if (arg == "--keep")
        keep = true;
      else {
        std::cerr << "usage: bench_decode [--input FILE] [--seconds N] [--keep]\n";
        return 2;
      }
    }
    bool generated = false;
    double encode_fps = 0;
    if (input.empty()) {
      input = fs::temp_directory_path() / "mugv-bench-decode-720p.mp4";
      const int fps = 25;
      const int frames = static_cast<int>(std::lround(seconds * fps));
      mugv::EncodeOptions options;
      options.fps = fps;
      options.crf = 20;
      options.speed_preset = "veryfast";
      auto start = Clock::now();
      mugv::VideoEncoder encoder;
      encoder.open(input, 1280, 720, options);
      for (int k = 0; k < frames; ++k) encoder.write(synthetic_frame(k));
      encoder.finish();
      encode_fps = frames / seconds_since(start);
      generated = true;
    }

    mugv::DecodeOptions none;
    none.output = mugv::PixelOutput::none;
    mugv::DecodeOptions native;
    mugv::DecodeOptions analysis;
    analysis.width = 256;
    analysis.resize = mugv::ResizeMode::stretch;

    // Warm the page cache and the libraries once so the first timed run is not penalised.
    Run warm = run_ours(input, none);
    Run ffmpeg = run_ffmpeg(input, warm.frames);
    Run a = run_ours(input, none);
    Run b = run_ours(input, native);
    Run c = run_ours(input, analysis);
    const mugv::MediaInfo info = mugv::VideoDecoder(input).info();

    nlohmann::json out = {
        {"bench", "decode"},
        {"input", input.string()},
        {"width", info.width},
        {"height", info.height},
        {"codec", info.video_codec},
        {"frames", a.frames},
        {"threads", 1},
        {"ffmpeg_fps", ffmpeg.fps()},
        {"ours_decode_only_fps", a.fps()},
        {"ours_rgb_native_fps", b.fps()},
        {"ours_rgb_256w_fps", c.fps()},
        {"ratio_decode_only", ffmpeg.fps() > 0 ? a.fps() / ffmpeg.fps() : 0},
        {"ratio_rgb_native", ffmpeg.fps() > 0 ? b.fps() / ffmpeg.fps() : 0},
        {"ratio_rgb_256w", ffmpeg.fps() > 0 ? c.fps() / ffmpeg.fps() : 0},
    };
    if (generated) out["generate_encode_fps"] = encode_fps;
    std::cout << out.dump() << std::endl;
    if (generated && !keep) fs::remove(input);
    return ffmpeg.frames > 0 ? 0 : 1;
  } catch (const mugv::Error& e) {
    std::cerr << "bench_decode: " << e.what() << "\n";
    return mugv::exit_code_for(e.code());
  }
}
