// The memory model and the layout planner: the 720p target on 64 H100s, monotonicity of every knob, clear
// errors for bad input, and the `mugv plan` command run as a user would.
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
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
#include <set>

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
  // bf16, fused attention and norms: 2·(20d + 2f + head_dim) + 4·(6 + 2·heads) + the fp32 RMSNorm copy of the
  // cross-attention's q, 2d.
  o.recompute = Recompute::none;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(11288.0));
  o.recompute = Recompute::selective;  // fused attention keeps no scores: nothing left to drop
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(11288.0));
  o.recompute = Recompute::full;  // only the block input and its LayerNorm statistics
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(2 * 192 + 4 * 2));
  // The unfused norms add the normalised x of both adaLN inputs and q, k normalised (4d), and fp32 copies of
  // q and k (8d bytes): 2·(24d + 2f + head_dim) + 4·(6 + 2·heads) + 10d.
  o.recompute = Recompute::none;
  o.fused_norms = false;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(14360.0));
  // fp32 math attention: the probabilities (heads × sequence, heads × text) replace output + statistics.
  o = options_for(tiny, TrainDevice::cpu, 17, 64, 64);
  o.recompute = Recompute::none;
  const double d = 192, f = 768, h = 4;
  const double expected = 4 * (18 * d + 2 * f + 48 + h * sequence + h * text) + 4 * 6;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(expected));
  o.recompute = Recompute::selective;  // math attention: the self-attention probabilities are recomputed
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) == Approx(expected - 4 * h * sequence));
  o.fused_norms = false;
  CHECK(block_activation_bytes_per_token(tiny.dit, sequence, text, o) ==
        Approx(expected + 4 * 4 * d - 4 * h * sequence));
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
    CHECK(l.at("tp").get<int>() * l.at("cp").get<int>() * l.at("dp").get<int>() * l.at("pp").get<int>() ==
          64);
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

