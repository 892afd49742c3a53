// Sampling step time: one guided Euler step = a DiT forward on a batch of 2 (conditional and
// unconditional caption) plus the CFG combine and the update, with randomly initialised weights.
// Timed with the device synchronised, forward passes under the precision's autocast (model/compute.h).
// Prints one JSON line. Usage: bench_sample_step [--presets tiny,small] [--size 64x64] [--frames 17]
//                                                [--steps 5] [--threads N] [--device cpu|cuda]
//                                                [--precision fp32|bf16] [--depth N]
// --depth overrides the presets' block count (the 10B width with a few blocks).

#include "core/error.h"
#include "core/params.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/info.h"

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::vector<std::string> presets = {"tiny", "small"};
  int64_t width = 64, height = 64, frames = 17;
  int steps = 5, depth = 0;
  std::string device_name = "cpu", precision_name = "fp32";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw mugv::Error(mugv::ErrorCode::usage, a, "needs a value");
        return argv[++i];
      };
      if (a == "--presets") {
        presets = mugv::split(next(), ',');
      } else if (a == "--size") {
        auto s = mugv::parse_size2d(next());
        if (!s) throw mugv::Error(mugv::ErrorCode::usage, a, "expected WxH");
        width = s->width;
        height = s->height;
      } else if (a == "--frames") {
        frames = std::stoll(next());
      } else if (a == "--steps") {
        steps = std::stoi(next());
      } else if (a == "--device") {
        device_name = next();
      } else if (a == "--precision") {
        precision_name = next();
      } else if (a == "--depth") {
        depth = std::stoi(next());
      } else if (a == "--threads") {
        torch::set_num_threads(std::stoi(next()));
      } else {
        throw mugv::Error(mugv::ErrorCode::usage, a, "unknown option");
      }
    }
    const torch::Device device = mugv::choose_compute_device(device_name);
    const mugv::ComputePrecision precision =
        mugv::choose_compute_precision(precision_name, device.type()).precision;
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    nlohmann::json results = nlohmann::json::array();
    for (const auto& name : presets) {
      mugv::ModelPreset preset = mugv::load_model_preset(name);
      if (depth > 0) preset.dit.depth = depth;
      const mugv::ModelInfo info = mugv::describe(preset, frames, height, width);
      mugv::DiT dit(preset.dit);
      dit->to(device);
      dit->eval();
      const int64_t batch = 2;
      const auto on = torch::TensorOptions().device(device);
      auto x = torch::randn(
          {1, info.latent_channels, info.latent_frames, info.latent_height, info.latent_width}, on);
      auto text = torch::randn({batch, preset.dit.text_tokens, preset.dit.text_dim}, on);
      auto mask = torch::ones({batch, preset.dit.text_tokens}, on);
      auto fps = torch::full({batch}, 8.0, on);
      auto step = [&](double t, double dt) {
        torch::Tensor v;
        {
          mugv::AutocastScope autocast(precision, device.type());
          v = dit->forward(x.expand({batch, -1, -1, -1, -1}).contiguous(),
                           torch::full({batch}, t * mugv::kDiTTimesteps, on), text, mask, fps)
                  .to(torch::kFloat32);
        }
        auto guided = v.narrow(0, 1, 1) + 4.0 * (v.narrow(0, 0, 1) - v.narrow(0, 1, 1));
        x = x + dt * guided;
      };
      step(1.0, 0.0);  // warm-up: allocator, kernel selection and oneDNN primitive caches
      mugv::synchronize_device(device);
      const auto start = Clock::now();
      for (int s = 0; s < steps; ++s) step(1.0 - double(s) / steps, 1.0 / steps);
      mugv::synchronize_device(device);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const double per_step = seconds / steps;
      results.push_back({{"preset", name},
                         {"depth", preset.dit.depth},
                         {"dit_parameters", mugv::dit_parameter_count(preset.dit)},
                         {"video_tokens", info.video_tokens},
                         {"ms_per_step", per_step * 1e3},
                         {"tokens_per_s", double(batch * info.video_tokens) / per_step}});
    }
    std::cout << nlohmann::json{{"bench", "sample_step"},
                                {"width", width},
                                {"height", height},
                                {"frames", frames},
                                {"cfg_batch", 2},
                                {"steps", steps},
                                {"device", device.str()},
                                {"precision", mugv::to_string(precision)},
                                {"threads", torch::get_num_threads()},
                                {"results", results}}
                     .dump()
              << "\n";
  } catch (const mugv::Error& e) {
    std::cerr << "bench_sample_step: " << e.what() << "\n";
    return mugv::exit_code_for(e.code());
  }
  return 0;
}
