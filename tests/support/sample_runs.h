#pragma once
// A DiT run folder holding training samples as the trainer lays them out (train/run_samples.h): run.json and
// small real mp4 files from the project's encoder, each with its prompt, seed and step in the metadata like
// the sampler writes them. For the readers' tests (the server's sample requests, the studio's gallery) in
// builds without LibTorch, where nothing trains. Header-only; needs the media and run-store libraries.
#include "media/encoder.h"
#include "media/frame.h"
#include "train/run_layout.h"
#include "train/run_samples.h"

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mugv::test {

struct SampleVideo {
  int64_t step = 0;
  std::string prompt;
  std::array<uint8_t, 3> colour{};  // every frame is this colour, so a test can tell the videos apart
};

inline constexpr int kSampleSide = 32;
inline constexpr int kSampleFrames = 9;
inline constexpr double kSampleFps = 8.0;

// Writes run `run` under home/runs with `videos`: the i-th video of a step is that step's sample-<i>.mp4.
inline RunPaths write_sample_run(const std::filesystem::path& home, const std::string& run,
                                 const std::vector<SampleVideo>& videos) {
  const RunPaths paths{home / "runs" / run};
  std::filesystem::create_directories(paths.root);
  write_run_manifest(paths, {run, RunLayoutKind::dit, "tiny", "shapes", "vae", nlohmann::json::object()});
  std::map<int64_t, size_t> per_step;
  for (const SampleVideo& v : videos) {
    const size_t index = per_step[v.step]++;
    std::vector<RgbFrame> frames(kSampleFrames, RgbFrame(kSampleSide, kSampleSide));
    for (RgbFrame& f : frames)
      for (size_t p = 0; p < f.rgb.size(); p += 3)
        for (size_t c = 0; c < 3; ++c) f.rgb[p + c] = v.colour[c];
    EncodeOptions options;
    options.fps = kSampleFps;
    options.metadata = {{"prompt", v.prompt},
                        {"seed", std::to_string(index)},
                        {"step", std::to_string(v.step)},
                        {"weights", "training"}};
    std::filesystem::create_directories(sample_step_dir(paths, v.step));
    encode_video(sample_step_dir(paths, v.step) / sample_file_name(index), frames, options);
  }
  return paths;
}

}  // namespace mugv::test
