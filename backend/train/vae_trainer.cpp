#include "train/vae_trainer.h"

#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "dataset/manifest.h"
#include "media/image.h"
#include "model/compute.h"
#include "model/info.h"
#include "model/weights.h"
#include "train/checkpoint_store.h"
#include "train/clip_video.h"
#include "train/flow.h"
#include "train/optim.h"
#include "train/rng_state.h"
#include "train/step_log.h"
#include "train/trainer.h"

#include <cmath>
#include <fstream>
#include <random>

namespace mugv {
namespace {

// Frames per row of the held-out reconstruction sheet (the first ones of each clip).
constexpr int64_t kSheetColumns = 12;

// RGB target of every latent position: frames padded as the VAE pads them, average-pooled over the
// (compress_t, compress_h, compress_w) block. video [3, T, H, W] -> [3, n, h, w].
torch::Tensor pooled_rgb(const VideoVAEImpl& vae, const torch::Tensor& video) {
  const auto& c = vae.config();
  auto v = video;
  const int64_t pad = vae.padded_frames(video.size(1));
  if (pad > 0)
    v = torch::cat({video.narrow(1, 0, 1).expand({3, pad, video.size(2), video.size(3)}), video}, 1);
  return torch::avg_pool3d(v.unsqueeze(0), {c.compress_t, c.compress_h, c.compress_w})[0];
}

void save_vae_checkpoint(const RunPaths& paths, VAEBundleImpl& model, const AdamW& optimizer, int64_t step,
                         double loss, const std::string& preset, int64_t keep) {
  CheckpointStore store(paths.checkpoints());
  fs::path staging = store.begin(step);
  save_module(model, staging / "model.safetensors",
              {{"preset", preset}, {"kind", "vae"}, {"step", std::to_string(step)}});
  optimizer.save(staging / "optimizer.safetensors");
  write_json_atomic(staging / "trainer_state.json",
                    {{"step", step}, {"rng_state", torch_rng_state_base64()}});
  (void)store.commit(staging, step, {{"preset", preset}, {"kind", "vae"}, {"loss", loss}});
  store.prune(static_cast<int>(keep));
}

// The part of each clip one training sample sees: the whole clip, or a random window of it.
struct TrainingWindow {
  int64_t frames = 0, height = 0, width = 0;
};

TrainingWindow training_window(const TrainOptions& o, const ModelPreset& preset) {
  TrainingWindow w{o.crop_frames > 0 ? o.crop_frames : o.frames, o.crop_height > 0 ? o.crop_height : o.height,
                   o.crop_width > 0 ? o.crop_width : o.width};
  if (w.frames > o.frames || w.height > o.height || w.width > o.width)
    throw Error(ErrorCode::invalid_argument, o.run,
                cat("training window ", w.frames, " frames ", w.width, "x", w.height,
                    " is larger than the clips (", o.frames, " frames ", o.width, "x", o.height, ")"));
  (void)describe(preset, w.frames, w.height, w.width);  // the VAE must be able to encode a window on its own
  return w;
}

}  // namespace

// One training sample per batch entry: a random window (frames, height, width) of a random clip, drawn from
// the step's own generator so a step's batch depends only on (seed, step).
torch::Tensor vae_training_batch(const std::vector<torch::Tensor>& videos, const TrainOptions& o,
                                 const TrainingWindow& window, int64_t step) {
  std::mt19937_64 pick(sample_seed(o.seed, step, 0));
  std::vector<torch::Tensor> batch;
  for (int64_t i = 0; i < o.batch; ++i) {
    const torch::Tensor& video = videos[pick() % videos.size()];
    const int64_t t0 = static_cast<int64_t>(pick() % static_cast<uint64_t>(o.frames - window.frames + 1));
    const int64_t y0 = static_cast<int64_t>(pick() % static_cast<uint64_t>(o.height - window.height + 1));
    const int64_t x0 = static_cast<int64_t>(pick() % static_cast<uint64_t>(o.width - window.width + 1));
    batch.push_back(video.slice(1, t0, t0 + window.frames)
                        .slice(2, y0, y0 + window.height)
                        .slice(3, x0, x0 + window.width)
                        .to(torch::kFloat32)
                        .div(127.5)
                        .sub(1.0));
  }
  return torch::stack(batch);
}

// One optimizer step of the VAE on `batch`: forward under the run's precision, backward, clipping, AdamW.
// Returns the step's metrics line (without its time); a non-finite loss stops the run before the update.
nlohmann::json vae_train_step(VAEBundleImpl& model, AdamW& optimizer,
                              const std::vector<torch::Tensor>& params, const torch::Tensor& batch,
                              const TrainOptions& o, ComputePrecision precision, int64_t step,
                              int64_t last_saved) {
  auto loss = [&] {
    AutocastScope autocast(precision, batch.device().type());
    return model.vae->loss(batch);
  }();
  const double value = loss.total.item<double>();
  if (!std::isfinite(value)) throw nonfinite_step_error(o.run, step, "loss", value, last_saved);
  optimizer.zero_grad();
  loss.total.backward();
  const double grad_norm = clip_grad_norm(params, o.grad_clip);
  if (!std::isfinite(grad_norm))
    throw nonfinite_step_error(o.run, step, "gradient norm", grad_norm, last_saved);
  const double lr = scheduled_lr(step, o.lr, o.warmup_steps, o.steps, o.schedule, o.min_lr);
  optimizer.step(lr);
  return {{"step", step},
          {"loss", value},
          {"mse", loss.mse.item<double>()},
          {"l1", loss.l1.item<double>()},
          {"kl", loss.kl.item<double>()},
          {"lr", lr},
          {"grad_norm", grad_norm}};
}

VAETrainResult train_vae(Catalog& catalog, const TrainOptions& o, nlohmann::json config,
                         const CancelToken& cancel, const ProgressFn& progress) {
  VAETrainResult result;
  result.paths = run_paths(o.run);
  std::error_code ec;
  if (fs::exists(result.paths.manifest(), ec))
    throw Error(ErrorCode::conflict, o.run, "a run of this name exists; choose another --run");
  ModelPreset preset = load_model_preset(o.model);
  ModelInfo info = describe(preset, o.frames, o.height, o.width);  // validates the geometry
  const TrainingWindow window = training_window(o, preset);
  auto dataset = find_dataset(catalog, o.dataset);
  if (!dataset) throw Error(ErrorCode::not_found, o.dataset, "no such dataset");

  // Memory: weights/grads/AdamW (16 B per parameter) + activations (~ 2·base·mult channels per pixel
  // of the first level, which runs at 1/patch² of the pixels, a dozen saved tensors per level) + the
  // decoded clips.
  MemoryEstimate estimate;
  estimate.parameters = info.vae_parameters;
  estimate.weight_bytes = info.vae_parameters * 16;
  estimate.activation_bytes = 4 * o.batch * (window.frames + 8) * window.height * window.width *
                              preset.vae.base_channels * 24 / (int64_t(preset.vae.patch) * preset.vae.patch);
  estimate.total_bytes = estimate.weight_bytes + estimate.activation_bytes + (int64_t(300) << 20);
  preflight_memory(estimate, o.max_memory_gb, o.run);

  torch::set_num_threads(static_cast<int>(o.threads));
  ClipFilter filter;
  filter.dataset_id = dataset->id;
  std::vector<torch::Tensor> videos;  // uint8 [3, T, H, W] to keep memory low
  int64_t rejected = 0, total = 0;
  {
    auto clips = list_clips(catalog, filter);
    ProgressMeter meter(progress, "decode", "clips", static_cast<int64_t>(clips.size()));
    for (const auto& clip : clips) {
      ++total;
      cancel.throw_if_cancelled("decode");
      if (clip.decision == ClipDecision::reject) {
        ++rejected;
        continue;
      }
      try {
        auto source = get_source(catalog, clip.source_id);
        if (!source) throw Error(ErrorCode::not_found, cat("clip ", clip.id), "its source is gone");
        auto v = decode_clip_video(source->path, clip.start_s, o.frames, o.width, o.height, o.fps);
        videos.push_back(v.add(1.0).mul(127.5).round().to(torch::kUInt8));
      } catch (const Error& e) {
        result.failures.push_back({clip.id, e.what()});
        log_warning(cat("clip ", clip.id, ": skipped: ", e.what()));
      }
      meter.advance(1);
    }
  }
  if (videos.empty())
    throw Error(ErrorCode::invalid_argument, o.dataset,
                cat("no clips to train on: the dataset has ", total, " clip(s), ", rejected, " rejected, ",
                    result.failures.size(), " unreadable"));
  result.clips = static_cast<int64_t>(videos.size());
  auto to_float = [](const torch::Tensor& u8) { return u8.to(torch::kFloat32).div(127.5).sub(1.0); };

  config["data"]["size"] = cat(o.width, "x", o.height);
  config["data"]["frames"] = o.frames;
  config["data"]["fps"] = o.fps;
  fs::create_directories(result.paths.root, ec);
  RunManifest manifest;
  manifest.name = o.run;
  manifest.kind = RunLayoutKind::vae;
  manifest.preset = preset.name;
  manifest.dataset = o.dataset;
  manifest.config = config;
  write_run_manifest(result.paths, manifest);

  const torch::Device device = choose_compute_device(o.device);
  const PrecisionChoice precision = choose_compute_precision(o.precision, device.type());
  log_info(cat("device ", device.str(), ", precision ", to_string(precision.precision), " (",
               precision.reason, ")"));
  torch::manual_seed(o.seed);
  VAEBundle model(preset.vae);
  model->to(device);  // after seeding on the CPU: the same initial weights on any device
  model->train();
  auto params = named_parameters(*model);
  AdamW optimizer(params, o.adam);
  MetricsLog metrics(result.paths, 0);
  ProgressMeter meter(progress, "train-vae", "steps", o.steps);
  std::vector<torch::Tensor> trained;
  for (auto& [n, p] : params) trained.push_back(p);
  int64_t last_saved = 0;
  for (int64_t step = 1; step <= o.steps; ++step) {
    cancel.throw_if_cancelled(cat("VAE training at step ", step - 1));
    const auto start = std::chrono::steady_clock::now();
    const torch::Tensor batch = vae_training_batch(videos, o, window, step).to(device);
    nlohmann::json line =
        vae_train_step(*model, optimizer, trained, batch, o, precision.precision, step, last_saved);
    result.last_step = step;
    result.last_loss = line["loss"].get<double>();
    line["step_ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    line["peak_rss_bytes"] = peak_rss_bytes();
    metrics.append(line);
    meter.update(step, cat("loss ", result.last_loss));
    if (step % o.save_every == 0 && step != o.steps) {
      save_vae_checkpoint(result.paths, *model, optimizer, step, result.last_loss, preset.name,
                          o.keep_checkpoints);
      last_saved = step;
    }
  }
  meter.flush();

  model->to(torch::kCPU);  // the measurements below run beside the decoded clips, in host memory
  model->eval();
  torch::NoGradGuard no_grad;
  // Latent statistics and the latent -> RGB map over (up to) 64 clips.
  const size_t sample = std::min<size_t>(videos.size(), 64);
  std::vector<torch::Tensor> means, rgbs;
  for (size_t i = 0; i < sample; ++i) {
    auto v = to_float(videos[i]);
    means.push_back(model->vae->encode(v.unsqueeze(0)).first);
    rgbs.push_back(pooled_rgb(*model->vae, v));
  }
  model->vae->measure_latent_stats(means);
  auto mean_t = model->vae->latent_mean.to(torch::kFloat64),
       std_t = model->vae->latent_std.to(torch::kFloat64);
  result.latent_stats.mean =
      std::vector<double>(mean_t.data_ptr<double>(), mean_t.data_ptr<double>() + mean_t.numel());
  result.latent_stats.std =
      std::vector<double>(std_t.data_ptr<double>(), std_t.data_ptr<double>() + std_t.numel());
  write_latent_stats(result.paths, result.latent_stats);

  const int64_t channels = preset.vae.latent_channels;
  std::vector<torch::Tensor> xs, ys;
  for (size_t i = 0; i < sample; ++i) {
    xs.push_back(model->vae->normalize(means[i])[0].reshape({channels, -1}).t());
    ys.push_back(rgbs[i].reshape({3, -1}).t());
  }
  auto x = torch::cat(xs).to(torch::kFloat64);
  x = torch::cat({x, torch::ones({x.size(0), 1}, x.options())}, 1);
  auto y = torch::cat(ys).to(torch::kFloat64);
  auto gram = x.t().mm(x) + 1e-6 * torch::eye(channels + 1, x.options());
  auto w = torch::linalg::solve(gram, x.t().mm(y), true);  // [C+1, 3]
  nlohmann::json weight = nlohmann::json::array();
  for (int64_t r = 0; r < 3; ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t c = 0; c < channels; ++c) row.push_back(w[c][r].item<double>());
    weight.push_back(row);
  }
  nlohmann::json bias = nlohmann::json::array();
  for (int64_t r = 0; r < 3; ++r) bias.push_back(w[channels][r].item<double>());
  write_json_atomic(result.paths.latent_rgb(), {{"weight", weight}, {"bias", bias}, {"space", "normalized"}});

  save_vae_checkpoint(result.paths, *model, optimizer, o.steps, result.last_loss, preset.name,
                      o.keep_checkpoints);

  const fs::path heldout = dataset->root_dir / "heldout.jsonl";
  if (o.heldout_clips > 0 && fs::is_regular_file(heldout, ec)) {
    auto entries = read_manifest(heldout).entries;
    double mse_sum = 0;
    int64_t used = 0;
    std::vector<RgbFrame> sheet;  // per clip: a row of originals, then a row of reconstructions
    for (const auto& e : entries) {
      if (used >= o.heldout_clips) break;
      try {
        auto v = decode_clip_video(e.path, e.start_s.value_or(0.0), o.frames, o.width, o.height, o.fps);
        auto recon = model->vae->decode(model->vae->encode(v.unsqueeze(0)).first, o.frames).clamp(-1, 1)[0];
        // Both in [-1, 1]: a peak-to-peak of 2 gives the same dB as 8-bit PSNR with peak 255.
        mse_sum += (recon - v).pow(2).mean().item<double>();
        for (const auto& video : {v, recon})
          for (auto& f : video_to_frames(video.narrow(1, 0, std::min<int64_t>(o.frames, kSheetColumns))))
            sheet.push_back(std::move(f));
        ++used;
      } catch (const Error& err) {
        log_warning(cat(e.path.string(), ": held-out clip skipped: ", err.what()));
      }
    }
    if (used > 0) {
      fs::create_directories(result.paths.samples(), ec);
      const auto columns = static_cast<int>(std::min<int64_t>(o.frames, kSheetColumns));
      write_png(result.paths.samples() / "heldout_reconstruction.png",
                contact_sheet(sheet, columns, static_cast<int>(o.width), static_cast<int>(o.height)));
      result.heldout_psnr_db = 10.0 * std::log10(4.0 / std::max(mse_sum / double(used), 1e-12));
      result.heldout_clips = used;
      metrics.append(
          {{"step", o.steps}, {"eval", "heldout"}, {"psnr_db", *result.heldout_psnr_db}, {"clips", used}});
    }
  }
  return result;
}

}  // namespace mugv
