// The memory model and the layout planner: the 720p target on 64 H100s, monotonicity of every knob, clear
// errors for bad input, and the `mugv plan` command run as a user would.
#include "core/error.h"
#include "core/paths.h"
#include "model/config.h"
#include "model/info.h"
#include "model/lora_spec.h"
#include "parallel/memory_model.h"
#include "parallel/planner.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>

using namespace mugv;
using mugv::test::TempDir;

namespace {

// 720p, 5 s at 24 fps: 121 frames (121 mod 8 == 1, so the VAE repeats frame 0 to fill the first chunk).
PlanRequest target_request(int gpus = 64) {
  PlanRequest r;
  r.cluster.gpus = gpus;
  r.cluster.gpus_per_node = 8;
  r.cluster.gpu_memory_bytes = 80e9;
  r.frames = 121;
  r.height = 720;
  r.width = 1280;
  r.memory = MemoryOptions::for_device(TrainDevice::gpu, load_model_preset("mugv-10b"));
  return r;
}

MemoryOptions options_for(const ModelPreset& preset, TrainDevice device, int64_t frames, int64_t height,
                          int64_t width) {
  MemoryOptions o = MemoryOptions::for_device(device, preset);
  o.frames = frames;
  o.height = height;
  o.width = width;
  return o;
}

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

RunResult run_mugv(const std::string& args, const TempDir& home) {
  static int counter = 0;
  const fs::path err_file = home / ("stderr-" + std::to_string(counter++) + ".txt");
  const std::string cmd = "MUGV_HOME=" + quote(home.path().string()) + " " +
                          quote((test::binary_dir() / "bin/mugv").string()) + " " + args + " 2>" +
                          quote(err_file.string());
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text_file(err_file);
  return r;
}

}  // namespace

TEST_CASE("mugv-10b at 720p, 5 s fits on 64 80 GB GPUs with a plausible MFU", "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  const PlanRequest request = target_request();
  const Plan plan = plan_layouts(preset, request);

  CHECK(plan.video_tokens == 16 * 45 * 80);  // latent 16 x 90 x 160, patch 1 x 2 x 2
  REQUIRE(!plan.fitting.empty());
  CHECK(plan.too_large > 0);
  CHECK(plan.considered == plan.too_large + int64_t(plan.fitting.size()));
  const PlannedLayout& best = plan.fitting.front();
  CHECK(best.memory.total() <= 80e9);
  CHECK(best.cost.mfu >= 0.20);
  CHECK(best.cost.mfu <= 0.60);
  for (size_t i = 0; i < plan.fitting.size(); ++i) {
    const auto& p = plan.fitting[i];
    CHECK(p.layout.world() == 64);
    CHECK(8 % p.layout.tp == 0);
    CHECK(preset.dit.heads % (p.layout.tp * p.layout.cp) == 0);
    CHECK(plan.video_tokens % p.layout.cp == 0);
    CHECK(p.grad_accumulation * p.layout.dp * p.micro_batch == plan.global_batch);
    CHECK(p.memory.total() <= 80e9);
    if (i > 0) CHECK(plan.fitting[i - 1].cost.step_s <= p.cost.step_s);
  }

  // Plain data parallel keeps ~11 B bf16 weights, their gradients and fp32 optimizer state on every GPU:
  // far beyond 80 GB before a single activation.
  MemoryOptions o = request.memory;
  o.frames = 121;
  o.height = 720;
  o.width = 1280;
  const MemoryBreakdown naive = estimate_memory(preset, {1, 1, 64}, o);
  CHECK(naive.parameters + naive.gradients + naive.optimizer > int64_t(150e9));
  CHECK(naive.total() > int64_t(80e9));
}

TEST_CASE("per-token activation bytes of one block follow docs/PARALLEL.md", "[unit][parallel][planner]") {
  const ModelPreset tiny = load_model_preset("tiny");  // d 192, 4 heads x 48, MLP 768
  MemoryOptions o = options_for(tiny, TrainDevice::gpu, 17, 64, 64);
  const int64_t sequence = 82, text = 32;
  // bf16, fused: 2·(24d + 2f + head_dim) + 4·(6 + 2·heads) + fp32 RMSNorm copies 10d.
  o.recompute = Recompute::none;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(14360.0));
  o.recompute = Recompute::selective;  // fused attention keeps no scores: nothing left to drop
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(14360.0));
  o.recompute = Recompute::full;  // only the block input and its LayerNorm statistics
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(2 * 192 + 4 * 2));
  // fp32 math attention: the probabilities (heads × sequence, heads × text) replace output + statistics.
  o = options_for(tiny, TrainDevice::cpu, 17, 64, 64);
  o.recompute = Recompute::none;
  const double d = 192, f = 768, h = 4;
  const double expected = 4 * (22 * d + 2 * f + 48 + h * sequence + h * text) + 4 * 6;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(expected));
  o.recompute = Recompute::selective;  // math attention: the self-attention probabilities are recomputed
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(expected - 4 * h * sequence));
}

