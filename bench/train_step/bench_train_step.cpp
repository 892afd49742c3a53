// bench_train_step: one DiT training step (forward + backward + AdamW) of a model preset on CPU, against the
// GEMM rate of the step's precision measured in the same run (fp32, or bf16 for --precision bf16: autocast,
// model/compute.h). FLOPs are counted as docs/MUGV.md §6 does (model/config.h
// dit_flops_per_token: 6·N + 12·L·d·S + 12·L·d·S_text per video token).
//   bench_train_step [--preset small] [--latent 4x16x16] [--text-tokens 32] [--batch 4] [--threads 2] [--steps 5]
//                    [--precision fp32|bf16]
// Prints one JSON line.
#include "model/config.h"
#include "model/dit.h"
#include "model/compute.h"
#include "train/train_support.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace mugv;

int main(int argc, char** argv) {
  std::string preset_name = "small";
  std::string precision_name = "fp32";
  int64_t lt = 4, lh = 16, lw = 16, text_tokens = 32, batch = 4, threads = 2, steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--preset") preset_name = v;
    else if (f == "--latent") std::sscanf(v.c_str(), "%ldx%ldx%ld", &lt, &lh, &lw);
    else if (f == "--text-tokens") text_tokens = std::atol(v.c_str());
    else if (f == "--batch") batch = std::atol(v.c_str());
    else if (f == "--threads") threads = std::atol(v.c_str());
    else if (f == "--steps") steps = std::atol(v.c_str());
    else if (f == "--precision") precision_name = v;
  }
  try {
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    ModelPreset preset = load_model_preset(preset_name);
    const DiTConfig& cfg = preset.dit;
    const ComputePrecision precision = choose_compute_precision(precision_name, torch::kCPU).precision;
    const bool bf16 = precision == ComputePrecision::bf16;
    const double gemm_flops = measure_gemm_flops(1024, 6, bf16 ? torch::kBFloat16 : torch::kFloat32);

    DiT model(cfg);
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-4));
    auto x = torch::randn({batch, cfg.in_channels, lt, lh, lw});
    auto t = torch::rand({batch}) * kDiTTimesteps;
    auto text = torch::randn({batch, text_tokens, cfg.text_dim});
    auto mask = torch::ones({batch, text_tokens});
    auto fps = torch::full({batch}, 8.0);
    auto target = torch::randn_like(x);
    auto step = [&] {
      optimizer.zero_grad();
      torch::Tensor pred;
      {
        AutocastScope autocast(precision, torch::kCPU);
        pred = model->forward(x, t, text, mask, fps).to(torch::kFloat32);
      }
      auto loss = torch::mse_loss(pred, target);
      loss.backward();
      optimizer.step();
    };
    step();  // warm-up: allocations, oneDNN primitive creation
    auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) step();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / steps;

    int64_t video_tokens = dit_video_tokens(cfg, lt, lh, lw);
    double flops_per_token = dit_flops_per_token(cfg, video_tokens, text_tokens);
    double tokens_per_s = batch * video_tokens / seconds;
    double achieved = tokens_per_s * flops_per_token;
    nlohmann::json out = {{"bench", "train_step"},
                          {"preset", preset_name},
                          {"parameters", dit_parameter_count(cfg)},
                          {"video_tokens", video_tokens},
                          {"text_tokens", text_tokens},
                          {"batch", batch},
                          {"threads", threads},
                          {"precision", to_string(precision)},
                          {"step_s", seconds},
                          {"tokens_per_s", tokens_per_s},
                          {"achieved_gflops", achieved / 1e9},
                          {"gemm_gflops", gemm_flops / 1e9},
                          {"ratio_to_gemm", achieved / gemm_flops},
                          {"peak_rss_mb", peak_rss_bytes() / 1048576.0}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
}
