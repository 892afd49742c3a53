// bench_train_step: one DiT training step (forward + backward + the trainer's AdamW) of a model preset on the
// CPU or a GPU, against the GEMM rate of the step's precision measured in the same run on the same device
// (fp32, or bf16 for --precision bf16: autocast, model/compute.h). Timed with the device synchronised. FLOPs
// are counted as docs/MUGV.md §6 does (model/config.h dit_flops_per_token: 6·N + 12·L·d·S + 12·L·d·S_text per
// video token). The text features are given (a frozen T5's output in MUG-V training), so only the DiT trains.
//   bench_train_step [--preset small] [--depth N] [--latent 4x16x16] [--text-tokens 32] [--batch 4]
//                    [--threads 2] [--steps 5] [--precision fp32|bf16] [--device cpu|cuda] [--gemm-size N]
//                    [--lora rank=R,targets=...] [--offload blocks] [--fused on|off]
// --depth overrides the preset's block count (the 10B width with 4 blocks). --lora trains adapters on the
// frozen model (model/lora.h) and the planner's estimate counts them (memory_model.h adapter_parameters).
// --offload blocks (with --lora) swaps the frozen blocks in from host memory (model/block_offload.h), as
// `mugv train --offload blocks` does; compare its step_s with the same command without it for the slowdown.
// --fused off runs the reference LibTorch compositions where the fused operations would run
// (model/fused_ops.h); compare with --fused on for what they save (default: on unless MUGV_FUSED_KERNELS=0).
// Prints one JSON line: the step's time and rate, then forward_s / backward_s / optimizer_s from up to 3
// more steps with the device synchronised between the parts, and optimizer_by_ops_s, the AdamW update as
// LibTorch's op sequence (what the fused update saves); with the planner's estimates for the same step
// (parallel/planner.h, memory_model.h: one rank, this step's precision, the GEMM rate measured here as the
// peak) beside the measurements, so the models can be checked against them.
#include "core/error.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/fused_ops.h"
#include "model/lora.h"
#include "model/run_models.h"
#include "parallel/memory_model.h"
#include "parallel/planner.h"
#include "train/optim.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