TEST_CASE(
    "pipeline stages: stage 0 holds the embedders, the last the final layer, each the activations its "
    "schedule keeps in flight",
    "[unit][parallel][planner][pipeline]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  const DiTConfig& c = preset.dit;
  MemoryOptions o = options_for(preset, TrainDevice::gpu, 121, 720, 1280);
  o.recompute = Recompute::full;
  o.zero = 1;
  const ParallelLayout layout{4, 1, 4, 4};  // the released recipe's TP 4 x PP 4 on 64 GPUs
  const PipelineShape shape{56, 4, 1};
  o.pp_micro_batches = 16;

  SECTION("parameters, gradients and optimizer state per stage") {
    const int64_t blocks = parameters_per_stage(preset, 4, TextEncoderUse::precomputed, shape, 1);
    CHECK(parameters_per_stage(preset, 4, TextEncoderUse::precomputed, shape, 2) == blocks);
    const int64_t final_layer = dit_final_layer_parameter_count(c);
    const int64_t before = dit_parameter_count(c) - c.depth * dit_block_parameter_count(c) - final_layer;
    CHECK(before > 0);
    CHECK(parameters_per_stage(preset, 4, TextEncoderUse::precomputed, shape, 0) == blocks + before);
    CHECK(parameters_per_stage(preset, 4, TextEncoderUse::precomputed, shape, 3) == blocks + final_layer);
    // A trained text encoder lives on stage 0 only.
    CHECK(parameters_per_stage(preset, 4, TextEncoderUse::trained, shape, 0) ==
          blocks + before + text_encoder_parameter_count(preset.text));
    CHECK(parameters_per_stage(preset, 4, TextEncoderUse::trained, shape, 3) == blocks + final_layer);
    // The stages hold the whole model between them.
    int64_t sum = 0;
    for (int s = 0; s < 4; ++s) sum += parameters_per_stage(preset, 4, TextEncoderUse::precomputed, shape, s);
    CHECK(sum == parameters_per_rank(preset, 4, TextEncoderUse::precomputed));

    const auto s0 = estimate_stage_memory(preset, layout, o, 0),
               s1 = estimate_stage_memory(preset, layout, o, 1);
    CHECK(s0.stage == 0);
    CHECK(s1.stage == 1);
    CHECK(s0.parameters == 2 * (blocks + before));
    CHECK(s1.parameters == 2 * blocks);
    CHECK(s1.gradients == 2 * 2 * blocks);  // bf16, and the data-parallel bucket copy
    // ZeRO-1 over dp 4: 16 bytes of state per parameter / 4, plus the 2 x bf16 gather buffers.
    CHECK(s1.optimizer == (16 * blocks + 3) / 4 + 2 * 2 * blocks);
  }
  SECTION("1F1B: stage s keeps min(pp - s, m) micro-batches of its blocks in flight") {
    auto activations = [&](int stage, int micro_batches) {
      MemoryOptions m = o;
      m.pp_micro_batches = micro_batches;
      return double(estimate_stage_memory(preset, layout, m, stage).activations);
    };
    for (int stage = 0; stage < 3; ++stage) {
      const double one = activations(stage, 1), per_micro_batch = activations(stage, 2) - one;
      CHECK(per_micro_batch > 1e9);  // 14 blocks' inputs of 14 400 tokens, and more
      for (int m : {3, 4, 5, 8, 16, 64}) {
        INFO("stage " << stage << ", m " << m);
        CHECK(activations(stage, m) - one ==
              Approx((std::min(4 - stage, m) - 1) * per_micro_batch).margin(4));
      }
    }
    for (int m : {2, 4, 16}) CHECK(activations(3, m) == activations(3, 1));  // each backward follows at once
  }
  SECTION("interleaved: more in flight on stage 0, more boundaries, the same parameters") {
    const auto one_f = estimate_stage_memory(preset, layout, o, 0);
    MemoryOptions i = o;
    i.pp_virtual_stages = 2;
    const auto interleaved = estimate_stage_memory(preset, layout, i, 0);
    CHECK(interleaved.parameters == one_f.parameters);
    CHECK(interleaved.activations > one_f.activations);
    CHECK(pipeline_in_flight({56, 4, 2}, 0, 16) > pipeline_in_flight({56, 4, 1}, 0, 16));
    i.pp_micro_batches = 6;  // not a multiple of the stages
    CHECK_THROWS_WITH(estimate_memory(preset, layout, i), Catch::Contains("multiple of the pipeline stages"));
  }
  SECTION("estimate_memory reports the stage needing most") {
    const auto worst = estimate_memory(preset, layout, o);
    int64_t most = 0;
    int at = -1;
    for (int s = 0; s < 4; ++s) {
      const auto m = estimate_stage_memory(preset, layout, o, s);
      if (m.total() > most) {
        most = m.total();
        at = s;
      }
    }
    CHECK(worst.total() == most);
    CHECK(worst.stage == at);
    CHECK(at == 0);  // the embedders and the most micro-batches in flight
  }
  SECTION("boundary buffers: tokens over tp x cp, the conditioning whole") {
    const int64_t tokens = 57600, latent_frames = 16;
    const double expected = ((tokens + 2) / 4.0 * 3456 + 18 * 6 * 3456 + 300 * 3456 + 16 * 3456) * 2.0;
    CHECK(pipeline_boundary_bytes_per_sample(c, tokens, latent_frames, layout, 2) == Approx(expected));
    // Stage 0 and the last stage each touch one boundary, the middle ones two: 2 buffers (activation and
    // gradient) each. With one micro-batch per step every stage keeps one in flight, so the stages of 14
    // blocks differ only by their boundaries and what lives before the blocks (stage 0: the fp32 latent input
    // per token and the caption projection per sample) or after them (stage 3: the final adaLN and linear,
    // the prediction, the fp32 target and loss per token), docs/PARALLEL.md.
    MemoryOptions single = o;
    single.pp_micro_batches = 1;
    auto activations = [&](int stage) {
      return double(estimate_stage_memory(preset, layout, single, stage).activations);
    };
    const double tokens_per_rank = (tokens + 2) / 4.0, out = 1 * 2 * 2 * 24;
    const double input = tokens_per_rank * out * 4 + 300 * (2 * 4096 + 4 * 3456) * 2;
    const double output = tokens_per_rank * (3 * 3456 * 2 + out * 2 + 2 * out * 4);
    CHECK(activations(1) == activations(2));
    CHECK(activations(1) - activations(0) == Approx(2 * expected - input).margin(2));
    CHECK(activations(1) - activations(3) == Approx(2 * expected - output).margin(2));
  }
  SECTION("bad pipeline values are refused naming them") {
    CHECK_THROWS_WITH(estimate_stage_memory(preset, layout, o, 4), Catch::Contains("stage 4"));
    CHECK_THROWS_WITH(estimate_memory(preset, ParallelLayout{1, 1, 1, 57}, o), Catch::Contains("56 blocks"));
    CHECK_THROWS_WITH(estimate_memory(preset, ParallelLayout{4, 1, 4, 0}, o), Catch::Contains("pp"));
    o.pp_micro_batches = -1;
    CHECK_THROWS_WITH(estimate_memory(preset, layout, o), Catch::Contains("micro-batches"));
  }
}

