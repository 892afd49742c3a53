#include "train/trainer.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "train/flow.h"
#include "train/latent_cache.h"
#include "train/optim.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <set>

namespace mugv {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr int64_t kRuntimeAllowanceBytes = int64_t(300) << 20;

struct Session {
  TrainOptions options;
  RunPaths paths;
  ModelPreset preset;
  std::vector<CachedClip> clips;
  std::optional<Tokenizer> tokenizer;
  DiTBundle model{nullptr};
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<Ema> ema;
  DataCursor cursor;
  int64_t step = 0;  // last finished step
};

void check_cache(Session& s) {
  const fs::path cache = latent_cache_dir(s.options.dataset, s.options.vae_run);
  s.clips = list_cached_clips(cache);
  if (s.clips.empty())
    throw Error(ErrorCode::invalid_argument, s.options.dataset,
                cat("no cached latents for VAE run '", s.options.vae_run, "' in ", cache.string(),
                    "; run `mugv encode --dataset ", s.options.dataset, " --vae-run ", s.options.vae_run, "` first"));
  for (const auto& c : s.clips)
    if (c.latent_shape[0] != s.preset.dit.in_channels)
      throw Error(ErrorCode::invalid_argument, c.path.string(),
                  cat("latent has ", c.latent_shape[0], " channels; model preset '", s.preset.name, "' expects ",
                      s.preset.dit.in_channels, " (encode with a VAE of the same preset)"));
}

int64_t max_video_tokens(const Session& s) {
  int64_t tokens = 0;
  for (const auto& c : s.clips)
    tokens = std::max(tokens, dit_video_tokens(s.preset.dit, c.latent_shape[1], c.latent_shape[2], c.latent_shape[3]));
  return tokens;
}

void build_model(Session& s) {
  torch::set_num_threads(static_cast<int>(s.options.threads));
  torch::manual_seed(s.options.seed);
  s.model = DiTBundle(s.preset);
  s.model->train();
  s.params = named_parameters(*s.model);
  s.optimizer = std::make_unique<AdamW>(s.params, s.options.adam);
  s.ema = std::make_unique<Ema>(s.params, s.options.ema_decay);
}

std::map<std::string, std::string> file_metadata(const Session& s, int64_t step) {
  return {{"preset", s.preset.name}, {"kind", "dit"}, {"step", std::to_string(step)}, {"run", s.options.run}};
}

CheckpointRef save_checkpoint(Session& s, double loss) {
  CheckpointStore store(s.paths.checkpoints());
  fs::path staging = store.begin(s.step);
  save_module(*s.model, staging / "model.safetensors", file_metadata(s, s.step));
  s.ema->save(staging / "ema.safetensors", file_metadata(s, s.step));
  s.optimizer->save(staging / "optimizer.safetensors");
  nlohmann::json state = {{"step", s.step},
                          {"seed", s.options.seed},
                          {"rng_state", torch_rng_state_base64()},
                          {"data_cursor", {{"epoch", s.cursor.epoch}, {"position", s.cursor.position}}},
                          {"optimizer_steps", s.optimizer->steps_taken()}};
  write_json_atomic(staging / "trainer_state.json", state);
  auto ref = store.commit(staging, s.step,
                          {{"preset", s.preset.name}, {"kind", "dit"}, {"loss", loss}, {"run", s.options.run}});
  store.prune(static_cast<int>(s.options.keep_checkpoints));
  return ref;
}

// Loads one checkpoint into the session; throws Error naming the problem.
void load_checkpoint(Session& s, const CheckpointRef& ref) {
  const std::string preset = ref.metadata.value("preset", "");
  if (preset != s.preset.name)
    throw Error(ErrorCode::invalid_argument, ref.dir.string(),
                cat("made for model preset '", preset, "'; this run uses '", s.preset.name, "'"));
  load_module(*s.model, ref.dir / "model.safetensors");
  s.ema->load(ref.dir / "ema.safetensors");
  s.optimizer->load(ref.dir / "optimizer.safetensors");
  auto state = read_json_file(ref.dir / "trainer_state.json");
  try {
    s.step = state.at("step").get<int64_t>();
    s.cursor.epoch = state.at("data_cursor").at("epoch").get<int64_t>();
    s.cursor.position = state.at("data_cursor").at("position").get<int64_t>();
    set_torch_rng_state_base64(state.at("rng_state").get<std::string>(), (ref.dir / "trainer_state.json").string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::corrupt, (ref.dir / "trainer_state.json").string(), e.what());
  }
  if (s.step != ref.step)
    throw Error(ErrorCode::corrupt, ref.dir.string(), cat("trainer state says step ", s.step, ", folder says ", ref.step));
}

void truncate_metrics(const RunPaths& paths, int64_t after_step) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.metrics(), ec)) return;
  std::ifstream in(paths.metrics());
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) > after_step) continue;
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    kept += line + "\n";
  }
  write_text_atomic(paths.metrics(), kept);
}

