#include "train/trainer.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/lora.h"
#include "train/step_log.h"
#include "train/trainer_checkpoint.h"
#include "train/trainer_session.h"
#include "train/trainer_step.h"

#include <algorithm>
#include <chrono>
#include <set>

namespace mugv {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr int64_t kRuntimeAllowanceBytes = int64_t(300) << 20;

}  // namespace

namespace dit_training {
namespace {

// Flags every rank must agree on before acting (cancel, save now, sample now): summed over the world.
struct StepFlags {
  bool cancel = false, save = false, sample = false;
};
StepFlags agree(const Session& s, StepFlags local) {
  if (!s.groups) return local;
  auto t = torch::tensor({int(local.cancel), int(local.save), int(local.sample)}, torch::kInt32);
  s.groups->all_reduce_sum(GroupKind::world, t);
  return {t[0].item<int>() > 0, t[1].item<int>() > 0, t[2].item<int>() > 0};
}

TrainResult run_loop(Session& s, const CancelToken& cancel, const TrainCallbacks& callbacks,
                     TrainResult result) {
  const auto& o = s.options;
  if (s.step >= o.steps)
    throw Error(ErrorCode::invalid_argument, o.run,
                cat("already at step ", s.step, "; give --steps above it"));
  const ParallelLayout layout = s.layout();
  DataOptions data;
  data.batch_size = o.batch;
  data.seed = o.seed;
  data.prefetch = o.prefetch;
  data.min_batch = layout.dp;  // every data-parallel rank gets at least one sample of each batch
  if (o.bucket_batch == "memory") {
    if (s.pipelined())
      throw Error(
          ErrorCode::usage, "--bucket-batch",
          "per-bucket batch sizes need one micro-batch per step (no pipeline stages or --micro-batches)");
    data.bucket_batch_sizes =
        memory_bucket_batches(s.preset, s.clips, o.batch, trainable_estimate(s),
                              s.objective == TrainObjective::dpo ? 2 : 1);  // a DPO clip is a pair
    if (s.leader())
      for (const auto& [g, size] : data.bucket_batch_sizes)
        log_info(cat("bucket ", std::get<0>(g), " frames ", std::get<2>(g), "x", std::get<1>(g), ": ", size,
                     " clips per batch"));
  } else if (o.bucket_batch != "fixed") {
    throw Error(ErrorCode::usage, "--bucket-batch", cat("'", o.bucket_batch, "' is not fixed or memory"));
  }
  // The first rank of each replica reads and tokenises; its tp x cp x pp partners receive (next_step_data).
  std::unique_ptr<LatentLoader> loader;
  if (!s.groups || s.groups->group_rank(GroupKind::replica) == 0)
    loader = std::make_unique<LatentLoader>(s.clips, data, s.cursor);

  result.gemm_flops = measure_gemm_flops(
      s.device.is_cuda() ? 4096 : 512, 6,
      s.precision == ComputePrecision::bf16 ? torch::kBFloat16 : torch::kFloat32, s.device);
  double peak_flops = result.gemm_flops;  // of all ranks together
  if (s.groups) {
    auto total = torch::tensor({result.gemm_flops}, torch::kFloat64);
    s.groups->all_reduce_sum(GroupKind::world, total);
    peak_flops = total.item<double>();
  }
  const int64_t text_tokens = s.preset.text.max_tokens;
  const double text_params = double(parameter_count(*s.model->text));
  MetricsLog metrics = s.leader() ? MetricsLog(s.paths, s.step) : MetricsLog();

  ProgressMeter meter(s.leader() ? callbacks.progress : ProgressFn(), "train", "steps", o.steps);
  meter.update(s.step);
  bool sample_notice = false;
  int64_t last_saved = s.step;
  double last_loss = 0;
  StepFlags pending;
  while (s.step < o.steps) {
    const int64_t step = s.step + 1;
    if (callbacks.before_step) callbacks.before_step(step, *s.model);
    pending.cancel = agree(s, {cancel.cancel_requested(), false, false}).cancel;
    if (pending.cancel) {
      if (s.step > last_saved) result.last_checkpoint = save_checkpoint(s, last_loss);
      cancel.throw_if_cancelled(cat("training at step ", s.step));
      throw Error(ErrorCode::cancelled, o.run, cat("another rank was cancelled at step ", s.step));
    }
    auto t0 = std::chrono::steady_clock::now();
    StepData batch = next_step_data(s, loader.get(), text_tokens);
    apply_curriculum(s, batch, step);
    const int64_t global_batch = batch.global_batch;
    const auto& latents = batch.latents;
    auto stop_nonfinite = [&](const char* what, double value) {
      throw nonfinite_step_error(o.run, step, what, value, last_saved);
    };
    StepOutcome outcome = train_step(s, batch, step, stop_nonfinite);
    const double loss_value = outcome.pass.loss, grad_norm = outcome.grad_norm, lr = outcome.lr;
    const double comm_ms = outcome.communication_ms, pipeline_wait_ms = outcome.pass.pipeline_wait_ms,
                 pipeline_ms = outcome.pass.pipeline_ms;
    s.step = step;
    s.cursor = batch.next_cursor;
    last_loss = loss_value;

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t video_tokens =
        dit_video_tokens(s.preset.dit, latents.size(2), latents.size(3), latents.size(4));
    // Post-training also runs the frozen reference forward (a third of a training pass) on every sample, and
    // DPO puts both generations of a pair through each model.
    const double objective_factor = s.objective == TrainObjective::dpo   ? 2.0 * 4.0 / 3.0
                                    : s.objective == TrainObjective::kto ? 4.0 / 3.0
                                                                         : 1.0;
    const double flops_per_sample =
        objective_factor *
        (dit_flops_per_token(s.preset.dit, video_tokens, text_tokens) * double(video_tokens) +
         6.0 * text_params * double(text_tokens));
    StepMetrics m;
    m.step = step;
    m.loss = loss_value;
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.tokens_per_s = seconds > 0 ? double(video_tokens * global_batch) / seconds : 0;
    m.flops_per_s = seconds > 0 ? flops_per_sample * double(global_batch) / seconds : 0;
    m.mfu = peak_flops > 0 ? m.flops_per_s / peak_flops : 0;
    m.peak_rss_bytes = peak_rss_bytes();
    m.data_wait_ms = batch.wait_ms;
    m.step_ms = seconds * 1000.0;
    m.communication_ms = comm_ms;
    m.pipeline_wait_ms = pipeline_wait_ms;
    m.pipeline_ms = pipeline_ms;
    m.compute_ms = std::max(0.0, m.step_ms - comm_ms - pipeline_wait_ms - batch.wait_ms);
    m.cursor = batch.cursor;
    m.objective = std::move(outcome.pass.objective_metrics);
    m.curriculum = std::move(batch.curriculum);
    if (s.groups) {  // every rank's split, for the per-rank view of the step
      auto mine = torch::tensor({m.compute_ms, m.communication_ms, m.data_wait_ms, double(m.peak_rss_bytes),
                                 m.pipeline_wait_ms, m.pipeline_ms},
                                torch::kFloat64);
      auto all = s.groups->all_gather(GroupKind::world, mine, 0).view({-1, 6});
      for (int64_t r = 0; r < all.size(0); ++r)
        m.ranks.push_back({all[r][0].item<double>(), all[r][1].item<double>(), all[r][2].item<double>(),
                           int64_t(all[r][3].item<double>()), all[r][4].item<double>(),
                           all[r][5].item<double>()});
    }
    if (s.leader()) {
      metrics.append(m.to_json());
      if (callbacks.on_step) callbacks.on_step(m);
      meter.update(step, cat("loss ", loss_value));
    }

    StepFlags requests;
    if (s.leader()) {
      requests.save = callbacks.save_requested && callbacks.save_requested();
      requests.sample = callbacks.sample_requested && callbacks.sample_requested();
    }
    requests = agree(s, requests);
    if (s.power_ema && step % (o.ema_snapshot_every > 0 ? o.ema_snapshot_every : o.save_every) == 0)
      save_ema_snapshot(s);
    if (step % o.save_every == 0 || step == o.steps || requests.save) {
      result.last_checkpoint = save_checkpoint(s, loss_value);
      last_saved = step;
    }
    if ((o.sample_every > 0 && step % o.sample_every == 0) || requests.sample) {
      if (layout.tp * layout.cp * layout.pp > 1) {
        if (!sample_notice && s.leader())
          log_info(
              "samples during training: skipped (the model is split by tensor, context or pipeline "
              "parallel; generate from a checkpoint instead)");
        sample_notice = true;
      } else if (callbacks.sample) {
        if (s.leader()) callbacks.sample(step, s.paths, *s.model);
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

TrainObjective objective_of(const TrainOptions& o) {
  const auto objective = train_objective_from_string(o.objective);
  if (!objective)
    throw Error(ErrorCode::usage, "--objective", cat("'", o.objective, "' is not flow, dpo or kto"));
  if (is_preference_objective(*objective) && o.from.empty())
    throw Error(ErrorCode::usage, "--objective",
                cat(o.objective, " needs the base it starts from: --from RUN"));
  return *objective;
}

// A fine-tune learns in its base's latent space with its base's model: the VAE run and model preset follow
// the base; a different VAE run given explicitly is refused (its latents mean something else).
void adopt_base(Session& s) {
  const std::string cache = base_latent_cache(*s.base);
  const std::string model =
      s.base->is_release() ? s.base->release.filename().string() : s.base->manifest.preset;
  if (!s.options.vae_run.empty() && s.options.vae_run != cache)
    throw Error(ErrorCode::invalid_argument, "--vae-run",
                cat("the base learnt the latents of '", cache, "', not '", s.options.vae_run,
                    "'; leave --vae-run out and encode the dataset with the base's VAE",
                    s.base->is_release() ? " (mugv encode --model)" : ""));
  if (s.options.model != model) log_info(cat("run ", s.options.run, ": model ", model, " (the base's)"));
  s.options.vae_run = cache;
  s.options.model = model;
}

}  // namespace
}  // namespace dit_training

nlohmann::json StepMetrics::to_json() const {
  nlohmann::json j = {{"step", step},
                      {"loss", loss},
                      {"lr", lr},
                      {"grad_norm", grad_norm},
                      {"tokens_per_s", tokens_per_s},
                      {"flops_per_s", flops_per_s},
                      {"mfu", mfu},
                      {"peak_rss_bytes", peak_rss_bytes},
                      {"data_wait_ms", data_wait_ms},
                      {"step_ms", step_ms},
                      {"compute_ms", compute_ms},
                      {"communication_ms", communication_ms},
                      {"pipeline_wait_ms", pipeline_wait_ms},
                      {"pipeline_ms", pipeline_ms},
                      {"epoch", cursor.epoch}};
  if (objective.is_object()) j["objective"] = objective;
  if (curriculum.is_object()) j["curriculum"] = curriculum;
  if (!ranks.empty()) {
    auto& list = j["ranks"] = nlohmann::json::array();
    for (const auto& r : ranks)
      list.push_back({{"compute_ms", r.compute_ms},
                      {"communication_ms", r.communication_ms},
                      {"data_wait_ms", r.data_wait_ms},
                      {"pipeline_wait_ms", r.pipeline_wait_ms},
                      {"pipeline_ms", r.pipeline_ms},
                      {"peak_rss_bytes", r.peak_rss_bytes}});
  }
  return j;
}

std::string MemoryEstimate::describe() const {
  char buffer[200];
  std::snprintf(
      buffer, sizeof buffer,
      "%.2f GiB (weights, gradients, AdamW and EMA %.2f GiB, activations %.2f GiB, runtime %.2f GiB)",
      total_bytes / kGiB, weight_bytes / kGiB, activation_bytes / kGiB, kRuntimeAllowanceBytes / kGiB);
  return buffer;
}

MemoryEstimate estimate_dit_training_memory(const ModelPreset& preset, int64_t batch, int64_t video_tokens,
                                            int64_t trainable_parameters) {
  MemoryEstimate e;
  e.parameters = dit_parameter_count(preset.dit) + text_encoder_parameter_count(preset.text);
  if (trainable_parameters >= 0) e.parameters += trainable_parameters;  // adapters on a frozen base
  e.trainable_parameters = trainable_parameters >= 0 ? trainable_parameters : e.parameters;
  // fp32: every weight; for the trained ones also gradients, two AdamW moments and the EMA.
  e.weight_bytes = e.parameters * 4 + e.trainable_parameters * 4 * (2 + AdamW::kStateCopies);
  const double d = preset.dit.hidden, s = double(video_tokens + 2), st = preset.dit.text_tokens,
               heads = preset.dit.heads, depth = preset.dit.depth;
  // Saved activations per block: ~(qkv 3d, attention out d, MLP 2·4d, norms/modulation ~8d) ≈ 20d per
  // token, plus the self- and cross-attention probabilities (kept for backward, with softmax input).
  const double per_block = 20.0 * d * s + 2.0 * heads * s * s + 2.0 * heads * s * st;
  e.activation_bytes = static_cast<int64_t>(4.0 * double(batch) * depth * per_block);
  e.total_bytes = e.weight_bytes + e.activation_bytes + kRuntimeAllowanceBytes;
  return e;
}

namespace {

// The run's stored config follows what a resume changed (steps, layout, threads, device, precision), so a
// later plain `mugv resume` continues the same way instead of asking for the same flags again.
void record_resume_changes(const RunPaths& paths, RunManifest manifest, const ResumeChanges& changes) {
  nlohmann::json updates = changes.values.is_object() ? changes.values : nlohmann::json::object();
  if (changes.steps) updates["train.steps"] = *changes.steps;
  if (updates.empty()) return;
  for (auto it = updates.begin(); it != updates.end(); ++it) {
    const auto parts = split(it.key(), '.');
    nlohmann::json* node = &manifest.config;
    for (size_t i = 0; i + 1 < parts.size(); ++i) node = &(*node)[parts[i]];
    (*node)[parts.back()] = it.value();
  }
  write_run_manifest(paths, manifest);
}

}  // namespace

std::map<BucketGeometry, int64_t> memory_bucket_batches(const ModelPreset& preset,
                                                        const std::vector<CachedClip>& clips, int64_t batch,
                                                        int64_t trainable_parameters,
                                                        int64_t samples_per_clip) {
  auto bytes = [&](int64_t clips_in_batch, int64_t tokens) {
    return estimate_dit_training_memory(preset, clips_in_batch * samples_per_clip, tokens,
                                        trainable_parameters)
        .total_bytes;
  };
  std::map<BucketGeometry, std::pair<int64_t, int64_t>> buckets;  // geometry -> (video tokens, clips)
  int64_t most = 0;
  for (const auto& c : clips) {
    auto& [tokens, count] = buckets[{c.frames, c.height, c.width}];
    tokens = dit_video_tokens(preset.dit, c.latent_shape[1], c.latent_shape[2], c.latent_shape[3]);
    most = std::max(most, tokens);
    ++count;
  }
  const int64_t budget = bytes(batch, most);
  std::map<BucketGeometry, int64_t> sizes;
  for (const auto& [geometry, bucket] : buckets) {
    const auto [tokens, count] = bucket;
    int64_t size = batch;
    while (size < count && bytes(size + 1, tokens) <= budget) ++size;
    sizes[geometry] = size;
  }
  return sizes;
}

void preflight_memory(const MemoryEstimate& estimate, double max_memory_gb, const std::string& subject,
                      bool host_memory) {
  if (max_memory_gb > 0 && double(estimate.total_bytes) > max_memory_gb * kGiB)
    throw Error(ErrorCode::out_of_memory, subject,
                cat("training needs about ", estimate.describe(), ", more than --max-memory-gb ",
                    max_memory_gb, "; lower --batch or use a smaller preset"));
  auto available = host_memory ? device_memory_available_bytes(torch::kCPU) : std::nullopt;
  if (available && estimate.total_bytes > *available)
    throw Error(ErrorCode::out_of_memory, subject,
                cat("training needs about ", estimate.describe(), " but only ",
                    human_bytes(double(*available)), " is available; lower --batch or use a smaller preset"));
}

TrainResult train_dit(const TrainOptions& options, const nlohmann::json& config, const CancelToken& cancel,
                      const TrainCallbacks& callbacks) {
  dit_training::Session s;
  s.options = options;
  s.objective = dit_training::objective_of(options);
  s.paths = run_paths(options.run);
  if (!options.from.empty()) {
    s.base = find_base(options.from, weight_set_from_string(options.from_weights).value_or(WeightSet::ema));
    dit_training::adopt_base(s);
  }
  s.preset = s.base ? base_preset(*s.base) : load_model_preset(s.options.model);
  connect_ranks(s);
  // Refused before the run folder exists, so a corrected command can use the same name.
  if (s.options.base_dtype == "bf16" &&
      choose_compute_precision(s.options.precision, s.device.type()).precision != ComputePrecision::bf16)
    throw Error(ErrorCode::usage, "--base-dtype",
                "a bf16 base needs --precision bf16 (its linears compute in bf16)");
  load_training_data(s, true);
  load_run_curriculum(s, true);
  preflight_memory(
      estimate_dit_training_memory(s.preset, options.batch * (s.objective == TrainObjective::dpo ? 2 : 1),
                                   max_video_tokens(s), trainable_estimate(s)),
      options.max_memory_gb, options.run, !s.device.is_cuda());

  on_leader(s, [&] {
    std::error_code ec;
    if (fs::exists(s.paths.manifest(), ec))
      throw Error(ErrorCode::conflict, options.run,
                  "a run of this name exists; continue it with `mugv resume " + options.run +
                      "` or choose another --run");
    if (s.base) {  // the base's text encoder reads its own tokenizer's ids
      s.tokenizer = Tokenizer::from_file(base_tokenizer(*s.base));
    } else {
      std::set<std::string> unique;
      for (const auto& c : s.clips) unique.insert(c.caption);
      s.tokenizer =
          Tokenizer::train(std::vector<std::string>(unique.begin(), unique.end()), s.preset.text.vocab_size);
    }

    fs::create_directories(s.paths.root, ec);
    if (ec)
      throw Error(ErrorCode::io, s.paths.root.string(), "cannot create the run folder: " + ec.message());
    s.tokenizer->save(s.paths.tokenizer());
    RunManifest manifest;
    manifest.name = options.run;
    manifest.kind = RunLayoutKind::dit;
    manifest.preset = s.preset.name;
    manifest.dataset = options.dataset;
    manifest.vae_run = s.options.vae_run;
    manifest.config = config;
    if (s.base) {
      manifest.config["base"] = to_json(*s.base);
      manifest.config["train"]["vae_run"] = s.options.vae_run;
      manifest.config["train"]["model"] = s.options.model;
    }
    write_run_manifest(s.paths, manifest);
    store_run_data(s);
  });
  if (!s.tokenizer) s.tokenizer = Tokenizer::from_file(s.paths.tokenizer());  // the other ranks read rank 0's
  if (!s.leader() && is_preference_objective(s.objective)) {
    // Every rank trains on what rank 0 stored, even if labels changed while the ranks were starting.
    auto data = read_preference_data(preference_dir(s));
    s.clips = std::move(data.clips);
    s.preference_items = std::move(data.items);
  }

  build_model(s);
  int64_t trainable = 0;
  for (const auto& [name, p] : s.params) trainable += p.numel();
  log_info(cat("run ", options.run, ": ", s.clips.size(), " cached clips, ", parameter_count(*s.model),
               " parameters (", trainable, " trained), ", options.threads, " threads",
               s.base ? cat(", from ", describe(*s.base), " (",
                            s.lora() ? "LoRA " + s.options.lora : std::string("full fine-tune"), ")")
                      : std::string()));
  return dit_training::run_loop(s, cancel, callbacks, TrainResult{});
}

TrainResult resume_dit(const std::string& name, const ResumeChanges& changes, const CancelToken& cancel,
                       const TrainCallbacks& callbacks) {
  dit_training::Session s;
  s.paths = run_paths(name);
  RunManifest manifest = read_run_manifest(s.paths);
  if (manifest.kind != RunLayoutKind::dit)
    throw Error(ErrorCode::invalid_argument, name,
                cat("is a ", to_string(manifest.kind), " run; resume continues DiT runs"));
  // The manifest names the run's identity; the config holds everything else.
  ParamRegistry registry;
  define_train_params(registry, TrainKind::dit);
  ParamValues values = dit_resume_values(registry, s.paths, manifest, changes);
  s.options = train_options_from(values, TrainKind::dit);
  s.options.run = name;
  s.objective = dit_training::objective_of(s.options);
  const std::string stored_optimizer = manifest.config.is_object()
                                           ? manifest.config.value("/train/optimizer"_json_pointer, "adamw")
                                           : std::string("adamw");
  if (s.options.optimizer != stored_optimizer)
    throw Error(ErrorCode::usage, "--optimizer",
                cat(name, " trains with ", stored_optimizer, "; its optimizer state cannot continue under ",
                    s.options.optimizer, " (start a new run with --from ", name, " instead)"));
  s.base = base_of_run(manifest);  // the very checkpoint it started from, checked by its SHA-256
  s.preset = s.base ? base_preset(*s.base) : load_model_preset(manifest.preset);
  connect_ranks(s);
  load_training_data(s, false);
  load_run_curriculum(s, false);
  preflight_memory(
      estimate_dit_training_memory(s.preset, s.options.batch * (s.objective == TrainObjective::dpo ? 2 : 1),
                                   max_video_tokens(s), trainable_estimate(s)),
      s.options.max_memory_gb, name, !s.device.is_cuda());
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
    std::string why = result.refused.empty() ? "it has no checkpoint"
                                             : cat(result.refused.size(), " checkpoint(s) refused");
    throw Error(ErrorCode::not_found, name, "nothing to resume: " + why);
  }
  // Rewind `latest` to what we continue from, so refused newer checkpoints are not picked by readers.
  if (s.leader()) {
    write_text_atomic(s.paths.checkpoints() / "latest", CheckpointStore::step_dir_name(s.step) + "\n");
    record_resume_changes(s.paths, manifest, changes);
  }
  log_info(cat("run ", name, ": resuming at step ", s.step, " of ", s.options.steps));
  return dit_training::run_loop(s, cancel, callbacks, std::move(result));
}

}  // namespace mugv