TEST_CASE("without pipeline stages the pipeline options change nothing and the planner refuses nothing new",
          "[unit][parallel][planner][pipeline]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  MemoryOptions o = options_for(preset, TrainDevice::gpu, 121, 720, 1280);
  o.recompute = Recompute::selective;
  const auto plain = estimate_memory(preset, {4, 2, 8}, o);
  o.pp_virtual_stages = 3;
  o.pp_micro_batches = 7;
  const auto with_options = estimate_memory(preset, {4, 2, 8}, o);
  CHECK(with_options.total() == plain.total());
  CHECK(with_options.activations == plain.activations);
  CHECK(with_options.stage == 0);
  CHECK(estimate_stage_memory(preset, {4, 2, 8}, o, 0).total() == plain.total());

  // Every tp x cp x dp candidate the rules allow is still considered, once, with 1F1B and no pipeline cost.
  const PlanRequest request = target_request();
  const Plan plan = plan_layouts(preset, request);
  int64_t expected = 0;
  for (int tp : {1, 2, 4, 8})
    for (int cp = 1; tp * cp <= 64; ++cp) {
      if (64 % (tp * cp) != 0 || 48 % (tp * cp) != 0 || plan.video_tokens % cp != 0) continue;
      const int dp = 64 / (tp * cp);
      for (int mbs : {1, 2, 4, 8})
        if (64 % (dp * mbs) == 0) expected += 3 * (dp > 1 ? 2 : 1);  // recompute modes x ZeRO stages
    }
  int64_t fitting_without_pipeline = 0;
  for (const auto& p : plan.fitting) {
    if (p.layout.pp > 1) continue;
    ++fitting_without_pipeline;
    CHECK(p.schedule == PipelineSchedule::one_f_one_b);
    CHECK(p.virtual_stages == 1);
    CHECK(p.cost.pp_bubble_s == 0);
    CHECK(p.cost.pp_comm_s == 0);
    CHECK(p.cost.step_s == Approx(p.cost.compute_s + p.cost.tp_comm_s + p.cost.cp_comm_s + p.cost.dp_comm_s));
  }
  CHECK(fitting_without_pipeline > 0);
  // Considered without a pipeline = all candidates less those with one.
  int64_t pipeline_candidates = 0;
  for (int tp : {1, 2, 4, 8})
    for (int cp = 1; tp * cp <= 64; ++cp) {
      if (64 % (tp * cp) != 0 || 48 % (tp * cp) != 0 || plan.video_tokens % cp != 0) continue;
      const int replicas = 64 / (tp * cp);
      for (int pp = 2; pp <= replicas && pp <= 56; ++pp) {
        if (replicas % pp != 0) continue;
        const int dp = replicas / pp;
        for (int mbs : {1, 2, 4, 8}) {
          if (64 % (dp * mbs) != 0) continue;
          const int m = 64 / (dp * mbs);
          int schedules = 1;  // 1F1B, and interleaved with v = 2..4 chunks that fit the depth
          if (m % pp == 0)
            for (int v = 2; v <= 4 && v * pp <= 56; ++v) ++schedules;
          pipeline_candidates += 3 * (dp > 1 ? 2 : 1) * schedules;
        }
      }
    }
  // Plus the partial recomputes, tried only where they fit (where every block's activations do not and
  // every block recomputed does).
  const auto partial = std::count_if(plan.fitting.begin(), plan.fitting.end(),
                                     [](const PlannedLayout& p) { return p.recompute_blocks > 0; });
  CHECK(partial > 0);
  CHECK(plan.considered == expected + pipeline_candidates + partial);
  // A pipeline-free estimate_step accepts any accumulation, as before.
  PlanRequest odd = request;
  odd.global_batch = 64 * 3;
  CHECK_NOTHROW(estimate_step(preset, odd, {4, 2, 8}, 1, Recompute::full, 1));
  CHECK_THROWS_WITH(estimate_step(preset, odd, {4, 2, 8}, 1, Recompute::full, 1, 2),
                    Catch::Contains("needs pipeline stages"));
}