TrainResult run_loop(Session& s, const CancelToken& cancel, const TrainCallbacks& callbacks, TrainResult result) {
  const auto& o = s.options;
  if (s.step >= o.steps)
    throw Error(ErrorCode::invalid_argument, o.run, cat("already at step ", s.step, "; give --steps above it"));
  DataOptions data;
  data.batch_size = o.batch;
  data.seed = o.seed;
  data.prefetch = o.prefetch;
  LatentLoader loader(s.clips, data, s.cursor);

  result.gemm_flops = measure_gemm_flops();
  const int64_t text_tokens = s.preset.text.max_tokens;
  const double text_params = double(parameter_count(*s.model->text));
  truncate_metrics(s.paths, s.step);
  std::ofstream metrics(s.paths.metrics(), std::ios::app);
  if (!metrics) throw Error(ErrorCode::io, s.paths.metrics().string(), "cannot append metrics");

  ProgressMeter meter(callbacks.progress, "train", "steps", o.steps);
  meter.update(s.step);
  bool sample_notice = false;
  int64_t last_saved = s.step;
  double last_loss = 0;
  while (s.step < o.steps) {
    const int64_t step = s.step + 1;
    if (callbacks.before_step) callbacks.before_step(step, *s.model);
    if (cancel.cancel_requested()) {
      if (s.step > last_saved) result.last_checkpoint = save_checkpoint(s, last_loss);
      cancel.throw_if_cancelled(cat("training at step ", s.step));
    }
    auto t0 = std::chrono::steady_clock::now();
    Batch batch = loader.next();
    const int64_t b = batch.latents.size(0);

    std::vector<int64_t> ids, mask;
    for (const auto& caption : batch.captions) {
      auto tok = s.tokenizer->encode(caption, static_cast<int>(text_tokens), TokenLimitPolicy::truncate);
      ids.insert(ids.end(), tok.ids.begin(), tok.ids.end());
      mask.insert(mask.end(), tok.mask.begin(), tok.mask.end());
    }
    auto ids_t = torch::tensor(ids, torch::kInt64).view({b, text_tokens});
    auto mask_t = torch::tensor(mask, torch::kInt64).view({b, text_tokens}).to(torch::kFloat32);

    FlowBatch fb = make_flow_batch(batch.latents, o.seed, step, batch.height, batch.width, o.flow);
    auto text = s.model->text->forward(ids_t, mask_t);
    auto [text_in, mask_in] = s.model->dit->drop_captions(text, mask_t, fb.drop_caption);
    const bool any_cond = fb.cond_mask.any().item<bool>();
    auto pred = s.model->dit->forward(fb.x_t, fb.t, text_in, mask_in, batch.fps,
                                      any_cond ? fb.cond_mask : torch::Tensor());
    auto loss = masked_flow_loss(pred, fb.target, fb.cond_mask);
    const double loss_value = loss.item<double>();
    auto stop_nonfinite = [&](const char* what, double value) {
      std::string kept = s.step > 0 && last_saved > 0 ? cat("the last good checkpoint step-", last_saved, " is kept")
                                                      : std::string("no checkpoint was saved yet");
      throw Error(ErrorCode::invalid_argument, o.run,
                  cat("step ", step, ": ", what, " is ", value, "; training stopped and ", kept,
                      " (lower --lr, raise --warmup or check the data)"));
    };
    if (!std::isfinite(loss_value)) stop_nonfinite("loss", loss_value);

    s.optimizer->zero_grad();
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& [name, p] : s.params)
      if (p.grad().defined()) grads.push_back(p);
    double grad_norm = o.grad_clip > 0 ? torch::nn::utils::clip_grad_norm_(grads, o.grad_clip)
                                       : torch::nn::utils::clip_grad_norm_(grads, std::numeric_limits<double>::infinity());
    if (!std::isfinite(grad_norm)) stop_nonfinite("gradient norm", grad_norm);
    const double lr = scheduled_lr(step, o.lr, o.warmup_steps, o.steps, o.schedule, o.min_lr);
    s.optimizer->step(lr);
    s.ema->update(s.params);
    s.step = step;
    s.cursor = loader.cursor();
    last_loss = loss_value;

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t video_tokens = dit_video_tokens(s.preset.dit, batch.latents.size(2), batch.latents.size(3),
                                                  batch.latents.size(4));
    const double flops_per_sample =
        dit_flops_per_token(s.preset.dit, video_tokens, text_tokens) * double(video_tokens) +
        6.0 * text_params * double(text_tokens);
    StepMetrics m;
    m.step = step;
    m.loss = loss_value;
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.tokens_per_s = seconds > 0 ? double(video_tokens * b) / seconds : 0;
    m.flops_per_s = seconds > 0 ? flops_per_sample * double(b) / seconds : 0;
    m.mfu = result.gemm_flops > 0 ? m.flops_per_s / result.gemm_flops : 0;
    m.peak_rss_bytes = peak_rss_bytes();
    m.data_wait_ms = batch.wait_ms;
    m.step_ms = seconds * 1000.0;
    m.cursor = batch.cursor;
    metrics << m.to_json().dump() << "\n" << std::flush;
    if (callbacks.on_step) callbacks.on_step(m);
    meter.update(step, cat("loss ", loss_value));

    const bool save_requested = callbacks.save_requested && callbacks.save_requested();
    if (step % o.save_every == 0 || step == o.steps || save_requested) {
      result.last_checkpoint = save_checkpoint(s, loss_value);
      last_saved = step;
    }
    const bool sample_requested = callbacks.sample_requested && callbacks.sample_requested();
    if ((o.sample_every > 0 && step % o.sample_every == 0) || sample_requested) {
      if (callbacks.sample) {
        callbacks.sample(step, s.paths, *s.model);
      } else if (!sample_notice) {
        log_info("samples during training: skipped (no sampler is wired into this build)");
        sample_notice = true;
      }
    }
  }
  meter.flush();
  result.last_step = s.step;
  result.last_loss = last_loss;
  result.paths = s.paths;
  return result;
}

}  // namespace

