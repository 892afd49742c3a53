// mugv-device-check: the correctness checks of the GPU path (scripts/gpu-check.sh), runnable on any device so
// that the same code is exercised on CPU in CI and on CUDA where a GPU is present. Each check prints one JSON
// line {"check", "device", "ok", ...its measurements..., "error"} and the exit status is 0 only when every
// check selected passed.
//
//   mugv-device-check [--device cpu|cuda] [--golden-dir DIR] [--steps N] [--work DIR] [--only a,b,...]
//                     [--skip a,b,...]
//
// Checks (all by default):
//   golden_fp32    the released DiT's golden calls (../shared/data/golden, README there) on the device, fp32:
//                  max abs error <= 1e-4 over the three calls. Skipped (ok, "skipped") without the data.
//   golden_bf16    the same under bf16 autocast. Bound: 2^-6 (1.6e-2) of the largest |output|: bf16 keeps 8
//                  significant bits (unit roundoff 2^-8), and each call passes ~10 rounded matmul/attention
//                  stages in sequence, each adding its rounding to what came before.
//   train          a tiny DiT on a synthetic latent cache (colour and motion words bound to latent structure)
//                  for --steps steps on the device: the mean loss of the last tenth below 0.8 of the first's.
//   resume         2k steps straight against k, stop (a cancel saves step k), resume to 2k: the losses of
//                  steps k+1..2k and the final weights, compared bit for bit, and the losses of steps 1..k
//                  (two fresh runs of one command and seed); reported with the largest differences. On CUDA
//                  deterministic algorithms are requested for this check.
//   sample         20-step sampling with CFG and a live preview from the trained run on the device: one
//                  preview per step, finite frames; time per step.
//   process_group  a world-size-1 process group (NCCL on CUDA, Gloo on CPU) running the data-parallel
//                  gradient sync and the ZeRO-1 optimizer for 3 steps against a plain AdamW: equal weights.
//   adamw          the trainer's AdamW update (LibTorch 2.x's fused kernel on CUDA, the one-pass loop on the
//                  CPU; "path" says which ran) against LibTorch's op sequence: relative difference <= 1e-5.
//   fused_rope     the fused 3D RoPE (model/fused_ops.h: the CUDA kernel on CUDA, the parallel loop on the
//                  CPU) against the reference composition of LibTorch operations, forward and backward, in
//                  fp32 and bf16, and both timed.
//   fused_norm_rope  the same for the attention's fused per-head RMSNorm + multiplier + RoPE.
//   fused_norm_modulate  the same for the blocks' fused LayerNorm + adaLN modulation (scale and shift's
//                  gradients checked as a weight's).
//   fused_gated_residual  the same for the blocks' gated residual x + h·gate (h's and the gate's gradients).
#include "core/error.h"
#include "core/json_io.h"
#include "core/params.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/shell_quote.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/fused_ops.h"
#include "model/vae.h"
#include "model/weights.h"
#include "parallel/launcher.h"
#include "parallel/process_groups.h"
#include "sample/model_bundle.h"
#include "sample/sampler.h"
#include "train/checkpoint_store.h"
#include "train/gradient_sync.h"
#include "train/latent_cache.h"
#include "train/optim.h"
#include "train/run_layout.h"
#include "train/train_params.h"
#include "train/trainer.h"
#include "train/zero_optimizer.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace mugv;
using Clock = std::chrono::steady_clock;