TEST_CASE("the step model: bubble = compute x (pp - 1) / (v x m), point-to-point per boundary crossing",
          "[unit][parallel][planner][pipeline]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  const PlanRequest request = target_request();  // global batch 64
  const ParallelLayout layout{4, 1, 4, 4};
  // m = 64 / (dp 4 x micro-batch 1) = 16 micro-batches per step on each replica.
  const auto one_f = estimate_step(preset, request, layout, 1, Recompute::full, 1);
  const auto interleaved = estimate_step(preset, request, layout, 1, Recompute::full, 1, 2);
  CHECK(one_f.pp_bubble_s == Approx(one_f.compute_s * 3.0 / 16.0));
  CHECK(interleaved.pp_bubble_s == Approx(interleaved.compute_s * 3.0 / 32.0));
  CHECK(interleaved.compute_s == Approx(one_f.compute_s));
  for (const auto& s : {one_f, interleaved})
    CHECK(s.step_s ==
          Approx(s.compute_s + s.pp_bubble_s + s.tp_comm_s + s.cp_comm_s + s.pp_comm_s + s.dp_comm_s));
  // Each micro-batch's activations cross a boundary forward and their gradients back, per chunk: neighbours
  // are tp·cp·dp = 16 ranks apart, on other nodes, so at the inter-node bandwidth.
  const double bytes = pipeline_boundary_bytes_per_sample(preset.dit, 57600, 16, layout, 2);
  CHECK(one_f.pp_comm_s == Approx(16 * 2 * (bytes / 50e9 + 15e-6)));
  CHECK(interleaved.pp_comm_s == Approx(2 * one_f.pp_comm_s));
  // On one node the neighbours share NVLink.
  PlanRequest node = target_request(8);
  const auto inside = estimate_step(preset, node, ParallelLayout{2, 1, 1, 4}, 0, Recompute::full, 1);
  const double inside_bytes = pipeline_boundary_bytes_per_sample(preset.dit, 57600, 16, {2, 1, 1, 4}, 2);
  CHECK(inside.pp_comm_s == Approx(8 * 2 * (inside_bytes / 450e9 + 15e-6)));
  CHECK(inside.pp_bubble_s == Approx(inside.compute_s * 3.0 / 8.0));
  // The stages divide the work: per GPU the same compute as the same GPUs without a pipeline.
  const auto flat = estimate_step(preset, request, ParallelLayout{4, 1, 16}, 1, Recompute::full, 1);
  CHECK(one_f.compute_s == Approx(flat.compute_s));
  // Uneven stages wait for the largest: 56 blocks over 16 stages is 4 on some, 3.5 on average.
  PlanRequest wide = target_request();
  const auto uneven = estimate_step(preset, wide, ParallelLayout{4, 1, 1, 16}, 0, Recompute::full, 1);
  CHECK(uneven.compute_s == Approx(flat.compute_s * 16 * 4 / 56.0));
  // More micro-batches: a smaller bubble.
  PlanRequest bigger = request;
  bigger.global_batch = 256;
  const auto longer = estimate_step(preset, bigger, layout, 1, Recompute::full, 1);
  CHECK(longer.pp_bubble_s / longer.compute_s < one_f.pp_bubble_s / one_f.compute_s);
  CHECK_NOTHROW(estimate_step(preset, request, layout, 1, Recompute::full, 4, 2));  // m = 64 / (4 x 4) = 4
  CHECK_THROWS_WITH(estimate_step(preset, request, layout, 1, Recompute::full, 8, 2),
                    Catch::Contains("multiple of the pipeline stages"));  // m = 64 / (4 x 8) = 2
}