nlohmann::json StepMetrics::to_json() const {
  return {{"step", step},
          {"loss", loss},
          {"lr", lr},
          {"grad_norm", grad_norm},
          {"tokens_per_s", tokens_per_s},
          {"flops_per_s", flops_per_s},
          {"mfu", mfu},
          {"peak_rss_bytes", peak_rss_bytes},
          {"data_wait_ms", data_wait_ms},
          {"step_ms", step_ms},
          {"epoch", cursor.epoch}};
}

std::string MemoryEstimate::describe() const {
  char buffer[200];
  std::snprintf(buffer, sizeof buffer, "%.2f GiB (weights, gradients, AdamW and EMA %.2f GiB, activations %.2f GiB, runtime %.2f GiB)",
                total_bytes / kGiB, weight_bytes / kGiB, activation_bytes / kGiB, kRuntimeAllowanceBytes / kGiB);
  return buffer;
}

MemoryEstimate estimate_dit_training_memory(const ModelPreset& preset, int64_t batch, int64_t video_tokens) {
  MemoryEstimate e;
  e.parameters = dit_parameter_count(preset.dit) + text_encoder_parameter_count(preset.text);
  // fp32: weights, gradients, two AdamW moments, EMA.
  e.weight_bytes = e.parameters * 4 * (3 + AdamW::kStateCopies);
  const double d = preset.dit.hidden, s = double(video_tokens + 2), st = preset.dit.text_tokens,
               heads = preset.dit.heads, depth = preset.dit.depth;
  // Saved activations per block: ~(qkv 3d, attention out d, MLP 2·4d, norms/modulation ~8d) ≈ 20d per
  // token, plus the self- and cross-attention probabilities (kept for backward, with softmax input).
  const double per_block = 20.0 * d * s + 2.0 * heads * s * s + 2.0 * heads * s * st;
  e.activation_bytes = static_cast<int64_t>(4.0 * double(batch) * depth * per_block);
  e.total_bytes = e.weight_bytes + e.activation_bytes + kRuntimeAllowanceBytes;
  return e;
}

void preflight_memory(const MemoryEstimate& estimate, double max_memory_gb, const std::string& subject) {
  if (max_memory_gb > 0 && double(estimate.total_bytes) > max_memory_gb * kGiB)
    throw Error(ErrorCode::out_of_memory, subject,
                cat("training needs about ", estimate.describe(), ", more than --max-memory-gb ", max_memory_gb,
                    "; lower --batch or use a smaller preset"));
  auto available = available_memory_bytes();
  if (available && estimate.total_bytes > *available)
    throw Error(ErrorCode::out_of_memory, subject,
                cat("training needs about ", estimate.describe(), " but only ", human_bytes(double(*available)),
                    " is available; lower --batch or use a smaller preset"));
}