namespace {

struct Settings {
  std::string device_name = "cpu";
  fs::path golden_dir;
  fs::path work;
  int64_t steps = 60;
  std::set<std::string> only;  // empty: every check
  std::set<std::string> skip;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- golden -------------------------------------------------------------------------------------------

// The release's call `model(x, timestep, y, mask, x_mask, fps, frame_indice)` on `device`: y is
// [B, 1, N, text_dim] there, x_mask true marks a noisy frame (cond_mask is its negation).
torch::Tensor release_call(DiT& dit, const SafetensorsFile& io, const std::string& tag,
                           torch::Device device) {
  auto in = [&](const std::string& what) {
    return tensor_from_view(io.at(tag + "." + what), io.path().string() + ": " + tag + "." + what).to(device);
  };
  return dit->forward_full(in("x"), in("timestep"), in("y").squeeze(1), in("mask"), in("fps"),
                           in("x_mask").to(torch::kBool).logical_not(), in("frame_indice"));
}

nlohmann::json check_golden(const Settings& s, torch::Device device, ComputePrecision precision) {
  const fs::path weights = s.golden_dir / "mugv_dit_tiny.safetensors",
                 io_path = s.golden_dir / "mugv_dit_tiny_io.safetensors";
  if (!fs::is_regular_file(weights) || !fs::is_regular_file(io_path))
    return {{"ok", true}, {"skipped", cat("no golden data in ", s.golden_dir.string())}};
  const WeightFiles files = WeightFiles::open(weights);
  DiT dit(dit_config_from_checkpoint(shapes_of(files), kReleaseTextTokens, weights.string()));
  (void)load_module(*dit, files, {}, UnexpectedTensors::error);
  dit->to(device);
  dit->eval();
  const SafetensorsFile io = SafetensorsFile::open(io_path);
  torch::NoGradGuard no_grad;
  double max_error = 0, max_output = 0;
  nlohmann::json per_call = nlohmann::json::object();
  for (const std::string tag : {"t2v", "i2v", "pad"}) {
    const auto expected = tensor_from_view(io.at(tag + ".out"), io_path.string());
    torch::Tensor got;
    {
      AutocastScope autocast(precision, device.type());
      got = release_call(dit, io, tag, device);
    }
    got = got.to(torch::kCPU, torch::kFloat32);
    if (got.sizes() != expected.sizes())
      throw Error(ErrorCode::internal, tag,
                  cat("output shape ", got.sizes(), ", expected ", expected.sizes()));
    const double error = (got - expected).abs().max().item<double>();
    per_call[tag] = error;
    max_error = std::max(max_error, error);
    max_output = std::max(max_output, expected.abs().max().item<double>());
  }
  const bool bf16 = precision == ComputePrecision::bf16;
  const double bound = bf16 ? max_output / 64.0 : 1e-4;
  return {{"ok", max_error <= bound},
          {"max_abs_error", max_error},
          {"bound", bound},
          {"max_abs_output", max_output},
          {"per_call", per_call}};
}

// ---- a synthetic home: latent cache, VAE run ----------------------------------------------------------

const char* const kColours[] = {"red", "green", "blue"};
const char* const kMotions[] = {"left", "right"};

// A latent cache whose captions name a colour and a motion, and whose latents carry them: the colour as a
// per-channel offset, the motion as a ramp across width that moves over time. Enough structure that the
// loss falls within a few hundred steps, and every clip distinct (seeded noise).
void write_synthetic_cache(const ModelPreset& preset, int64_t clips) {
  const int64_t c = preset.vae.latent_channels, t = 5, h = 8, w = 8;
  torch::manual_seed(1);
  for (int64_t i = 0; i < clips; ++i) {
    const int64_t colour = i % 3, motion = (i / 3) % 2;
    CachedClip clip;
    clip.clip_id = i + 1;
    clip.caption = cat("a ", kColours[colour], " square moving ", kMotions[motion]);
    clip.fps = 8;
    clip.frames = 17;
    clip.height = clip.width = 64;
    auto offsets = torch::zeros({c, 1, 1, 1});
    offsets[colour % c] = 1.0;
    auto ramp = torch::linspace(-1, 1, w).view({1, 1, 1, w}) +
                torch::linspace(0, 0.5, t).view({1, t, 1, 1}) * (motion ? 1.0 : -1.0);
    auto latent = offsets + 0.5 * ramp.expand({c, t, h, w}) + 0.1 * torch::randn({c, t, h, w});
    write_cached_clip(latent_cache_dir("synthetic", "vae0"), clip, latent);
  }
}

// A VAE run with randomly initialised weights: sampling decodes through it (the check is of the device path,
// not of picture quality).
void write_random_vae_run(const ModelPreset& preset) {
  const RunPaths paths = run_paths("vae0");
  fs::create_directories(paths.root);
  write_run_manifest(paths,
                     {"vae0", RunLayoutKind::vae, preset.name, "synthetic", "", nlohmann::json::object()});
  torch::manual_seed(2);
  VideoVAE vae(preset.vae);
  torch::nn::Module holder;
  holder.register_module("vae", vae.ptr());
  CheckpointStore store(paths.checkpoints());
  const fs::path staging = store.begin(1);
  save_module(holder, staging / "model.safetensors");
  (void)store.commit(staging, 1, {{"step", 1}});
}

// A training run's values exactly as `mugv train` resolves its command line (the same registry, preset
// cascade and options), so this check runs the command's own path; `command` is that command line.
struct TrainRun {
  ParamRegistry registry;
  std::vector<std::string> args;
  std::string command() const { return "mugv train " + shell_join(args); }
};

std::unique_ptr<TrainRun> train_run(const std::string& run, int64_t steps, const std::string& device) {
  auto r = std::make_unique<TrainRun>();
  define_train_params(r->registry, TrainKind::dit);
  r->args = {"--run",        run,
             "--preset",     "tiny",
             "--dataset",    "synthetic",
             "--vae-run",    "vae0",
             "--steps",      std::to_string(steps),
             "--batch",      "8",
             "--lr",         "2e-3",
             "--warmup",     std::to_string(std::min<int64_t>(10, steps / 4)),
             "--save-every", "100000",
             "--keep",       "2",
             "--seed",       "5",
             "--device",     device};
  return r;
}

// Trains (or, with `resume`, continues) the run as `mugv train` / `mugv resume` would.
TrainResult run_training(const TrainRun& r, const CancelToken& cancel, const TrainCallbacks& callbacks) {
  ParamLayers layers;
  layers.command_line = parse_command_line(r.registry, r.args);
  const ParamValues values = resolve_train_preset(resolve(r.registry, layers), TrainKind::dit);
  return train_dit(train_options_from(values, TrainKind::dit), values.to_json(), cancel, callbacks);
}

double mean_of(const std::vector<double>& v, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += v[i];
  return end > begin ? sum / double(end - begin) : 0.0;
}

nlohmann::json check_train(const Settings& s) {
  const int64_t steps = s.steps;
  std::vector<double> losses;
  double step_ms = 0;
  TrainCallbacks callbacks;
  callbacks.on_step = [&](const StepMetrics& m) {
    losses.push_back(m.loss);
    step_ms += m.step_ms;
  };
  const auto start = Clock::now();
  const auto run = train_run("trained", steps, s.device_name);
  const TrainResult result = run_training(*run, CancelToken(), callbacks);
  const size_t tenth = std::max<size_t>(1, losses.size() / 10);
  const double first = mean_of(losses, 0, tenth),
               last = mean_of(losses, losses.size() - tenth, losses.size());
  return {{"ok", int64_t(losses.size()) == steps && last < 0.8 * first},
          {"command", run->command()},
          {"steps", losses.size()},
          {"loss_first_tenth", first},
          {"loss_last_tenth", last},
          {"mean_step_ms", losses.empty() ? 0.0 : step_ms / double(losses.size())},
          {"seconds", seconds_since(start)},
          {"last_checkpoint", result.last_checkpoint ? result.last_checkpoint->step : -1}};
}

std::map<std::string, torch::Tensor> weights_of(const fs::path& file) {
  const SafetensorsFile st = SafetensorsFile::open(file);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : st.names()) out[name] = tensor_from_view(st.at(name), file.string());
  return out;
}

nlohmann::json check_resume(const Settings& s, torch::Device device) {
  // The CUDA kernels that are not deterministic by default (index_add/scatter-add in embedding backward,
  // some attention backwards) get their deterministic versions where LibTorch has them; warn_only keeps
  // the others running, and the comparison below reports whatever still differs.
  if (device.is_cuda()) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/true);
  const int64_t k = std::max<int64_t>(2, s.steps / 6), total = 2 * k;
  std::map<int64_t, double> straight_loss, split_loss;
  TrainCallbacks record_straight, record_split;
  record_straight.on_step = [&](const StepMetrics& m) { straight_loss[m.step] = m.loss; };
  (void)run_training(*train_run("straight", total, s.device_name), CancelToken(), record_straight);