TEST_CASE("mugv-10b at 720p on 16 GPUs of 32 GB: no layout fits without pipeline stages, some with them",
          "[unit][parallel][planner][pipeline]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  PlanRequest request = target_request(16);
  request.cluster.gpu_memory_bytes = 32e9;
  const Plan plan = plan_layouts(preset, request);
  REQUIRE_FALSE(plan.fitting.empty());
  for (const auto& p : plan.fitting) {
    CHECK(p.layout.pp > 1);
    CHECK(p.layout.world() == 16);
    CHECK(p.memory.total() <= 32e9);
    CHECK(p.grad_accumulation * p.layout.dp * p.micro_batch == plan.global_batch);
  }
  // Without a pipeline the best a GPU can do is tp 8 with ZeRO over dp 2: still over 32 GB.
  MemoryOptions o = request.memory;
  o.frames = 121;
  o.height = 720;
  o.width = 1280;
  o.recompute = Recompute::full;
  o.zero = 1;
  CHECK(estimate_memory(preset, {8, 1, 2}, o).total() > int64_t(32e9));
  CHECK(estimate_memory(preset, {8, 1, 1, 2}, o).total() < int64_t(32e9));
}

TEST_CASE("mugv plan shows pipeline stages, their schedule, bubble and point-to-point time",
          "[cli][parallel][planner][pipeline]") {
  TempDir home;
  const std::string small = "plan --preset mugv-10b --gpus 16 --gpu-mem-gb 32 --frames 121 --size 1280x720";
  const auto table = run_mugv(small, home);
  INFO(table.err);
  REQUIRE(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::Contains("pp  schedule") && Catch::Contains("bubble_s") &&
                            Catch::Contains("p2p_s") && Catch::Contains("pipeline bubble") &&
                            Catch::Contains("pp p2p") && Catch::Contains("(stage 0 of "));

  const auto json = run_mugv(small + " --json --top 0", home);
  REQUIRE(json.exit_code == 0);
  const auto layouts = nlohmann::json::parse(json.out);
  REQUIRE(!layouts.empty());
  bool interleaved = false;
  for (const auto& l : layouts) {
    const int pp = l.at("pp").get<int>(), v = l.at("virtual_stages").get<int>();
    const auto m = l.at("grad_accumulation").get<int64_t>();
    CHECK(pp > 1);
    CHECK(l.at("tp").get<int>() * l.at("cp").get<int>() * l.at("dp").get<int>() * pp == 16);
    CHECK(l.at("layout").get<std::string>().find(".pp" + std::to_string(pp)) != std::string::npos);
    CHECK(l.at("schedule").get<std::string>() == (v > 1 ? "interleaved" : "1f1b"));
    interleaved = interleaved || v > 1;
    const auto& t = l.at("time_s");
    CHECK(t.at("pp_bubble").get<double>() ==
          Approx(t.at("compute").get<double>() * (pp - 1) / (double(v) * double(m))));
    CHECK(t.at("pp_comm").get<double>() > 0);
    CHECK(l.at("memory_stage").get<int>() >= 0);
    CHECK(l.at("memory_stage").get<int>() < pp);
  }
  CHECK(interleaved);
}

TEST_CASE("mugv plan --tp --cp --pp prices only the layouts asked for; interleaving tries 2 to 4 chunks",
          "[cli][parallel][planner][pipeline]") {
  TempDir home;
  // The release's layout on 64 GPUs: tensor parallel 4, pipeline 4 (dp 4 follows).
  const std::string release =
      "plan --preset mugv-10b --gpus 64 --frames 121 --size 1280x720 --tp 4 --cp 1 --pp 4 --json --top 0";
  const auto json = run_mugv(release, home);
  INFO(json.err);
  REQUIRE(json.exit_code == 0);
  const auto layouts = nlohmann::json::parse(json.out);
  REQUIRE(!layouts.empty());
  std::set<int> chunks;
  for (const auto& l : layouts) {
    CHECK(l.at("tp") == 4);
    CHECK(l.at("cp") == 1);
    CHECK(l.at("pp") == 4);
    CHECK(l.at("dp") == 4);
    chunks.insert(l.at("virtual_stages").get<int>());
  }
  CHECK(chunks.count(1) == 1);  // 1F1B
  CHECK(chunks.count(2) + chunks.count(3) + chunks.count(4) >= 1);
  for (int v : chunks) CHECK(v <= 4);

  // A layout no GPU count allows is named with the rules, not mistaken for a batch problem.
  const auto impossible =
      run_mugv("plan --preset mugv-10b --gpus 64 --frames 121 --size 1280x720 --pp 5", home);
  CHECK(impossible.exit_code == 1);
  CHECK_THAT(impossible.err, Catch::Contains("has pp 5") && Catch::Contains("at most the depth"));
  const auto negative = run_mugv("plan --preset mugv-10b --gpus 64 --tp -1", home);
  CHECK(negative.exit_code == 2);
  CHECK_THAT(negative.err, Catch::Contains("--tp"));
}