TrainResult train_dit(const TrainOptions& options, const nlohmann::json& config, const CancelToken& cancel,
                      const TrainCallbacks& callbacks) {
  Session s;
  s.options = options;
  s.paths = run_paths(options.run);
  std::error_code ec;
  if (fs::exists(s.paths.manifest(), ec))
    throw Error(ErrorCode::conflict, options.run,
                "a run of this name exists; continue it with `mugv resume " + options.run + "` or choose another --run");
  s.preset = load_model_preset(options.model);
  check_cache(s);
  preflight_memory(estimate_dit_training_memory(s.preset, options.batch, max_video_tokens(s)), options.max_memory_gb,
                   options.run);

  std::set<std::string> unique;
  for (const auto& c : s.clips) unique.insert(c.caption);
  s.tokenizer = Tokenizer::train(std::vector<std::string>(unique.begin(), unique.end()), s.preset.text.vocab_size);

  fs::create_directories(s.paths.root, ec);
  if (ec) throw Error(ErrorCode::io, s.paths.root.string(), "cannot create the run folder: " + ec.message());
  s.tokenizer->save(s.paths.tokenizer());
  RunManifest manifest;
  manifest.name = options.run;
  manifest.kind = RunLayoutKind::dit;
  manifest.preset = s.preset.name;
  manifest.dataset = options.dataset;
  manifest.vae_run = options.vae_run;
  manifest.config = config;
  write_run_manifest(s.paths, manifest);

  build_model(s);
  log_info(cat("run ", options.run, ": ", s.clips.size(), " cached clips, ", parameter_count(*s.model),
               " parameters, ", options.threads, " threads"));
  return run_loop(s, cancel, callbacks, TrainResult{});
}

TrainResult resume_dit(const std::string& name, std::optional<int64_t> steps, const CancelToken& cancel,
                       const TrainCallbacks& callbacks) {
  Session s;
  s.paths = run_paths(name);
  RunManifest manifest = read_run_manifest(s.paths);
  if (manifest.kind != RunLayoutKind::dit)
    throw Error(ErrorCode::invalid_argument, name, cat("is a ", to_string(manifest.kind), " run; resume continues DiT runs"));
  // The manifest names the run's identity; the config holds everything else.
  ParamRegistry registry;
  define_train_params(registry, TrainKind::dit);
  ParamValues values = dit_resume_values(registry, s.paths, manifest, steps);
  s.options = train_options_from(values, TrainKind::dit);
  s.options.run = name;
  s.preset = load_model_preset(manifest.preset);
  check_cache(s);
  preflight_memory(estimate_dit_training_memory(s.preset, s.options.batch, max_video_tokens(s)),
                   s.options.max_memory_gb, name);
  s.tokenizer = Tokenizer::from_file(s.paths.tokenizer());
  build_model(s);

  TrainResult result;
  CheckpointStore store(s.paths.checkpoints());
  auto refs = store.list();
  bool loaded = false;
  for (auto it = refs.rbegin(); it != refs.rend() && !loaded; ++it) {
    std::string reason;
    if (auto problem = store.verify(it->dir)) {
      reason = *problem;
    } else {
      try {
        load_checkpoint(s, store.open(it->step));
        loaded = true;
        result.start_step = it->step;
        continue;
      } catch (const Error& e) {
        reason = e.message();
      } catch (const c10::Error& e) {
        reason = e.what_without_backtrace();
      }
    }
    log_warning(cat(it->dir.string(), ": refused: ", reason));
    result.refused.push_back({it->dir, reason});
  }
  if (!loaded) {
    std::string why = result.refused.empty() ? "it has no checkpoint" : cat(result.refused.size(), " checkpoint(s) refused");
    throw Error(ErrorCode::not_found, name, "nothing to resume: " + why);
  }
  // Rewind `latest` to what we continue from, so refused newer checkpoints are not picked by readers.
  write_text_atomic(s.paths.checkpoints() / "latest", CheckpointStore::step_dir_name(s.step) + "\n");
  log_info(cat("run ", name, ": resuming at step ", s.step, " of ", s.options.steps));
  return run_loop(s, cancel, callbacks, std::move(result));
}

}  // namespace mugv