TEST_CASE("more recompute: less activation memory, more time", "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  const PlanRequest request = target_request();
  const ParallelLayout layout{4, 4, 4};
  int64_t last_activations = INT64_MAX;
  double last_step = 0;
  for (Recompute r : {Recompute::none, Recompute::selective, Recompute::full}) {
    MemoryOptions o = request.memory;
    o.frames = 121;
    o.height = 720;
    o.width = 1280;
    o.recompute = r;
    o.attention =
        AttentionKernel::math;  // selective recompute drops the stored scores (a fused kernel keeps none)
    const auto memory = estimate_memory(preset, layout, o);
    const auto cost = estimate_step(preset, request, layout, 1, r, 1);
    INFO(to_string(r));
    CHECK(memory.activations < last_activations);
    CHECK(cost.step_s > last_step);
    CHECK((r == Recompute::none) == (cost.recompute_s == 0));
    last_activations = memory.activations;
    last_step = cost.step_s;
  }
}

TEST_CASE("ZeRO-1, tensor, context parallel and micro-batch move memory the right way",
          "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  MemoryOptions o = options_for(preset, TrainDevice::gpu, 121, 720, 1280);
  o.recompute = Recompute::full;

  SECTION("ZeRO-1 shards only the optimizer state over dp (and adds its gather buffer)") {
    o.zero = 0;
    const auto replicated = estimate_memory(preset, {4, 2, 8}, o);
    o.zero = 1;
    const auto sharded = estimate_memory(preset, {4, 2, 8}, o);
    CHECK(sharded.optimizer < replicated.optimizer);
    // The state divided by dp (a ceil of an exact division), plus the buffer the updated weights are gathered
    // into.
    const int64_t gather_buffer = 2 * sharded.parameters;
    CHECK((sharded.optimizer - gather_buffer) * 8 >= replicated.optimizer);
    CHECK((sharded.optimizer - gather_buffer) * 8 - replicated.optimizer < 8);
    CHECK(sharded.parameters == replicated.parameters);
    CHECK(sharded.gradients == replicated.gradients);
  }
  SECTION("larger tp: fewer parameters per GPU, and fewer activations") {
    int64_t last_params = INT64_MAX, last_acts = INT64_MAX;
    for (int tp : {1, 2, 4, 8}) {
      const auto m = estimate_memory(preset, {tp, 1, 64 / tp}, o);
      INFO("tp " << tp);
      CHECK(m.parameters < last_params);
      CHECK(m.activations < last_acts);
      last_params = m.parameters;
      last_acts = m.activations;
    }
    // Embedders, norms and tables stay whole on every rank, so tp 8 holds a bit more than an eighth.
    const auto one = estimate_memory(preset, {1, 1, 64}, o), eight = estimate_memory(preset, {8, 1, 8}, o);
    CHECK(eight.parameters * 8 > one.parameters);
    CHECK(eight.parameters * 7 < one.parameters);
  }
  SECTION("larger cp: fewer activations, the same parameters") {
    const auto cp1 = estimate_memory(preset, {4, 1, 16}, o), cp4 = estimate_memory(preset, {4, 4, 4}, o);
    CHECK(cp4.activations < cp1.activations);
    CHECK(cp4.parameters == cp1.parameters);
  }
  SECTION("micro-batch scales activations, not state") {
    const auto one = estimate_memory(preset, {4, 4, 4}, o);
    o.micro_batch = 2;
    const auto two = estimate_memory(preset, {4, 4, 4}, o);
    CHECK(two.activations == Approx(2.0 * double(one.activations)).epsilon(1e-6));
    CHECK(two.parameters + two.optimizer == one.parameters + one.optimizer);
  }
  SECTION("math attention saves the scores that the fused kernel never stores") {
    o.recompute = Recompute::none;
    const auto fused = estimate_memory(preset, {4, 4, 4}, o);
    o.attention = AttentionKernel::math;
    const auto math = estimate_memory(preset, {4, 4, 4}, o);
    CHECK(math.activations > 10 * fused.activations);  // 48 heads x 57 602 tokens of scores per token
  }
}