TEST_CASE("the interleaved schedule is tried with every chunk count from 2 to 4 that fits the depth",
          "[unit][parallel][planner][pipeline]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  PlanRequest r = target_request();
  r.tp = 4;
  r.cp = 1;
  r.pp = 4;
  const Plan plan = plan_layouts(preset, r);
  std::set<int> chunks;
  for (const auto& p : plan.fitting) {
    CHECK(p.layout.tp == 4);
    CHECK(p.layout.pp == 4);
    if (p.schedule == PipelineSchedule::interleaved) {
      chunks.insert(p.virtual_stages);
      // More chunks, smaller bubble: compute × (pp − 1) / (v · m).
      CHECK(p.cost.pp_bubble_s ==
            Approx(p.cost.compute_s * 3.0 / (double(p.virtual_stages) * double(p.grad_accumulation))));
    }
  }
  CHECK(chunks == std::set<int>{2, 3, 4});
}

TEST_CASE(
    "partial recompute: memory falls with each recomputed block, and the planner takes the fewest that fit",
    "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  MemoryOptions o = options_for(preset, TrainDevice::gpu, 121, 720, 1280);
  o.zero = 1;
  const ParallelLayout layout{4, 4, 4};  // 56 blocks in one stage
  o.recompute = Recompute::none;
  const auto kept = estimate_memory(preset, layout, o);
  o.recompute = Recompute::full;
  const auto all = estimate_memory(preset, layout, o);
  o.recompute_blocks = 56;
  CHECK(estimate_memory(preset, layout, o).total() == all.total());
  o.recompute_blocks = 500;  // more than the stage holds: all of them
  CHECK(estimate_memory(preset, layout, o).total() == all.total());
  // One recomputed block saves nothing: its activations come back as the working set of its backward.
  o.recompute_blocks = 1;
  CHECK(estimate_memory(preset, layout, o).total() == kept.total());
  int64_t previous = kept.total();
  std::vector<int64_t> by_blocks{previous};
  for (int n = 2; n < 56; ++n) {
    o.recompute_blocks = n;
    const int64_t total = estimate_memory(preset, layout, o).total();
    CHECK(total < previous);
    CHECK(total > all.total());
    by_blocks.push_back(total);
    previous = total;
  }
  // Each recomputed block saves the same bytes (after the first, which also adds the recompute's working
  // set).
  CHECK(by_blocks[1] - by_blocks[2] == by_blocks[30] - by_blocks[31]);
  o.recompute_blocks = -1;
  CHECK_THROWS_WITH(estimate_memory(preset, layout, o), Catch::Contains("recomputed blocks"));

  // The planner's partial candidates fit with their count and would not with one block fewer; their
  // recompute time lies between none and all blocks on the same layout.
  const PlanRequest request = target_request();
  const Plan plan = plan_layouts(preset, request);
  int partial = 0;
  for (const auto& p : plan.fitting) {
    if (p.recompute_blocks == 0) continue;
    ++partial;
    CHECK(p.recompute == Recompute::full);
    CHECK(recompute_description(p) == cat("full, first ", p.recompute_blocks, " blocks of each stage"));
    MemoryOptions m = request.memory;
    m.frames = 121;
    m.height = 720;
    m.width = 1280;
    m.micro_batch = p.micro_batch;
    m.zero = p.zero;
    m.recompute = Recompute::full;
    m.pp_virtual_stages = p.virtual_stages;
    m.pp_micro_batches = int(p.grad_accumulation);
    m.recompute_blocks = p.recompute_blocks;
    CHECK(double(estimate_memory(preset, p.layout, m).total()) <= request.cluster.gpu_memory_bytes);
    m.recompute_blocks = p.recompute_blocks - 1;
    if (m.recompute_blocks > 0)
      CHECK(double(estimate_memory(preset, p.layout, m).total()) > request.cluster.gpu_memory_bytes);
    StepChoice all_blocks;
    all_blocks.zero = p.zero;
    all_blocks.recompute = Recompute::full;
    all_blocks.micro_batch = p.micro_batch;
    all_blocks.virtual_stages = p.virtual_stages;
    const StepCost full_cost = estimate_step(preset, request, p.layout, all_blocks);
    CHECK(p.cost.recompute_s > 0);
    CHECK(p.cost.recompute_s < full_cost.recompute_s);
    CHECK(p.cost.step_s < full_cost.step_s);
  }
  CHECK(partial > 0);
}