  CancelToken cancel;
  record_split.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == k + 1) cancel.request_cancel();
  };
  record_split.on_step = [&](const StepMetrics& m) { split_loss[m.step] = m.loss; };
  try {
    (void)run_training(*train_run("split", total, s.device_name), cancel, record_split);
    throw Error(ErrorCode::internal, "split", "the cancel did not stop the run");
  } catch (const Error& e) {
    if (e.code() != ErrorCode::cancelled) throw;
  }
  TrainCallbacks record_resumed;
  record_resumed.on_step = record_split.on_step;
  const TrainResult resumed = resume_dit("split", ResumeChanges{}, CancelToken(), record_resumed);
  if (device.is_cuda()) at::globalContext().setDeterministicAlgorithms(false, false);

  // The first k steps of both runs: the same command and seed from scratch (determinism across runs).
  double max_fresh_diff = 0;
  for (int64_t step = 1; step <= k; ++step) {
    if (!straight_loss.count(step) || !split_loss.count(step))
      throw Error(ErrorCode::internal, cat("step ", step), "a run did not report this step");
    max_fresh_diff = std::max(max_fresh_diff, std::abs(straight_loss[step] - split_loss[step]));
  }
  double max_loss_diff = 0;
  for (int64_t step = k + 1; step <= total; ++step) {
    if (!straight_loss.count(step) || !split_loss.count(step))
      throw Error(ErrorCode::internal, cat("step ", step), "a run did not report this step");
    max_loss_diff = std::max(max_loss_diff, std::abs(straight_loss[step] - split_loss[step]));
  }
  CheckpointStore a(run_paths("straight").checkpoints()), b(run_paths("split").checkpoints());
  double max_weight_diff = 0;
  bool identical = max_loss_diff == 0;
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const auto wa = weights_of(a.open(total).dir / file), wb = weights_of(b.open(total).dir / file);
    for (const auto& [name, tensor] : wa) {
      auto it = wb.find(name);
      if (it == wb.end()) throw Error(ErrorCode::internal, name, "missing from the resumed run's checkpoint");
      if (!torch::equal(tensor, it->second)) identical = false;
      max_weight_diff = std::max(max_weight_diff, (tensor - it->second).abs().max().item<double>());
    }
  }
  // The CPU kernels are deterministic: anything but bit-identity is a failure there. On CUDA the check
  // passes when the runs agree to float rounding and says whether they were bit-identical.
  identical = identical && max_fresh_diff == 0;
  const bool ok =
      device.is_cuda() ? max_weight_diff < 1e-4 && max_loss_diff < 1e-4 && max_fresh_diff < 1e-4 : identical;
  return {{"ok", ok},
          {"stop_step", k},
          {"steps", total},
          {"resumed_from", resumed.start_step},
          {"bit_identical", identical},
          {"max_loss_diff", max_loss_diff},
          {"max_loss_diff_same_seed_runs", max_fresh_diff},
          {"max_weight_diff", max_weight_diff}};
}

