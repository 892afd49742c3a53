// mugv plan --preset P | --model DIR --gpus N --gpu-mem-gb G --frames F --size WxH [...]: parallel layouts
// that fit, fastest first, with pipeline stages and schedule, memory per GPU (of the stage needing most),
// step time with the pipeline's bubble and point-to-point time, and predicted MFU
// (backend/parallel/planner.h; docs/PARALLEL.md).
#include "command.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/config.h"
#include "model/lora_spec.h"
#include "model/release_files.h"
#include "parallel/planner.h"

#include <nlohmann/json.hpp>

#include <optional>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <tuple>

namespace mugv::cli {
namespace {

void define(ParamRegistry& r) {
  r.add(param("plan.preset", "--preset", ParamType::text, "mugv-10b",
              "model preset (presets/models/NAME.toml)", "model"));
  r.add(param("plan.model", "--model", ParamType::path, nullptr,
              "a released model folder or installed model name: plan with its shapes (read from its files' "
              "headers) instead of --preset",
              "model"));
  auto frames =
      param("plan.frames", "--frames", ParamType::integer, 121,
            "video frames per sample (a multiple of the VAE's time compression, or one more)", "model");
  frames.min_value = 1;
  r.add(frames);
  r.add(param("plan.size", "--size", ParamType::size2d, "1280x720", "video size WxH", "model"));

  auto gpus = param("plan.gpus", "--gpus", ParamType::integer, 8, "GPUs in the run", "cluster");
  gpus.min_value = 1;
  r.add(gpus);
  auto per_node = param("plan.gpus_per_node", "--gpus-per-node", ParamType::integer, 8,
                        "GPUs per node (tensor parallel stays inside a node)", "cluster");
  per_node.min_value = 1;
  r.add(per_node);
  auto mem = param("plan.gpu_mem_gb", "--gpu-mem-gb", ParamType::real, 80.0,
                   "memory per GPU in GB (10^9 bytes)", "cluster");
  mem.min_value = 0.001;
  r.add(mem);
  auto peak = param("plan.peak_tflops", "--peak-tflops", ParamType::real, 989.0,
                    "dense peak TFLOP/s per GPU in the training dtype (H100 SXM bf16: 989)", "cluster");
  peak.min_value = 0.001;
  r.add(peak);
  auto intra = param("plan.intra_node_gbps", "--intra-node-gbps", ParamType::real, 450.0,
                     "GB/s per GPU inside a node (NVLink)", "cluster");
  intra.min_value = 0.001;
  r.add(intra);
  auto inter = param("plan.inter_node_gbps", "--inter-node-gbps", ParamType::real, 50.0,
                     "GB/s per GPU between nodes (network)", "cluster");
  inter.min_value = 0.001;
  r.add(inter);
  auto host = param("plan.host_gbps", "--host-gbps", ParamType::real, 50.0,
                    "GB/s from host memory to a GPU (PCIe; block swap of a LoRA base)", "cluster");
  host.min_value = 0.001;
  r.add(host);

  auto batch = param("plan.global_batch", "--global-batch", ParamType::integer, 0,
                     "samples per optimizer step (0: one per GPU)", "training");
  batch.min_value = 0;
  r.add(batch);
  auto micro = param("plan.max_micro_batch", "--max-micro-batch", ParamType::integer, 8,
                     "largest micro-batch tried (1, 2, 4, ... up to this, and this)", "training");
  micro.min_value = 1;
  r.add(micro);
  auto device = param(
      "plan.device", "--device", ParamType::choice, "gpu",
      "gpu: bf16 weights with fp32 master, Adam and EMA; cpu: fp32 everything (to compare with a CPU run)",
      "training");
  device.choices = {"gpu", "cpu"};
  r.add(device);
  auto attention =
      param("plan.attention", "--attention", ParamType::choice, "auto",
            "attention kernel: fused keeps no scores, math saves them (auto: fused on gpu, math on cpu)",
            "training");
  attention.choices = {"auto", "fused", "math"};
  r.add(attention);
  r.add(param("plan.ema", "--ema", ParamType::boolean, true,
              "keep an fp32 EMA of the weights (as `mugv train` does)", "training"));
  auto overhead =
      param("plan.overhead_gb", "--overhead-gb", ParamType::real, nullptr,
            "fixed runtime memory per GPU in GB (default: 3 GiB on gpu, 300 MiB on cpu)", "training");
  overhead.min_value = 0.0;
  r.add(overhead);
  auto efficiency = param("plan.max_efficiency", "--max-efficiency", ParamType::real, 0.65,
                          "fraction of peak that large GEMMs and attention reach", "cost model");
  efficiency.min_value = 0.01;
  efficiency.max_value = 1.0;
  r.add(efficiency);

  r.add(
      param("plan.lora", "--lora", ParamType::text, "",
            "plan a LoRA fine-tune: only these adapters train, the base frozen (rank=R,targets=...; tp = 1)",
            "model"));
  r.add(param("plan.block_swap", "--block-swap", ParamType::boolean, true,
              "LoRA: also try the frozen base's blocks swapped in from host memory (tp = cp = pp = 1)",
              "model"));
  for (const auto& [key, flag, what] :
       {std::tuple<const char*, const char*, const char*>{"plan.tp", "--tp", "tensor-parallel ranks"},
        {"plan.cp", "--cp", "context-parallel ranks"},
        {"plan.pp", "--pp", "pipeline stages"}}) {
    auto fixed = param(key, flag, ParamType::integer, 0,
                       cat("only layouts with this many ", what, " (0: any)"), "layout");
    fixed.min_value = 0;
    r.add(fixed);
  }
  auto top = param("plan.top", "--top", ParamType::integer, 10, "layouts to list (0: all)", "output");
  top.min_value = 0;
  r.add(top);
}

// What the planner proposes when a full fine-tune fits nowhere.
constexpr const char* kSuggestedLora = "rank=16,targets=attn,cross,mlp";

// The library names values by their meaning ("height"); the user typed a flag.
[[noreturn]] void rethrow_with_flag(const Error& e) {
  static const std::map<std::string, std::string> flags = {{"gpus", "--gpus"},
                                                           {"gpus-per-node", "--gpus-per-node"},
                                                           {"gpu-mem-gb", "--gpu-mem-gb"},
                                                           {"height", "--size"},
                                                           {"width", "--size"},
                                                           {"frames", "--frames"},
                                                           {"global-batch", "--global-batch"},
                                                           {"peak-tflops", "--peak-tflops"},
                                                           {"tp", "--tp"},
                                                           {"cp", "--cp"},
                                                           {"pp", "--pp"}};
  auto it = flags.find(e.subject());
  if (it == flags.end()) throw e;
  throw Error(e.code(), it->second, e.message());
}

// GB for the big numbers, MB below 1 GB so that the small presets do not read as zero.
std::string size_text(int64_t bytes) {
  char buffer[32];
  if (bytes >= 1'000'000'000)
    std::snprintf(buffer, sizeof buffer, "%.1f GB", double(bytes) / 1e9);
  else
    std::snprintf(buffer, sizeof buffer, "%.1f MB", double(bytes) / 1e6);
  return buffer;
}

// The recompute column: "none", "selective", "full", "full:12" (the first 12 blocks of each stage),
// "full+swap" (block swap of a LoRA base, every block recomputed).
std::string recompute_text(const PlannedLayout& p) {
  if (p.offload_blocks) return "full+swap";
  if (p.recompute_blocks > 0 && p.recompute != Recompute::none)
    return cat(to_string(p.recompute), ":", p.recompute_blocks);
  return to_string(p.recompute);
}

// "1f1b", or "interl.x2" for the interleaved schedule with its chunks per stage ("-" without a pipeline).
std::string schedule_text(const PlannedLayout& p) {
  if (p.layout.pp == 1) return "-";
  if (p.schedule == PipelineSchedule::interleaved) return cat("interl.x", p.virtual_stages);
  return to_string(p.schedule);
}

nlohmann::json to_json(const PlannedLayout& p) {
  const auto& m = p.memory;
  const auto& c = p.cost;
  return {{"tp", p.layout.tp},
          {"cp", p.layout.cp},
          {"dp", p.layout.dp},
          {"pp", p.layout.pp},
          {"layout", to_string(p.layout)},
          {"schedule", to_string(p.schedule)},
          {"virtual_stages", p.virtual_stages},
          {"zero", p.zero},
          {"recompute", to_string(p.recompute)},
          {"recompute_blocks", p.recompute_blocks},
          {"block_swap", p.offload_blocks},
          {"micro_batch", p.micro_batch},
          {"grad_accumulation", p.grad_accumulation},
          {"memory_gb", double(m.total()) / 1e9},
          {"memory_stage", m.stage},
          {"memory_bytes",
           {{"parameters", m.parameters},
            {"gradients", m.gradients},
            {"optimizer", m.optimizer},
            {"activations", m.activations},
            {"overhead", m.overhead},
            {"total", m.total()}}},
          {"step_s", c.step_s},
          {"mfu", c.mfu},
          {"samples_per_s", c.samples_per_s},
          {"efficiency", c.efficiency},
          {"time_s",
           {{"compute", c.compute_s},
            {"recompute", c.recompute_s},
            {"tp_comm", c.tp_comm_s},
            {"cp_comm", c.cp_comm_s},
            {"pp_bubble", c.pp_bubble_s},
            {"pp_comm", c.pp_comm_s},
            {"dp_comm", c.dp_comm_s},
            {"block_swap", c.offload_s}}}};
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  const ModelPreset preset = v.has("plan.model")
                                 ? release_preset(resolve_release_model(v.get_text("plan.model")))
                                 : load_model_preset(v.get_text("plan.preset"));
  const Size2D size = v.get_size2d("plan.size");
  const auto device = *train_device_from_string(v.get_text("plan.device"));

  PlanRequest request;
  request.cluster.gpus = static_cast<int>(v.get_int("plan.gpus"));
  request.cluster.gpus_per_node = static_cast<int>(v.get_int("plan.gpus_per_node"));
  request.cluster.gpu_memory_bytes = v.get_real("plan.gpu_mem_gb") * 1e9;
  request.cluster.peak_flops = v.get_real("plan.peak_tflops") * 1e12;
  request.cluster.intra_node_bytes_per_s = v.get_real("plan.intra_node_gbps") * 1e9;
  request.cluster.inter_node_bytes_per_s = v.get_real("plan.inter_node_gbps") * 1e9;
  request.cluster.host_bytes_per_s = v.get_real("plan.host_gbps") * 1e9;
  request.allow_block_swap = v.get_bool("plan.block_swap");
  request.frames = v.get_int("plan.frames");
  request.height = size.height;
  request.width = size.width;
  request.global_batch = v.get_int("plan.global_batch");
  request.max_micro_batch = static_cast<int>(v.get_int("plan.max_micro_batch"));
  request.max_efficiency = v.get_real("plan.max_efficiency");
  request.tp = static_cast<int>(v.get_int("plan.tp"));
  request.cp = static_cast<int>(v.get_int("plan.cp"));
  request.pp = static_cast<int>(v.get_int("plan.pp"));
  request.memory = MemoryOptions::for_device(device, preset);
  const std::string attention = v.get_text("plan.attention");
  if (attention != "auto") request.memory.attention = *attention_kernel_from_string(attention);
  if (!v.get_bool("plan.ema")) request.memory.precision.ema_bytes = 0;
  if (v.has("plan.overhead_gb"))
    request.memory.overhead_bytes = static_cast<int64_t>(v.get_real("plan.overhead_gb") * 1e9);

  const std::string lora_spec = v.get_text("plan.lora");
  std::optional<LoraConfig> lora;
  if (!lora_spec.empty()) {
    lora = parse_lora_config(lora_spec);
    request.memory.adapter_parameters = lora_parameter_count(preset.dit, *lora);
  }

  Plan plan;
  try {
    plan = plan_layouts(preset, request);
  } catch (const Error& e) {
    rethrow_with_flag(e);
  }
  if (plan.fitting.empty()) {
    std::string message = no_fit_message(preset, request, plan);
    if (!lora) {
      // The cheaper setting: adapters on the frozen base, with what it costs.
      PlanRequest adapters = request;
      const LoraConfig suggested = parse_lora_config(kSuggestedLora);
      adapters.memory.adapter_parameters = lora_parameter_count(preset.dit, suggested);
      const Plan with_lora = plan_layouts(preset, adapters);
      if (!with_lora.fitting.empty()) {
        const auto& best = with_lora.fitting.front();
        message += cat("; a LoRA fine-tune fits: ", to_string(best.layout),
                       best.offload_blocks ? " with block swap" : "", " at ", size_text(best.memory.total()),
                       " per GPU, ", best.cost.step_s, " s per step (--lora ", kSuggestedLora,
                       best.offload_blocks ? " --offload blocks" : "", ")");
      }
    }
    throw Error(ErrorCode::out_of_memory, message);
  }

  const int64_t top = v.get_int("plan.top");
  const size_t shown = top == 0 ? plan.fitting.size() : std::min(plan.fitting.size(), size_t(top));
  if (inv.json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < shown; ++i) out.push_back(to_json(plan.fitting[i]));
    std::cout << out.dump(2) << "\n";
    return 0;
  }

  const double mem_gb = request.cluster.gpu_memory_bytes / 1e9;
  std::printf("%s at %lldx%lld, %lld frames: %lld video tokens, %.3g training FLOP per sample (%s)\n",
              preset.name.c_str(), static_cast<long long>(size.width), static_cast<long long>(size.height),
              static_cast<long long>(request.frames), static_cast<long long>(plan.video_tokens),
              plan.flops_per_sample, to_string(device));
  if (lora)
    std::printf("LoRA %s: %lld adapter parameters train on the frozen base (tensor parallel off)\n",
                to_string(*lora).c_str(), static_cast<long long>(request.memory.adapter_parameters));
  const int gpus = request.cluster.gpus;
  std::printf(
      "%d GPU%s (%d per node), global batch %lld: %lld layouts considered, %lld do not fit in %.0f GB\n",
      gpus, gpus == 1 ? "" : "s", std::min(gpus, request.cluster.gpus_per_node),
      static_cast<long long>(plan.global_batch), static_cast<long long>(plan.considered),
      static_cast<long long>(plan.too_large), mem_gb);
  // accum is the micro-batches per step on each replica (the pipeline's m); mem/GPU is the stage needing
  // most; bubble and p2p are the pipeline's share of step_s; recompute full:N recomputes the first N blocks
  // of each stage, full+swap is a LoRA base's block swap.
  std::printf(
      "\n  tp  cp   dp  pp  schedule   zero  recompute  mbs  accum   mem/GPU    step_s  bubble_s   p2p_s    "
      "MFU\n");
  for (size_t i = 0; i < shown; ++i) {
    const auto& p = plan.fitting[i];
    std::printf("%4d %3d %4d %3d  %-9s %5d  %-9s %4d %6lld  %6.1f GB %9.4g %9.3g %7.3g  %5.1f%%\n",
                p.layout.tp, p.layout.cp, p.layout.dp, p.layout.pp, schedule_text(p).c_str(), p.zero,
                recompute_text(p).c_str(), p.micro_batch, static_cast<long long>(p.grad_accumulation),
                double(p.memory.total()) / 1e9, p.cost.step_s, p.cost.pp_bubble_s, p.cost.pp_comm_s,
                100.0 * p.cost.mfu);
  }
  if (shown < plan.fitting.size())
    std::printf("  ... %zu more that fit (--top 0 lists all)\n", plan.fitting.size() - shown);
  const auto& best = plan.fitting.front();
  const auto& m = best.memory;
  const auto& c = best.cost;
  const std::string stage = best.layout.pp > 1
                                ? cat(" (stage ", m.stage, " of ", best.layout.pp, ", ", schedule_text(best),
                                      " over ", best.grad_accumulation, " micro-batches)")
                                : "";
  std::printf("\nbest %s%s: parameters %s, gradients %s, optimizer %s, activations %s, overhead %s\n",
              to_string(best.layout).c_str(), stage.c_str(), size_text(m.parameters).c_str(),
              size_text(m.gradients).c_str(), size_text(m.optimizer).c_str(),
              size_text(m.activations).c_str(), size_text(m.overhead).c_str());
  std::printf(
      "  step %.4g s: compute %.4g s (recompute %.3g s) at %.0f%% of peak, pipeline bubble %.3g s, tp %.3g "
      "s, "
      "cp %.3g s, pp p2p %.3g s, dp %.3g s exposed\n",
      c.step_s, c.compute_s, c.recompute_s, 100.0 * c.efficiency, c.pp_bubble_s, c.tp_comm_s, c.cp_comm_s,
      c.pp_comm_s, c.dp_comm_s);
  if (best.offload_blocks)
    std::printf(
        "  block swap (--offload blocks): two blocks of the frozen base on the GPU; the copies add %.3g s "
        "(%.0f%%) to the step at %.0f GB/s from host memory\n",
        c.offload_s, 100.0 * c.offload_s / (c.step_s - c.offload_s), request.cluster.host_bytes_per_s / 1e9);
  if (best.recompute_blocks > 0 && !best.offload_blocks)
    std::printf(
        "  partial recompute (--recompute full --recompute-blocks %d): the other blocks keep their "
        "activations\n",
        best.recompute_blocks);
  return 0;
}

}  // namespace

Command plan_command() {
  Command c;
  c.words = {"plan"};
  c.summary =
      "parallel layouts (tp, cp, dp, pp and schedule, ZeRO, recompute, micro-batch) that fit, with memory, "
      "step "
      "time and MFU";
  c.usage = "--preset P | --model NAME|DIR --gpus N --gpu-mem-gb G --frames F --size WxH [options]";
  c.define = define;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