TEST_CASE("the cpu device counts fp32 weights, gradients, Adam and EMA with no master copy",
          "[unit][parallel][planner]") {
  const ModelPreset tiny = load_model_preset("tiny");
  MemoryOptions o = options_for(tiny, TrainDevice::cpu, 17, 64, 64);
  CHECK(o.text_encoder ==
        TextEncoderUse::trained);  // `mugv train` trains the small text encoder with the DiT
  const int64_t n = dit_parameter_count(tiny.dit) + text_encoder_parameter_count(tiny.text);
  const auto m = estimate_memory(tiny, {1, 1, 1}, o);
  CHECK(m.parameters == 4 * n);
  CHECK(m.gradients == 4 * n);
  CHECK(m.optimizer == 12 * n);  // m, v, EMA
  CHECK(m.overhead == 300 << 20);
  CHECK(m.activations > 0);
  o.micro_batch = 8;
  const auto batch8 = estimate_memory(tiny, {1, 1, 1}, o);
  CHECK(batch8.total() < int64_t(2e9));  // the tiny preset trains on a laptop
  // The GPU case for comparison: bf16 weights and gradients, fp32 master + m + v + EMA.
  MemoryOptions g = options_for(tiny, TrainDevice::gpu, 17, 64, 64);
  const auto gm = estimate_memory(tiny, {1, 1, 1}, g);
  CHECK(gm.parameters == 2 * n);
  CHECK(gm.optimizer == 16 * n);
}

TEST_CASE("bad planner inputs are refused naming the value", "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  SECTION("GPUs that do not fill whole nodes") {
    PlanRequest r = target_request(12);
    auto e = test::expect_error([&] { (void)plan_layouts(preset, r); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("12 GPUs") && Catch::Contains("8 GPUs per node"));
  }
  SECTION("a size that is not whole patches") {
    PlanRequest r = target_request();
    r.height = 712;  // a multiple of 8 (the VAE) but not of 16 (VAE x patch)
    CHECK_THROWS_WITH(plan_layouts(preset, r), Catch::Contains("height 712 is not a multiple of 16"));
    r.height = 720;
    r.width = 1276;
    CHECK_THROWS_WITH(plan_layouts(preset, r), Catch::Contains("width 1276"));
  }
  SECTION("frames the VAE cannot chunk") {
    PlanRequest r = target_request();
    r.frames = 122;
    CHECK_THROWS_WITH(plan_layouts(preset, r), Catch::Contains("frames 122"));
  }
  SECTION("an unknown preset") {
    auto e = test::expect_error([] { (void)load_model_preset("mugv-11b"); });
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.what(), Catch::Contains("mugv-11b"));
  }
  SECTION("a layout the heads or tokens cannot take") {
    MemoryOptions o = options_for(preset, TrainDevice::gpu, 121, 720, 1280);
    CHECK_THROWS_WITH(estimate_memory(preset, {5, 1, 1}, o), Catch::Contains("48 attention heads"));
    CHECK_THROWS_WITH(estimate_step(preset, target_request(), {4, 1, 15}, 0, Recompute::none, 1),
                      Catch::Contains("world size 64"));
    o.micro_batch = 0;
    CHECK_THROWS_WITH(estimate_memory(preset, {1, 1, 1}, o), Catch::Contains("micro-batch"));
  }
}

TEST_CASE("when nothing fits the message names the smallest requirement", "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  PlanRequest r = target_request(8);
  r.cluster.gpu_memory_bytes = 16e9;
  const Plan plan = plan_layouts(preset, r);
  CHECK(plan.fitting.empty());
  REQUIRE(plan.smallest);
  CHECK(plan.too_large == plan.considered);
  CHECK(plan.smallest->memory.total() > int64_t(16e9));
  const std::string message = no_fit_message(preset, r, plan);
  CHECK_THAT(message, Catch::Contains("16.0 GB") && Catch::Contains("smallest needs") &&
                          Catch::Contains(to_string(plan.smallest->layout)));
}

TEST_CASE("mugv plan lists fitting layouts as a table and as JSON", "[cli][parallel][planner]") {
  TempDir home;
  const std::string target = "plan --preset mugv-10b --gpus 64 --gpu-mem-gb 80 --frames 121 --size 1280x720";
  const auto table = run_mugv(target, home);
  INFO(table.err);
  REQUIRE(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::Contains("57600 video tokens") && Catch::Contains("do not fit in 80 GB") &&
                            Catch::Contains("mem/GPU") && Catch::Contains("MFU"));

  const auto json = run_mugv(target + " --json --top 3", home);
  REQUIRE(json.exit_code == 0);
  const auto layouts = nlohmann::json::parse(json.out);
  REQUIRE(layouts.is_array());
  REQUIRE(layouts.size() == 3);
  for (const auto& l : layouts) {
    CHECK(l.at("tp").get<int>() * l.at("cp").get<int>() * l.at("dp").get<int>() == 64);
    CHECK(l.at("memory_gb").get<double>() <= 80.0);
    const auto& m = l.at("memory_bytes");
    CHECK(m.at("parameters").get<int64_t>() + m.at("gradients").get<int64_t>() +
              m.at("optimizer").get<int64_t>() + m.at("activations").get<int64_t>() +
              m.at("overhead").get<int64_t>() ==
          m.at("total").get<int64_t>());
  }
  CHECK(layouts[0].at("mfu").get<double>() >= 0.2);
  CHECK(layouts[0].at("mfu").get<double>() <= 0.6);
  CHECK(layouts[0].at("step_s").get<double>() <= layouts[2].at("step_s").get<double>());

  // The CPU case for comparing with a measured run: fp32 weights (4 bytes each).
  const auto cpu = run_mugv("plan --preset tiny --gpus 1 --frames 17 --size 64x64 --device cpu --json", home);
  REQUIRE(cpu.exit_code == 0);
  const auto tiny = load_model_preset("tiny");
  const int64_t n = dit_parameter_count(tiny.dit) + text_encoder_parameter_count(tiny.text);
  CHECK(nlohmann::json::parse(cpu.out).at(0).at("memory_bytes").at("parameters").get<int64_t>() == 4 * n);
}