nlohmann::json check_sample(const Settings&, torch::Device device) {
  ModelBundle bundle = load_for_inference("trained", device);
  GenerateRequest request;
  request.prompt = "a red square moving left";
  request.seed = 3;
  request.steps = 20;
  request.cfg_scale = 4.0;
  request.frames = 17;
  request.width = request.height = 64;
  int previews = 0;
  bool previews_sized = true;
  const PreviewFn preview = [&](int, int, const std::vector<RgbFrame>& frames) {
    ++previews;
    previews_sized = previews_sized && !frames.empty() && !frames.front().empty();
  };
  (void)sample(bundle, request, CancelToken(), preview);  // warm-up: kernels, allocator
  previews = 0;
  synchronize_device(device);
  const auto start = Clock::now();
  const SampleResult result = sample(bundle, request, CancelToken(), preview);
  synchronize_device(device);
  const double seconds = seconds_since(start);
  const bool finite = torch::isfinite(result.latent).all().item<bool>();
  return {{"ok", previews == request.steps && previews_sized && finite &&
                     int(result.frames.size()) == request.frames},
          {"previews", previews},
          {"frames", result.frames.size()},
          {"finite", finite},
          {"seconds_per_step", seconds / request.steps}};
}

// ---- process group ------------------------------------------------------------------------------------

