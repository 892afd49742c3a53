// Block swap: the time of a guided DiT forward (batch 2) with every block on the device against block swap
// (model/block_offload.h), and, on a GPU, the peak memory the allocator held in each case. Random weights in
// the compute dtype; the shape is the release's width with fewer blocks unless told otherwise. Prints one
// JSON line. Usage: bench_block_swap [--device cpu|cuda] [--hidden 3456 --heads 48 --depth 8]
//                                    [--latent 4x16x16] [--dtype fp32|bf16] [--repeat 3]

#include "core/error.h"
#include "core/strings.h"
#include "model/block_offload.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <string>

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string device_name = "cpu", dtype_name = "fp32";
  int hidden = 3456, heads = 48, depth = 8, repeat = 3;
  int64_t frames = 4, height = 16, width = 16;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw mugv::Error(mugv::ErrorCode::usage, a, "needs a value");
        return argv[++i];
      };
      if (a == "--device")
        device_name = next();
      else if (a == "--hidden")
        hidden = std::stoi(next());
      else if (a == "--heads")
        heads = std::stoi(next());
      else if (a == "--depth")
        depth = std::stoi(next());
      else if (a == "--dtype")
        dtype_name = next();
      else if (a == "--repeat")
        repeat = std::stoi(next());
      else if (a == "--latent") {
        const auto parts = mugv::split(next(), 'x');
        if (parts.size() != 3) throw mugv::Error(mugv::ErrorCode::usage, a, "expected TxHxW");
        frames = std::stoll(parts[0]);
        height = std::stoll(parts[1]);
        width = std::stoll(parts[2]);
      } else {
        throw mugv::Error(mugv::ErrorCode::usage, a, "unknown option");
      }
    }
    const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
    if (device.is_cuda() && !torch::cuda::is_available())
      throw mugv::Error(mugv::ErrorCode::unsupported, "--device", "no CUDA device visible");
    const auto dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    mugv::DiTConfig c = mugv::release_width_dit(hidden, heads, depth);
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    auto x = torch::randn({2, c.in_channels, frames, height, width}).to(device, dtype);
    auto timestep = torch::full({2}, 700.0).to(device, dtype);
    auto text = torch::randn({2, 128, c.text_dim}).to(device, dtype);
    auto fps = torch::full({2}, 30.0).to(device, dtype);

    auto run = [&](bool offload) {
      torch::manual_seed(1);  // the same weights in both runs
      mugv::DiT dit(c);
      for (auto& p : dit->parameters()) p.normal_(0.0, 0.02);  // no zero layers: every block computes
      dit->to(dtype);
      dit->eval();
      std::shared_ptr<mugv::BlockOffload> swapper;
      if (offload) {
        swapper = std::make_shared<mugv::BlockOffload>(*dit, device);
        dit->set_block_offload(swapper);
      } else {
        dit->to(device);
      }
      mugv::synchronize_device(device);
      (void)dit->forward_full(x, timestep, text, {}, fps);  // warm-up: allocator, kernels, first prefetch
      mugv::synchronize_device(device);
      mugv::reset_peak_device_memory(device);
      const auto start = Clock::now();
      torch::Tensor out;
      for (int r = 0; r < repeat; ++r) out = dit->forward_full(x, timestep, text, {}, fps);
      mugv::synchronize_device(device);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count() / repeat;
      nlohmann::json j = {{"seconds_per_forward", seconds},
                          {"peak_device_bytes", mugv::peak_device_memory_bytes(device).value_or(-1)}};
      if (swapper) {
        j["peak_resident_blocks"] = swapper->peak_resident_blocks();
        j["block_bytes"] = swapper->block_bytes();
      }
      return std::make_pair(j, out.to(torch::kCPU, torch::kFloat32));
    };
    const auto [plain, plain_out] = run(false);
    const auto [swapped, swapped_out] = run(true);
    nlohmann::json result = {{"bench", "block_swap"},
                             {"device", device.str()},
                             {"dtype", dtype_name},
                             {"hidden", hidden},
                             {"heads", heads},
                             {"depth", depth},
                             {"latent", mugv::cat(frames, "x", height, "x", width)},
                             {"dit_parameters", mugv::dit_parameter_count(c)},
                             {"no_offload", plain},
                             {"block_swap", swapped},
                             {"slowdown", swapped["seconds_per_forward"].get<double>() /
                                              plain["seconds_per_forward"].get<double>()},
                             {"max_abs_difference", (plain_out - swapped_out).abs().max().item<double>()}};
    std::cout << result.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_block_swap: " << e.what() << "\n";
    return 1;
  }
}