TEST_CASE("block swap: a LoRA base that does not fit one GPU is planned with its blocks in host memory",
          "[unit][parallel][planner]") {
  const ModelPreset preset = load_model_preset("mugv-10b");
  PlanRequest request = target_request(1);
  request.cluster.gpu_memory_bytes = 24e9;  // one 24 GB card
  request.frames = 17;
  request.height = 256;
  request.width = 256;
  request.memory.adapter_parameters =
      lora_parameter_count(preset.dit, parse_lora_config("rank=16,targets=attn,cross,mlp"));
  const Plan plan = plan_layouts(preset, request);
  REQUIRE_FALSE(plan.fitting.empty());
  for (const auto& p : plan.fitting) CHECK(p.offload_blocks);  // the base's bf16 weights alone are 20 GB
  const auto& best = plan.fitting.front();
  CHECK(best.recompute == Recompute::full);
  CHECK(recompute_description(best) == "full, block swap");
  CHECK(best.cost.offload_s >= 0);
  CHECK(best.cost.step_s == Approx(best.cost.compute_s + best.cost.offload_s + best.cost.dp_comm_s));

  // The device holds two blocks of the base instead of 56.
  MemoryOptions o = request.memory;
  o.frames = 17;
  o.height = 256;
  o.width = 256;
  o.recompute = Recompute::full;
  const auto kept = estimate_memory(preset, ParallelLayout{1, 1, 1}, o);
  o.offload_blocks = true;
  const auto swapped = estimate_memory(preset, ParallelLayout{1, 1, 1}, o);
  CHECK(kept.parameters - swapped.parameters == 54 * dit_block_parameter_count(preset.dit) * 2);
  CHECK(swapped.activations == kept.activations);  // full recompute either way
  // A slow host link exposes the copies: the step grows and the block swap's share says by how much.
  PlanRequest slow = request;
  slow.cluster.host_bytes_per_s = 1e9;
  StepChoice swap;
  swap.recompute = Recompute::full;
  swap.offload_blocks = true;
  const StepCost fast_cost = estimate_step(preset, request, ParallelLayout{1, 1, 1}, swap);
  const StepCost slow_cost = estimate_step(preset, slow, ParallelLayout{1, 1, 1}, swap);
  CHECK(slow_cost.offload_s > fast_cost.offload_s);
  CHECK(slow_cost.offload_s > 0);
  CHECK(slow_cost.compute_s == Approx(fast_cost.compute_s));

  // Without adapters, or with the model split, there is no block swap.
  o.adapter_parameters = -1;
  CHECK_THROWS_WITH(estimate_memory(preset, ParallelLayout{1, 1, 1}, o), Catch::Contains("LoRA adapters"));
  PlanRequest full_model = request;
  full_model.memory.adapter_parameters = -1;
  CHECK_THROWS_WITH(estimate_step(preset, full_model, ParallelLayout{1, 1, 1}, swap),
                    Catch::Contains("LoRA adapters"));
  request.allow_block_swap = false;
  CHECK(plan_layouts(preset, request).fitting.empty());

  TempDir home;
  auto text = run_mugv(
      "plan --preset mugv-10b --gpus 1 --gpu-mem-gb 24 --frames 17 --size 256x256 --lora "
      "rank=16,targets=attn,cross,mlp",
      home);
  INFO(text.err);
  CHECK(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("full+swap") && Catch::Contains("block swap (--offload blocks)"));
  auto none = run_mugv(
      "plan --preset mugv-10b --gpus 1 --gpu-mem-gb 24 --frames 17 --size 256x256 --lora "
      "rank=16,targets=attn,cross,mlp --no-block-swap",
      home);
  CHECK(none.exit_code == 1);
  CHECK_THAT(none.err, Catch::Contains("the smallest needs"));
}