nlohmann::json check_process_group(const Settings&, torch::Device device) {
  Rendezvous rendezvous;
  rendezvous.source = RendezvousSource::torchrun;
  rendezvous.master_port = pick_free_port();  // the TCPStore of the one rank
  const CommBackend backend = device.is_cuda() ? CommBackend::nccl : CommBackend::gloo;
  auto groups =
      ProcessGroups::connect(rendezvous, ParallelLayout{1, 1, 1}, backend, std::chrono::seconds(60));

  const ModelPreset preset = load_model_preset("tiny");
  auto build = [&] {
    torch::manual_seed(9);
    DiT dit(preset.dit);
    for (auto& p : dit->parameters()) p.detach().add_(torch::randn_like(p) * 0.02);  // every branch live
    dit->to(device);
    return dit;
  };
  DiT plain = build(), sharded = build();
  AdamWOptions adam;
  AdamW plain_optimizer(named_parameters(*plain), adam);
  ZeroAdamW zero_optimizer(groups, named_parameters(*sharded), adam);
  GradientSync sync(groups, named_parameters(*sharded));

  torch::manual_seed(10);
  const auto& cfg = preset.dit;
  auto x = torch::randn({2, cfg.in_channels, 5, 8, 8}).to(device);
  auto t = (torch::rand({2}) * kDiTTimesteps).to(device);
  auto text = torch::randn({2, cfg.text_tokens, cfg.text_dim}).to(device);
  auto mask = torch::ones({2, cfg.text_tokens}).to(device);
  auto fps = torch::full({2}, 8.0).to(device);
  auto target = torch::randn({2, cfg.in_channels, 5, 8, 8}).to(device);
  double communication_ms = 0;
  for (int step = 0; step < 3; ++step) {
    plain_optimizer.zero_grad();
    torch::mse_loss(plain->forward(x, t, text, mask, fps), target).backward();
    plain_optimizer.step(1e-3);

    zero_optimizer.zero_grad();
    sync.begin_step();
    torch::mse_loss(sharded->forward(x, t, text, mask, fps), target).backward();
    sync.end_step();
    communication_ms += sync.communication_ms();
    zero_optimizer.step(1e-3);
  }
  double max_diff = 0;
  bool identical = true;
  const auto a = named_parameters(*plain), b = named_parameters(*sharded);
  for (size_t i = 0; i < a.size(); ++i) {
    identical = identical && torch::equal(a[i].second, b[i].second);
    max_diff = std::max(max_diff, (a[i].second - b[i].second).abs().max().item<double>());
  }
  return {{"ok", max_diff <= 1e-6},
          {"backend", to_string(backend)},
          {"bit_identical", identical},
          {"max_weight_diff", max_diff},
          {"zero_shard_elements", zero_optimizer.shard_elements()},
          {"communication_ms", communication_ms}};
}

// The trainer's AdamW update on the device (LibTorch 2.x's fused multi-tensor kernel on CUDA, the one-pass
// loop on the CPU) against the same update as LibTorch's op sequence: parameters of odd sizes at two learning
// rates (one fused launch each), weight decay on, 5 steps. Both are fp32 with the same operation order up to
// fused multiply-adds, so they agree to a few units of fp32 rounding: relative 1e-5 of each tensor's largest
// value.
nlohmann::json check_adamw(const Settings&, torch::Device device) {
  AdamWOptions options;
  options.weight_decay = 0.05;
  const auto on = torch::TensorOptions().device(device);
  torch::manual_seed(11);
  std::vector<AdamWSlot> slots, reference;
  for (const int64_t n : {int64_t(1), int64_t(37), int64_t(4099), int64_t(1 << 20)}) {
    for (const double lr : {1e-3, 4e-3}) {
      AdamWSlot s{torch::randn({n}, on), torch::Tensor(), torch::zeros({n}, on), torch::zeros({n}, on), lr};
      reference.push_back({s.param.clone(), torch::Tensor(), s.exp_avg.clone(), s.exp_avg_sq.clone(), lr});
      slots.push_back(s);
    }
  }
  for (int step = 1; step <= 5; ++step) {
    const double bc1 = 1.0 - std::pow(options.beta1, double(step));
    const double bc2 = 1.0 - std::pow(options.beta2, double(step));
    for (size_t i = 0; i < slots.size(); ++i) {
      slots[i].grad = reference[i].grad = torch::randn_like(slots[i].param);
      AdamW::update_by_ops(reference[i].param, reference[i].grad, reference[i].exp_avg,
                           reference[i].exp_avg_sq, options, reference[i].lr, bc1, bc2);
    }
    AdamW::update_all(slots, options, step);
  }
  double worst = 0;
  for (size_t i = 0; i < slots.size(); ++i)
    for (const auto& [a, b] :
         {std::pair{slots[i].param, reference[i].param}, std::pair{slots[i].exp_avg, reference[i].exp_avg},
          std::pair{slots[i].exp_avg_sq, reference[i].exp_avg_sq}})
      worst =
          std::max(worst, (a - b).abs().max().item<double>() / b.abs().max().clamp_min(1e-30).item<double>());
  return {{"ok", worst <= 1e-5}, {"path", AdamW::update_path(slots.back())}, {"max_relative_diff", worst}};
}

// ---- fused operations ---------------------------------------------------------------------------------

// Output, input gradient and (for a `weight`) the weight's gradient of `op`, from x and grad cast to `type`,
// all as float64.
struct Outcome {
  torch::Tensor y, grad_x, grad_weight;
};
using Op = std::function<torch::Tensor(const torch::Tensor&)>;