TEST_CASE("mugv plan: bad values and no fit are one-line failures naming the problem",
          "[cli][parallel][planner]") {
  TempDir home;
  auto uneven = run_mugv("plan --gpus 12 --frames 121 --size 1280x720", home);
  CHECK(uneven.exit_code == 1);
  CHECK_THAT(uneven.err, Catch::Contains("--gpus") && Catch::Contains("12 GPUs"));

  auto size = run_mugv("plan --gpus 8 --size 1280x712", home);
  CHECK(size.exit_code == 1);
  CHECK_THAT(size.err, Catch::Contains("--size") && Catch::Contains("712"));

  auto preset = run_mugv("plan --preset mugv-11b", home);
  CHECK(preset.exit_code == 1);
  CHECK_THAT(preset.err, Catch::Contains("mugv-11b"));

  auto no_fit = run_mugv("plan --gpus 8 --gpu-mem-gb 16", home);
  CHECK(no_fit.exit_code == 1);
  CHECK_THAT(no_fit.err,
             Catch::Contains("no layout of mugv-10b fits in 16.0 GB") && Catch::Contains("smallest needs"));
  CHECK(std::count(no_fit.err.begin(), no_fit.err.end(), '\n') == 1);

  auto usage = run_mugv("plan --device tpu", home);
  CHECK(usage.exit_code == 2);
  CHECK_THAT(usage.err, Catch::Contains("--device"));
}

TEST_CASE(
    "LoRA plans: adapters on a frozen base take less memory and compute, tp stays 1, and the planner "
    "proposes it when a full fine-tune fits nowhere",
    "[cli][parallel][planner][lora]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  PlanRequest full = target_request(8);
  full.frames = 17;
  full.height = 256;
  full.width = 256;
  PlanRequest lora = full;
  lora.memory.adapter_parameters =
      lora_parameter_count(preset.dit, parse_lora_config("rank=16,targets=attn,mlp"));
  CHECK(lora.memory.adapter_parameters ==
        16 * 56 * ((3456 + 3 * 3456) + (3456 + 3456) + 2 * (3456 + 4 * 3456)));
  MemoryOptions o = lora.memory;
  o.frames = 17;
  o.height = 256;
  o.width = 256;
  const auto with_adapters = estimate_memory(preset, ParallelLayout{1, 1, 8}, o);
  o.adapter_parameters = -1;
  const auto without = estimate_memory(preset, ParallelLayout{1, 1, 8}, o);
  CHECK(with_adapters.gradients < without.gradients / 100);
  CHECK(with_adapters.optimizer < without.optimizer / 100);
  CHECK(with_adapters.total() < without.total());
  o.adapter_parameters = 1000;
  CHECK_THROWS_WITH(estimate_memory(preset, ParallelLayout{2, 1, 4}, o), Catch::Contains("tp = 1"));
  const Plan plan = plan_layouts(preset, lora);
  REQUIRE_FALSE(plan.fitting.empty());
  for (const auto& p : plan.fitting) CHECK(p.layout.tp == 1);
  CHECK(estimate_step(preset, lora, ParallelLayout{1, 1, 8}, 0, Recompute::none, 1).compute_s <
        estimate_step(preset, full, ParallelLayout{1, 1, 8}, 0, Recompute::none, 1).compute_s);

  TempDir home;
  const std::string one_gpu = "plan --preset mugv-10b --gpus 1 --gpu-mem-gb 80 --frames 17 --size 256x256";
  auto no_fit = run_mugv(one_gpu, home);
  CHECK(no_fit.exit_code == 1);
  CHECK_THAT(no_fit.err, Catch::Contains("a LoRA fine-tune fits") && Catch::Contains("--lora rank=16"));
  auto fits = run_mugv(one_gpu + " --lora rank=16,targets=attn,cross,mlp", home);
  INFO(fits.err);
  CHECK(fits.exit_code == 0);
  CHECK_THAT(fits.out, Catch::Contains("adapter parameters train on the frozen base"));
}