using namespace mugv;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// What the planner predicts for this benchmark's step: one rank, no ZeRO or recompute, the text features
// given, the weights and gradients fp32 with autocast (as the trainer keeps them) and no EMA (the benchmark
// has none). Null when the latent does not map to a video shape the planner accepts.
nlohmann::json planner_estimate(const ModelPreset& preset, int64_t lt, int64_t lh, int64_t lw, int64_t batch,
                                bool bf16, const torch::Device& device, double gemm_flops,
                                int64_t adapter_parameters, bool offload_blocks) {
  const VAEConfig& vae = preset.vae;
  PlanRequest request;
  request.frames = lt * vae.compress_t;
  request.height = lh * vae.compress_h;
  request.width = lw * vae.compress_w;
  request.cluster.gpus = request.cluster.gpus_per_node = 1;
  request.cluster.peak_flops = gemm_flops;
  request.global_batch = batch;
  request.memory = MemoryOptions::for_device(device.is_cuda() ? TrainDevice::gpu : TrainDevice::cpu, preset);
  request.memory.precision = fp32_precision();
  request.memory.precision.ema_bytes = 0;
  request.memory.precision.activation_bytes = bf16 ? 2 : 4;
  request.memory.text_encoder = TextEncoderUse::precomputed;
  request.memory.frames = request.frames;
  request.memory.height = request.height;
  request.memory.width = request.width;
  request.memory.micro_batch = static_cast<int>(batch);
  request.memory.adapter_parameters = adapter_parameters;
  request.memory.offload_blocks = offload_blocks;
  // Whether the step runs the fused norms (--fused; on CUDA, with the kernels built): they keep fewer
  // tensors.
  request.memory.fused_norms = fused_kernels_enabled() && (!device.is_cuda() || cuda_kernels_built());
  try {
    StepChoice choice;
    choice.micro_batch = int(batch);
    choice.offload_blocks = offload_blocks;
    const StepCost cost = estimate_step(preset, request, ParallelLayout{1, 1, 1}, choice);
    const MemoryBreakdown memory = estimate_memory(preset, ParallelLayout{1, 1, 1}, request.memory);
    // overhead_mb is the runtime allowance (CUDA context, libraries): on a GPU it is outside the caching
    // allocator's count that peak_device_mb reports.
    return {{"step_s", cost.step_s},
            {"peak_mb", memory.total() / 1048576.0},
            {"overhead_mb", memory.overhead / 1048576.0}};
  } catch (const Error& e) {
    return {{"error", e.what()}};
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset_name = "small", precision_name = "fp32", device_name = "cpu", lora_spec,
              offload = "none", fused;
  int64_t lt = 4, lh = 16, lw = 16, text_tokens = 32, batch = 4, threads = 2, steps = 5, depth = 0,
          gemm_size = 0;
  try {
    for (int i = 1; i < argc; i += 2) {
      const std::string f = argv[i];
      if (i + 1 >= argc) throw Error(ErrorCode::usage, f, "needs a value");
      const std::string v = argv[i + 1];
      if (f == "--preset")
        preset_name = v;
      else if (f == "--latent") {
        if (std::sscanf(v.c_str(), "%ldx%ldx%ld", &lt, &lh, &lw) != 3)
          throw Error(ErrorCode::usage, f, "expected TxHxW");
      } else if (f == "--text-tokens")
        text_tokens = std::atol(v.c_str());
      else if (f == "--batch")
        batch = std::atol(v.c_str());
      else if (f == "--threads")
        threads = std::atol(v.c_str());
      else if (f == "--steps")
        steps = std::atol(v.c_str());
      else if (f == "--depth")
        depth = std::atol(v.c_str());
      else if (f == "--precision")
        precision_name = v;
      else if (f == "--device")
        device_name = v;
      else if (f == "--lora")
        lora_spec = v;
      else if (f == "--offload")
        offload = v;
      else if (f == "--fused")
        fused = v;
      else if (f == "--gemm-size")
        gemm_size = std::atol(v.c_str());
      else
        throw Error(ErrorCode::usage, f, "unknown flag");
    }
    if (fused.empty()) fused = fused_kernels_enabled() ? "on" : "off";  // MUGV_FUSED_KERNELS decides
    if (fused != "on" && fused != "off") throw Error(ErrorCode::usage, "--fused", "on or off");
    set_fused_kernels(fused == "on");
    if (offload != "none" && offload != "blocks")
      throw Error(ErrorCode::usage, "--offload", "none or blocks");
    if (offload == "blocks" && lora_spec.empty())
      throw Error(ErrorCode::usage, "--offload", "block swap keeps a frozen base: give --lora");
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    const torch::Device device = choose_compute_device(device_name);
    ModelPreset preset = load_model_preset(preset_name);
    DiTConfig cfg = preset.dit;
    if (depth > 0) cfg.depth = depth;
    cfg.text_tokens = text_tokens;
    const ComputePrecision precision = choose_compute_precision(precision_name, device.type()).precision;
    const bool bf16 = precision == ComputePrecision::bf16;
    // A GPU reaches its GEMM peak only on large products; 8192³ is what the reference numbers use.
    if (gemm_size <= 0) gemm_size = device.is_cuda() ? 8192 : 1024;
    const double gemm_flops =
        measure_gemm_flops(gemm_size, 6, bf16 ? torch::kBFloat16 : torch::kFloat32, device);

    DiT model(cfg);
    model->to(device);
    // LoRA: the base frozen, only the adapters in the optimizer (what `mugv train --lora` does).
    std::optional<LoraConfig> lora;
    int64_t lora_parameters = 0;
    if (!lora_spec.empty()) {
      lora = parse_lora_config(lora_spec);
      for (auto& p : model->parameters()) p.set_requires_grad(false);
      lora_set_of(*model).attach_trainable(*model, *lora);
      lora_parameters = lora_parameter_count(cfg, *lora);
    }
    if (offload == "blocks")
      model->set_block_offload(std::make_shared<BlockOffload>(*model, device, OffloadUse::training));
    std::vector<std::pair<std::string, torch::Tensor>> trained;
    for (auto& [name, p] : named_parameters(*model))
      if (p.requires_grad()) trained.emplace_back(name, p);
    AdamW optimizer(trained, AdamWOptions{});
    const auto on = torch::TensorOptions().device(device);
    auto x = torch::randn({batch, cfg.in_channels, lt, lh, lw}, on);
    auto t = torch::rand({batch}, on) * kDiTTimesteps;
    auto text = torch::randn({batch, text_tokens, cfg.text_dim}, on);
    auto mask = torch::ones({batch, text_tokens}, on);
    auto fps = torch::full({batch}, 8.0, on);
    auto target = torch::randn_like(x);
    // One step; with `phases`, the device is synchronised after each part and its seconds added there.
    auto step = [&](double* phases) {
      auto mark = [&, last = std::chrono::steady_clock::now()](int part) mutable {
        if (!phases) return;
        synchronize_device(device);
        phases[part] += seconds_since(last);
        last = std::chrono::steady_clock::now();
      };
      optimizer.zero_grad();
      torch::Tensor pred;
      {
        AutocastScope autocast(precision, device.type());
        pred = model->forward(x, t, text, mask, fps).to(torch::kFloat32);
      }
      mark(0);
      torch::mse_loss(pred, target).backward();
      mark(1);
      optimizer.step(1e-4);
      mark(2);
    };
    step(nullptr);  // warm-up: allocations, kernel selection, oneDNN primitive creation
    synchronize_device(device);
    reset_peak_device_memory(device);
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) step(nullptr);
    synchronize_device(device);
    const double seconds = seconds_since(start) / steps;
    // Where the time goes, from up to 3 more steps with a synchronisation between the parts (which the
    // whole-step timing above leaves free to overlap).
    const int64_t phase_steps = std::min<int64_t>(steps, 3);
    double phases[3] = {0, 0, 0};
    for (int64_t i = 0; i < phase_steps; ++i) step(phases);
    // The same AdamW update as LibTorch's op sequence on the same tensors and fresh moments: what the fused
    // update (one CPU pass, or LibTorch 2.x's multi-tensor CUDA kernel) saves.
    double by_ops_seconds = 0;
    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> exp_avg, exp_avg_sq;
      for (const auto& [name, p] : trained) {
        exp_avg.push_back(torch::zeros_like(p));
        exp_avg_sq.push_back(torch::zeros_like(p));
      }
      synchronize_device(device);
      const auto by_ops_start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < phase_steps; ++i)
        for (size_t j = 0; j < trained.size(); ++j) {
          if (!trained[j].second.grad().defined()) continue;  // skipped by AdamW too
          torch::Tensor p = trained[j].second.detach();
          AdamW::update_by_ops(p, trained[j].second.grad(), exp_avg[j], exp_avg_sq[j], AdamWOptions{}, 1e-4,
                               0.1, 0.001);
        }
      synchronize_device(device);
      by_ops_seconds = seconds_since(by_ops_start) / phase_steps;
    }

    const int64_t video_tokens = dit_video_tokens(cfg, lt, lh, lw);
    const double flops_per_token = dit_flops_per_token(cfg, video_tokens, text_tokens);
    const double tokens_per_s = batch * video_tokens / seconds;
    const double achieved = tokens_per_s * flops_per_token;
    nlohmann::json out = {{"bench", "train_step"},
                          {"preset", preset_name},
                          {"hidden", cfg.hidden},
                          {"depth", cfg.depth},
                          {"heads", cfg.heads},
                          {"parameters", dit_parameter_count(cfg)},
                          {"lora", lora ? to_string(*lora) : std::string()},
                          {"offload", offload},
                          {"fused", fused == "on"},
                          {"trained_parameters", lora ? lora_parameters : dit_parameter_count(cfg)},
                          {"video_tokens", video_tokens},
                          {"text_tokens", text_tokens},
                          {"batch", batch},
                          {"device", device.str()},
                          {"threads", threads},
                          {"precision", to_string(precision)},
                          {"step_s", seconds},
                          {"tokens_per_s", tokens_per_s},
                          {"achieved_gflops", achieved / 1e9},
                          {"gemm_size", gemm_size},
                          {"gemm_gflops", gemm_flops / 1e9},
                          {"mfu", achieved / gemm_flops},
                          {"forward_s", phases[0] / phase_steps},
                          {"backward_s", phases[1] / phase_steps},
                          {"optimizer_s", phases[2] / phase_steps},
                          {"optimizer_by_ops_s", by_ops_seconds},
                          {"peak_rss_mb", peak_rss_bytes() / 1048576.0}};
    const auto peak_device = peak_device_memory_bytes(device);
    if (peak_device) out["peak_device_mb"] = *peak_device / 1048576.0;
    ModelPreset planned = preset;
    planned.dit = cfg;
    nlohmann::json plan = planner_estimate(planned, lt, lh, lw, batch, bf16, device, gemm_flops,
                                           lora ? lora_parameters : -1, offload == "blocks");
    if (plan.contains("step_s")) {
      // The allocator's peak leaves out the runtime allowance; the CPU's resident peak includes it.
      const double measured_peak_mb = peak_device ? *peak_device / 1048576.0 : peak_rss_bytes() / 1048576.0;
      const double planned_peak_mb =
          plan["peak_mb"].get<double>() - (peak_device ? plan["overhead_mb"].get<double>() : 0.0);
      plan["step_s_measured_over_planned"] = seconds / plan["step_s"].get<double>();
      plan["peak_measured_over_planned"] = measured_peak_mb / planned_peak_mb;
    }
    out["plan"] = plan;
    std::printf("%s\n", out.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
}