Outcome run_op(const Op& op, const torch::Tensor& x, const torch::Tensor& grad, torch::ScalarType type,
               torch::Tensor weight) {
  if (weight.defined()) weight.mutable_grad() = torch::Tensor();
  auto input = x.to(type).detach().requires_grad_(true);
  auto y = op(input);
  y.backward(grad.to(type));
  Outcome out{y.detach().to(torch::kFloat64), input.grad().to(torch::kFloat64), torch::Tensor()};
  if (weight.defined()) out.grad_weight = weight.grad().to(torch::kFloat64).clone();
  return out;
}

double largest_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A fused operation against its unfused reference on the device, forward and backward, from x in the strided
// layout the attention hands over ([B, N, H, hd] memory seen as [B, H, N, hd]) and per-sample angles (a TI2V
// batch). fp32: the two agree within 1e-5 of the largest |value| (1e-4 for a weight's gradient, a sum over
// every row). bf16: output and input gradient against the reference in float64 from the same bf16 inputs; the
// fused form computes in float and rounds once, so each value is within bf16's unit roundoff 2^-8 of the
// truth, plus 1e-5 of the largest for the float arithmetic (the reference's own error is reported beside it:
// it rounds every intermediate). Then both timed, forward + backward with the device synchronised, in the
// precision training feeds them there (bf16 on CUDA, fp32 on the CPU).
nlohmann::json compare_fused(const Op& fused, const Op& reference, const torch::Tensor& x,
                             const torch::Tensor& grad, const torch::Tensor& weight, torch::Device device) {
  nlohmann::json result{{"path", device.is_cuda() ? "cuda kernel" : "cpu loop"}};
  bool ok = true;
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const Outcome f = run_op(fused, x, grad, type, weight), r = run_op(reference, x, grad, type, weight);
    const Outcome truth = run_op(reference, x.to(type), grad.to(type), torch::kFloat64, weight);
    const double scale =
        std::max(truth.y.abs().max().item<double>(), truth.grad_x.abs().max().item<double>());
    if (type == torch::kFloat32) {
      const double diff = std::max(largest_diff(f.y, r.y), largest_diff(f.grad_x, r.grad_x));
      nlohmann::json line{{"max_diff_to_reference", diff}, {"bound", 1e-5 * scale}};
      ok = ok && diff <= 1e-5 * scale;
      if (weight.defined()) {
        const double weight_diff = largest_diff(f.grad_weight, r.grad_weight);
        const double weight_bound = 1e-4 * r.grad_weight.abs().max().item<double>();
        line["weight_grad_max_diff"] = weight_diff;
        line["weight_grad_bound"] = weight_bound;
        ok = ok && weight_diff <= weight_bound;
      }
      result["fp32"] = line;
    } else {
      auto worst_excess = [&](const torch::Tensor& got, const torch::Tensor& t) {
        // how far past its own bound the worst value is (<= 0: every value within it)
        return ((got - t).abs() - (std::ldexp(1.0, -8) * t.abs() + 1e-5 * scale)).max().item<double>();
      };
      const double excess = std::max(worst_excess(f.y, truth.y), worst_excess(f.grad_x, truth.grad_x));
      result["bf16"] = {
          {"fused_max_error", std::max(largest_diff(f.y, truth.y), largest_diff(f.grad_x, truth.grad_x))},
          {"reference_max_error", std::max(largest_diff(r.y, truth.y), largest_diff(r.grad_x, truth.grad_x))},
          {"worst_excess_over_bound", excess}};
      ok = ok && excess <= 0;
    }
  }
  const auto type = device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  auto time_ms = [&](const Op& op) {
    const auto input = x.to(type).detach();
    const auto g = grad.to(type);
    auto once = [&] { op(input.detach().requires_grad_(true)).backward(g); };
    once();
    synchronize_device(device);
    const int repeats = 20;
    const auto start = Clock::now();
    for (int i = 0; i < repeats; ++i) once();
    synchronize_device(device);
    return 1e3 * seconds_since(start) / repeats;
  };
  const double fused_ms = time_ms(fused), reference_ms = time_ms(reference);
  result["timing"] = {{"precision", type == torch::kFloat32 ? "fp32" : "bf16"},
                      {"shape", x.sizes().vec()},
                      {"fused_ms", fused_ms},
                      {"reference_ms", reference_ms},
                      {"speedup", reference_ms / fused_ms}};
  result["ok"] = ok;
  return result;
}

// The attention's queries at the mugv-1b shape (16 heads of 72, 2048 tokens, batch 2) on CUDA; a quarter of
// the heads and an eighth of the tokens on the CPU. Angles from random positions, per sample.
struct AttentionInputs {
  torch::Tensor x, grad;
  RopeTable rope;  // built once, as a forward pass does
};
AttentionInputs attention_inputs(torch::Device device) {
  const bool cuda = device.is_cuda();
  const int64_t batch = 2, heads = cuda ? 16 : 4, tokens = cuda ? 2048 : 256, head_dim = 72;
  torch::manual_seed(5);
  const auto on = torch::TensorOptions().device(device);
  AttentionInputs in;
  in.rope = rope_angles(torch::randint(0, 64, {batch, tokens, 3}, on.dtype(torch::kLong)), head_dim, 10000.0);
  in.x = (torch::randn({batch, tokens, heads, head_dim}, on) * 2.0).transpose(1, 2);
  in.grad = torch::randn({batch, heads, tokens, head_dim}, on);
  return in;
}

// Why the fused form would not run here.
nlohmann::json no_fused_path(torch::Device device) {
  std::string why = "the fused operation does not cover the attention's inputs";
  if (!fused_kernels_enabled())
    why = "the fused operations are off (MUGV_FUSED_KERNELS=0)";
  else if (device.is_cuda() && !cuda_kernels_built())
    why = "this build has no CUDA kernels (no nvcc found when configuring)";
  return {{"ok", false}, {"error", why}};
}

// The fused RoPE (model/fused_ops.h fused_rope) against apply_rope_reference.
nlohmann::json check_fused_rope(const Settings&, torch::Device device) {
  const auto in = attention_inputs(device);
  if (!fused_rope_applies(in.x, in.rope)) return no_fused_path(device);
  return compare_fused([&](const torch::Tensor& v) { return fused_rope(v, in.rope); },
                       [&](const torch::Tensor& v) { return apply_rope_reference(v, in.rope); }, in.x,
                       in.grad, torch::Tensor(), device);
}

// The fused per-head RMSNorm + query multiplier + RoPE (fused_norm_rope) against the three steps, with a
// trained-looking norm weight; its gradient is checked too.
nlohmann::json check_fused_norm_rope(const Settings&, torch::Device device) {
  const auto in = attention_inputs(device);
  RMSNorm norm(in.x.size(3));
  norm->to(device);
  {
    torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  if (!fused_norm_rope_applies(in.x, norm->weight, in.rope)) return no_fused_path(device);
  const double multiplier = 0.8;
  return compare_fused(
      [&](const torch::Tensor& v) {
        return fused_norm_rope(v, norm->weight, norm->eps(), multiplier, in.rope);
      },
      [&](const torch::Tensor& v) { return apply_rope_reference(norm(v) * multiplier, in.rope); }, in.x,
      in.grad, norm->weight, device);
}

// The tokens of the blocks' modulation checks: the mugv-1b width (1152) with per-frame groups (8 frames of
// 256 tokens between the start and end tokens, batch 2) on CUDA, a quarter of the width and tokens on the
// CPU.
struct BlockTokens {
  int64_t batch = 2, frames = 0, dim = 0;
  TokenLayout layout;
  torch::TensorOptions on;
  // Random [batch, tokens, dim] values on the device.
  torch::Tensor random() const { return torch::randn({batch, layout.total, dim}, on); }
};
BlockTokens block_tokens(torch::Device device) {
  const bool cuda = device.is_cuda();
  BlockTokens t;
  t.frames = cuda ? 8 : 4;
  t.dim = cuda ? 1152 : 288;
  const int64_t per_frame = cuda ? 256 : 64;
  t.layout = TokenLayout{t.frames, 0, t.frames * per_frame + 2};
  t.on = torch::TensorOptions().device(device);
  return t;
}

// The fused LayerNorm + adaLN modulation of a block's input (fused_norm_modulate) against the two steps. The
// modulation is float32 as under autocast; its gradient (the scale's and the shift's) is checked as a
// weight's.
nlohmann::json check_fused_norm_modulate(const Settings&, torch::Device device) {
  torch::manual_seed(6);
  const BlockTokens t = block_tokens(device);
  const auto x = t.random() * 2.0 + 0.5;
  const auto grad = t.random();
  auto modulation = (torch::randn({t.batch, t.frames + 2, 2, t.dim}, t.on) * 0.3).requires_grad_(true);
  const auto scale = [&] { return modulation.select(2, 0); };
  const auto shift = [&] { return modulation.select(2, 1); };
  if (!fused_norm_modulate_applies(x, scale(), shift(), t.layout)) return no_fused_path(device);
  return compare_fused(
      [&](const torch::Tensor& v) { return fused_norm_modulate(v, scale(), shift(), 1e-6, t.layout); },
      [&](const torch::Tensor& v) { return norm_modulate_reference(v, scale(), shift(), 1e-6, t.layout); }, x,
      grad, modulation, device);
}

// The fused gated residual x + h·gate (fused_gated_residual) against the product and the sum: a float32
// residual stream, h (the sublayer's output, whose gradient is checked) in the precision under test, a
// float32 gate per frame group (its gradient checked as a weight's).
nlohmann::json check_fused_gated_residual(const Settings&, torch::Device device) {
  torch::manual_seed(7);
  const BlockTokens t = block_tokens(device);
  const auto residual = t.random(), h = t.random(), grad = t.random();
  auto gate = (torch::randn({t.batch, t.frames + 2, t.dim}, t.on) * 0.3).requires_grad_(true);
  if (!fused_gated_residual_applies(residual, h, gate, t.layout)) return no_fused_path(device);
  return compare_fused(
      [&](const torch::Tensor& v) { return fused_gated_residual(residual, v, gate, t.layout); },
      [&](const torch::Tensor& v) { return gated_residual_reference(residual, v, gate, t.layout); }, h, grad,
      gate, device);
}

// ---- driver -------------------------------------------------------------------------------------------

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw Error(ErrorCode::usage, flag, "needs a value");
    const std::string value = argv[++i];
    if (flag == "--device")
      s.device_name = value;
    else if (flag == "--golden-dir")
      s.golden_dir = value;
    else if (flag == "--work")
      s.work = value;
    else if (flag == "--steps")
      s.steps = std::stoll(value);
    else if (flag == "--only")
      for (const auto& name : split(value, ',')) s.only.insert(trim(name));
    else if (flag == "--skip")
      for (const auto& name : split(value, ',')) s.skip.insert(trim(name));
    else
      throw Error(ErrorCode::usage, flag,
                  "unknown flag (--device, --golden-dir, --work, --steps, --only, --skip)");
  }
  if (s.steps < 12) throw Error(ErrorCode::usage, "--steps", "at least 12 steps");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  torch::Device device = torch::kCPU;
  try {
    s = parse(argc, argv);
    device = choose_compute_device(s.device_name);
    if (s.work.empty()) s.work = fs::temp_directory_path() / cat("mugv-device-check-", ::getpid());
    fs::create_directories(s.work);
    ::setenv("MUGV_HOME", s.work.c_str(), 1);
    const ModelPreset tiny = load_model_preset("tiny");
    write_synthetic_cache(tiny, 12);
    write_random_vae_run(tiny);
  } catch (const std::exception& e) {
    std::printf("%s\n",
                nlohmann::json({{"check", "setup"}, {"ok", false}, {"error", e.what()}}).dump().c_str());
    return 2;
  }

  const std::vector<std::pair<std::string, std::function<nlohmann::json()>>> checks = {
      {"golden_fp32", [&] { return check_golden(s, device, ComputePrecision::fp32); }},
      {"golden_bf16", [&] { return check_golden(s, device, ComputePrecision::bf16); }},
      {"train", [&] { return check_train(s); }},
      {"resume", [&] { return check_resume(s, device); }},
      {"sample", [&] { return check_sample(s, device); }},  // samples the run `train` made
      {"process_group", [&] { return check_process_group(s, device); }},
      {"adamw", [&] { return check_adamw(s, device); }},
      {"fused_rope", [&] { return check_fused_rope(s, device); }},
      {"fused_norm_rope", [&] { return check_fused_norm_rope(s, device); }},
      {"fused_norm_modulate", [&] { return check_fused_norm_modulate(s, device); }},
      {"fused_gated_residual", [&] { return check_fused_gated_residual(s, device); }},
  };
  bool all_ok = true;
  for (const auto& [name, run] : checks) {
    if ((!s.only.empty() && !s.only.count(name)) || s.skip.count(name)) continue;
    nlohmann::json line;
    const auto start = Clock::now();
    try {
      line = run();
    } catch (const std::exception& e) {
      line = {{"ok", false}, {"error", e.what()}};
    }
    line["check"] = name;
    line["device"] = device.str();
    if (!line.contains("seconds")) line["seconds"] = seconds_since(start);
    all_ok = all_ok && line.value("ok", false);
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  return all_ok ? 0 : 1;
}
