// mugv train | resume | train-vae: the DiT and VAE trainers (backend/train) on the command line.
#include "command.h"

#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/presets.h"
#include "core/strings.h"
#include "parallel/slurm.h"
#include "sample/model_bundle.h"
#include "sample/training_samples.h"
#include "train/checkpoint_store.h"
#include "train/evaluation.h"
#include "train/fine_tune.h"
#include "train/latent_cache.h"
#include "train/preference_collect.h"
#include "train/run_layout.h"
#include "train/train_params.h"
#include "train/trainer.h"
#include "train/vae_trainer.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>

namespace mugv::cli {
namespace {

void print_dit_result(const TrainResult& r, bool json) {
  nlohmann::json refused = nlohmann::json::array();
  for (const auto& p : r.refused) refused.push_back({{"checkpoint", p.dir.string()}, {"reason", p.reason}});
  nlohmann::json out = {{"run", r.paths.root.filename().string()},
                        {"run_dir", r.paths.root.string()},
                        {"start_step", r.start_step},
                        {"last_step", r.last_step},
                        {"loss", r.last_loss},
                        {"gemm_flops", r.gemm_flops},
                        {"checkpoint", r.last_checkpoint ? r.last_checkpoint->dir.string() : ""},
                        {"refused", refused}};
  if (json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  for (const auto& p : r.refused) std::printf("refused %s: %s\n", p.dir.c_str(), p.reason.c_str());
  std::printf("run %s: step %lld, loss %.4f, checkpoint %s\n", out["run"].get<std::string>().c_str(),
              static_cast<long long>(r.last_step), r.last_loss, out["checkpoint"].get<std::string>().c_str());
}

// Metrics and samples go to the job's reporter (the studio's charts and previews) as well as to the run
// folder. The sampler is built at the first render: the run's tokenizer only exists once training began.
TrainCallbacks dit_callbacks(const Invocation& inv, const std::string& run, const TrainOptions& options) {
  TrainCallbacks callbacks;
  callbacks.progress = inv.progress;
  const JobReporter reporter = inv.reporter;
  if (reporter.metrics)
    callbacks.on_step = [reporter](const StepMetrics& m) { reporter.metrics(m.step, m.to_json()); };
  callbacks.save_requested = reporter.take_save_request;
  callbacks.sample_requested = reporter.take_sample_request;
  TrainingSampleOptions sample_options;
  sample_options.prompts = options.sample_prompts;
  sample_options.seed = static_cast<uint64_t>(options.seed);
  sample_options.steps = static_cast<int>(options.sample_steps);
  auto sampler = std::make_shared<std::unique_ptr<TrainingSampler>>();
  CancelToken cancel = inv.cancel;
  callbacks.sample = [=](int64_t step, const RunPaths&, DiTBundleImpl& model) {
    try {
      if (!*sampler) *sampler = std::make_unique<TrainingSampler>(run, sample_options);
      RenderedSamples rendered = (*sampler)->render(step, model, cancel);
      if (reporter.preview && !rendered.first_video.empty()) reporter.preview(step, rendered.first_video);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      log_warning(cat("samples of step ", step, " skipped: ", e.what()));  // training goes on
    }
  };
  return callbacks;
}

// The options of `mugv train --slurm`: where and how big the batch job is. They shape the submission only;
// the job's own `mugv train` gets every other option as given.
void define_slurm_params(ParamRegistry& r) {
  r.add(param("slurm.submit", "--slurm", ParamType::boolean, false,
              "submit the run to Slurm (sbatch + srun, rendezvous from Slurm) instead of training here",
              "cluster"));
  auto count = [&](const char* key, const char* flag, int64_t fallback, const char* help, double min) {
    auto p = param(key, flag, ParamType::integer, fallback, help, "cluster");
    p.min_value = min;
    r.add(p);
  };
  count("slurm.nodes", "--nodes", 1, "nodes of the Slurm job", 1);
  count("slurm.tasks_per_node", "--tasks-per-node", 1, "ranks per node (one per GPU, or per CPU socket)", 1);
  count("slurm.gpus_per_node", "--gpus-per-node", 0, "GPUs requested per node (0: none)", 0);
  r.add(param("slurm.partition", "--partition", ParamType::text, "", "Slurm partition (empty: the default)",
              "cluster"));
  r.add(param("slurm.account", "--account", ParamType::text, "", "Slurm account (empty: the default)",
              "cluster"));
  r.add(param("slurm.time", "--time", ParamType::text, "",
              "time limit, e.g. 2:00:00 (empty: the partition's)", "cluster"));
}

int submit_train_to_slurm(const Invocation& inv, const std::string& run) {
  const ParamValues& values = inv.values;
  const fs::path dir = mugv_home() / "slurm";
  SlurmJob job;
  job.name = "mugv-train";
  job.nodes = static_cast<int>(values.get_int("slurm.nodes"));
  job.tasks_per_node = static_cast<int>(values.get_int("slurm.tasks_per_node"));
  job.gpus_per_node = static_cast<int>(values.get_int("slurm.gpus_per_node"));
  job.partition = values.get_text("slurm.partition");
  job.account = values.get_text("slurm.account");
  job.time = values.get_text("slurm.time");
  job.output = dir / (run + "-%j.out");
  job.environment["MUGV_HOME"] = fs::absolute(mugv_home()).string();
  job.command = {executable_path().string(), "train"};
  for (auto& arg :
       command_line_arguments(inv.values, [](const ParamSpec& s) { return !starts_with(s.key, "slurm."); }))
    job.command.push_back(std::move(arg));
  const fs::path script = dir / (run + ".sbatch");
  const std::string id = submit_slurm_job(job, script);
  const std::string log = (dir / cat(run, "-", id, ".out")).string();
  if (inv.json) {
    std::cout << nlohmann::json{{"job_id", id}, {"script", script.string()}, {"log", log}, {"run", run}}.dump(
                     2)
              << "\n";
  } else {
    std::printf(
        "submitted Slurm job %s (%d node(s) x %d rank(s)) for run %s\n  script %s\n  log    %s\n"
        "  state: scontrol show job %s; the run folder fills as it trains\n",
        id.c_str(), job.nodes, job.tasks_per_node, run.c_str(), script.string().c_str(), log.c_str(),
        id.c_str());
  }
  return 0;
}

// What an earlier attempt of this same server job (run.json's config.origin.job) left of the run: a
// checkpoint to continue from, or nothing: the run is not this job's, does not exist, or has no usable
// checkpoint (its folder is then removed: it holds nothing a fresh start does not remake).
struct EarlierAttempt {
  std::optional<CheckpointRef> checkpoint;  // set: continue from it
};

EarlierAttempt earlier_attempt(const std::string& run, std::optional<int64_t> job_id) {
  const RunPaths paths = run_paths(run);
  std::error_code ec;
  if (!job_id || !fs::exists(paths.manifest(), ec)) return {};
  const RunManifest manifest = read_run_manifest(paths);
  const auto& origin = manifest.config.value("origin", nlohmann::json::object());
  if (origin.value("job", int64_t(-1)) != *job_id) return {};
  if (auto checkpoint = CheckpointStore(paths.checkpoints()).latest_good()) return {checkpoint};
  log_warning(cat("run ", run, ": an interrupted attempt of job ", *job_id,
                  " saved no checkpoint; starting the run again"));
  fs::remove_all(paths.root, ec);
  if (ec)
    throw Error(ErrorCode::io, paths.root.string(), "cannot remove the unfinished run: " + ec.message());
  return {};
}

// What a new run trains on, from the catalog (the trainer itself never opens it): the clips its --clip-filter
// selects (SFT on a curated subset), or the labelled generations of a post-training objective.
void resolve_training_data(TrainOptions& options) {
  const auto objective = train_objective_from_string(options.objective).value_or(TrainObjective::flow);
  if (!options.clip_filter.empty()) {
    ClipFilter filter = parse_clip_filter(options.clip_filter);
    Catalog catalog = Catalog::open(catalog_path());
    const auto dataset = find_dataset(catalog, options.dataset);
    if (!dataset) throw Error(ErrorCode::not_found, options.dataset, "no such dataset in the catalog");
    filter.dataset_id = dataset->id;
    std::vector<int64_t> ids;
    for (const Clip& clip : list_clips(catalog, filter)) ids.push_back(clip.id);
    if (ids.empty())
      throw Error(ErrorCode::invalid_argument, "--clip-filter",
                  cat("'", options.clip_filter, "' matches no clip of dataset ", options.dataset));
    options.clip_subset = std::move(ids);
  }
  if (is_preference_objective(objective)) {
    const BaseModel base =
        find_base(options.from, weight_set_from_string(options.from_weights).value_or(WeightSet::ema));
    Catalog catalog = Catalog::open(catalog_path());
    options.preferences = std::make_shared<PreferenceCollection>(
        collect_preferences(catalog, objective, options.preference_labels, base_latent_cache(base),
                            base_preset(base).dit.in_channels));
  }
}

int run_train(const Invocation& inv) {
  ParamValues values = resolve_train_preset(inv.values, TrainKind::dit);
  TrainOptions options =
      train_options_from(values, TrainKind::dit);  // checks the options before a submission too
  if (inv.values.get_bool("slurm.submit")) return submit_train_to_slurm(inv, options.run);
  if (const auto earlier = earlier_attempt(options.run, inv.job_id); earlier.checkpoint) {
    // The server retried this job after an interruption: continue the run to the steps asked for.
    TrainResult result;
    if (earlier.checkpoint->step >= options.steps) {  // it finished; only the report was lost
      result.paths = run_paths(options.run);
      result.start_step = result.last_step = earlier.checkpoint->step;
      result.last_checkpoint = earlier.checkpoint;
      result.last_loss = earlier.checkpoint->metadata.value("loss", 0.0);
    } else {
      log_info(cat("run ", options.run, ": continuing from step ", earlier.checkpoint->step,
                   ", checkpointed by an interrupted attempt of job ", *inv.job_id));
      result = resume_dit(options.run, ResumeChanges(options.steps), inv.cancel,
                          dit_callbacks(inv, options.run, options));
      finish_progress_line();
    }
    print_dit_result(result, inv.json);
    return 0;
  }
  nlohmann::json config = values.to_json();
  if (inv.job_id) config["origin"] = {{"job", *inv.job_id}};  // lets a retry of this job find the run
  resolve_training_data(options);
  auto result = train_dit(options, config, inv.cancel, dit_callbacks(inv, options.run, options));
  finish_progress_line();
  print_dit_result(result, inv.json);
  return 0;
}

// What `mugv resume` may change besides the step count: where and how the run computes (ranks, threads,
// device, precision), never the model or the data. The run's stored config takes the changes.
constexpr const char* kResumeChangeable[] = {
    "train.tp",          "train.cp",         "train.pp",
    "train.pp_schedule", "train.pp_virtual", "train.micro_batches",
    "train.zero",        "train.recompute",  "train.recompute_blocks",
    "train.offload",     "train.threads",    "train.comm_timeout",
    "train.device",      "train.precision"};

int run_resume(const Invocation& inv) {
  ResumeChanges changes;
  if (inv.values.source_of("train.steps") == ParamSource::command_line)
    changes.steps = inv.values.get_int("train.steps");
  for (const char* key : kResumeChangeable)
    if (inv.values.source_of(key) == ParamSource::command_line) changes.values[key] = inv.values.get(key);
  const std::string& run = inv.positional[0];
  const RunPaths paths = run_paths(run);
  ParamRegistry registry;
  define_train_params(registry, TrainKind::dit);
  TrainOptions options = train_options_from(
      dit_resume_values(registry, paths, read_run_manifest(paths), changes), TrainKind::dit);
  auto result = resume_dit(run, changes, inv.cancel, dit_callbacks(inv, run, options));
  finish_progress_line();
  print_dit_result(result, inv.json);
  return 0;
}

int run_train_vae(const Invocation& inv) {
  ParamValues values = resolve_train_preset(inv.values, TrainKind::vae);
  TrainOptions options = train_options_from(values, TrainKind::vae);
  Catalog catalog = Catalog::open(catalog_path());
  auto r = train_vae(catalog, options, values.to_json(), inv.cancel, inv.progress);
  finish_progress_line();
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : r.failures) failures.push_back({{"clip", f.clip_id}, {"reason", f.reason}});
  nlohmann::json out = {{"run", options.run},
                        {"run_dir", r.paths.root.string()},
                        {"steps", r.last_step},
                        {"loss", r.last_loss},
                        {"clips", r.clips},
                        {"failures", failures},
                        {"latent_mean", r.latent_stats.mean},
                        {"latent_std", r.latent_stats.std},
                        {"heldout_clips", r.heldout_clips}};
  if (r.heldout_psnr_db) out["heldout_psnr_db"] = *r.heldout_psnr_db;
  if (inv.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& f : r.failures)
    std::printf("  skipped clip %lld: %s\n", static_cast<long long>(f.clip_id), f.reason.c_str());
  std::printf("VAE run %s: %lld steps on %lld clips, loss %.4f", options.run.c_str(),
              static_cast<long long>(r.last_step), static_cast<long long>(r.clips), r.last_loss);
  if (r.heldout_psnr_db)
    std::printf(", held-out PSNR %.2f dB on %lld clips", *r.heldout_psnr_db,
                static_cast<long long>(r.heldout_clips));
  std::printf("\n");
  return 0;
}

}  // namespace

// mugv sweep: one run per learning rate of the grid (NAME-lr<lr>, with every other training option as given),
// each scored by its validation loss on --val-dataset at the end (train/evaluation.h); the best becomes the
// training preset NAME (presets/train/NAME.toml in $MUGV_HOME, inheriting the swept training preset when it
// is one, with the batch, schedule and objective the rate was tuned with), so that
// `mugv train --preset NAME --model WIDER` trains with it — with --parametrization mup the rate carries over.
int run_sweep(const Invocation& inv) {
  ParamValues values = resolve_train_preset(inv.values, TrainKind::dit);
  const TrainOptions base = train_options_from(values, TrainKind::dit);
  if (!inv.values.has("sweep.val_dataset"))
    throw Error(ErrorCode::usage, "--val-dataset", "name the dataset the learning rates are judged on");
  std::vector<double> lrs;
  for (const auto& item : inv.values.get("sweep.lrs")) lrs.push_back(item.get<double>());
  if (lrs.size() < 2) throw Error(ErrorCode::usage, "--lrs", "give at least two learning rates");
  const std::string val_dataset = inv.values.get_text("sweep.val_dataset");
  const auto val_clips = list_cached_clips(latent_cache_dir(val_dataset, base.vae_run));
  if (val_clips.empty())
    throw Error(ErrorCode::invalid_argument, val_dataset,
                cat("has no latents of VAE run ", base.vae_run, "; run `mugv encode --dataset ", val_dataset,
                    " --vae-run ", base.vae_run, "` first"));
  FlowEvalOptions eval;
  eval.shift_base_px = base.flow.shift_base_px;
  nlohmann::json results = nlohmann::json::array();
  double best_loss = std::numeric_limits<double>::infinity(), best_lr = 0;
  for (size_t i = 0; i < lrs.size(); ++i) {
    const double lr = lrs[i];
    const std::string run = cat(base.run, "-lr", lr);
    values.set("train.lr", lr, ParamSource::command_line, "mugv sweep");
    values.set("train.run", run, ParamSource::command_line, "mugv sweep");
    TrainOptions options = train_options_from(values, TrainKind::dit);
    log_info(cat("sweep ", base.run, ": ", i + 1, "/", lrs.size(), ", lr ", lr, " as run ", run));
    double loss = std::numeric_limits<double>::quiet_NaN();
    std::string problem;
    try {
      train_dit(options, values.to_json(), inv.cancel, dit_callbacks(inv, run, options));
      finish_progress_line();
      ModelBundle bundle = load_run_weights(run, WeightsKind::model);
      loss = fixed_draw_flow_loss(*bundle.dit, *bundle.text, *bundle.tokenizer, bundle.preset.text.max_tokens,
                                  val_clips, eval);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      problem = e.what();  // a diverging rate is a result of the sweep, not its end
      log_warning(cat("sweep ", base.run, ": lr ", lr, ": ", problem));
    }
    results.push_back({{"lr", lr},
                       {"run", run},
                       {"val_loss", std::isfinite(loss) ? nlohmann::json(loss) : nullptr},
                       {"error", problem.empty() ? nlohmann::json() : nlohmann::json(problem)}});
    if (std::isfinite(loss) && loss < best_loss) best_loss = loss, best_lr = lr;
  }
  if (!std::isfinite(best_loss))
    throw Error(ErrorCode::invalid_argument, base.run, "no learning rate of the grid trained");
  // What the rate was tuned with goes along: it transfers with the same batch, schedule and objective.
  nlohmann::json tuned = {
      {"description", cat("learning rate ", best_lr, " from mugv sweep of ", base.preset, " (", base.model,
                          ", ", base.parametrization, ", ", base.steps, " steps, validation loss ", best_loss,
                          " on ", val_dataset, ")")},
      {"train",
       {{"lr", best_lr},
        {"model", base.model},
        {"optimizer", base.optimizer},
        {"parametrization", base.parametrization},
        {"mup_base_hidden", base.mup_base_hidden},
        {"batch", base.batch},
        {"warmup", base.warmup_steps},
        {"schedule", to_string(base.schedule)},
        {"weight_decay", base.adam.weight_decay}}},
      {"flow", {{"shift_base", base.flow.shift_base_px}, {"caption_dropout", base.flow.p_caption_dropout}}}};
  if (find_preset("train", base.preset)) tuned["inherits"] = base.preset;
  const fs::path preset = save_user_preset("train", base.run, tuned);
  const nlohmann::json out = {{"sweep", base.run},
                              {"best_lr", best_lr},
                              {"best_val_loss", best_loss},
                              {"preset", preset.string()},
                              {"results", results}};
  if (inv.json) {
    std::cout << out.dump(2) << "\n";
  } else {
    for (const auto& r : results)
      std::printf("  lr %-10g %s\n", r["lr"].get<double>(),
                  r["val_loss"].is_null() ? ("failed: " + r["error"].get<std::string>()).c_str()
                                          : cat("validation loss ", r["val_loss"].get<double>()).c_str());
    std::printf("best lr %g (validation loss %.5f): training preset %s\n", best_lr, best_loss,
                preset.c_str());
  }
  return 0;
}

Command sweep_command() {
  Command c;
  c.words = {"sweep"};
  c.summary = "train one run per learning rate, judge them on a validation set, keep the best as a preset";
  c.usage = "--preset P --dataset D --vae-run V --run NAME --val-dataset DV --lrs A,B,C [training options]";
  c.define = [](ParamRegistry& r) {
    define_train_params(r, TrainKind::dit);
    auto lrs = param("sweep.lrs", "--lrs", ParamType::list, nlohmann::json::array({1e-4, 3e-4, 1e-3, 3e-3}),
                     "learning rates to try, comma-separated", "sweep");
    lrs.item_type = ParamType::real;
    r.add(lrs);
    r.add(param("sweep.val_dataset", "--val-dataset", ParamType::text, nullptr,
                "dataset (encoded with the same VAE run) the runs are judged on", "sweep"));
  };
  c.run = run_sweep;
  c.job_kind = "train";
  return c;
}

Command train_command() {
  Command c;
  c.words = {"train"};
  c.summary = "train a DiT (rectified flow) on a dataset's cached latents";
  c.usage = "--preset P --dataset D --vae-run V --run NAME [options] [--slurm --nodes M --tasks-per-node K]";
  c.define = [](ParamRegistry& r) {
    define_train_params(r, TrainKind::dit);
    define_slurm_params(r);
  };
  c.run = run_train;
  c.job_kind = "train";
  return c;
}

Command resume_command() {
  Command c;
  c.words = {"resume"};
  c.summary = "continue a DiT run from its last good checkpoint";
  c.usage =
      "NAME [--steps N] [--tp N --cp N --zero 0|1 --recompute MODE --threads N --device D --precision P]";
  c.min_positional = c.max_positional = 1;
  c.define = [](ParamRegistry& r) {
    auto steps = param("train.steps", "--steps", ParamType::integer, nullptr,
                       "new total step count (default: the run's)", "training");
    steps.min_value = 1;
    r.add(steps);
    // The layout, threads, device and precision may change on resume (checkpoints load under any layout and
    // on any device); the defaults are the run's.
    ParamRegistry full;
    define_train_params(full, TrainKind::dit);
    for (const char* key : kResumeChangeable) {
      ParamSpec spec = *full.find_by_key(key);
      spec.default_value = nullptr;
      spec.help += " (default: the run's)";
      r.add(spec);
    }
  };
  c.run = run_resume;
  c.job_kind = "train";
  c.positional_type = ParamType::text;  // the run's name
  return c;
}

Command train_vae_command() {
  Command c;
  c.words = {"train-vae"};
  c.summary = "train the video VAE on a dataset; measures latent statistics and held-out PSNR";
  c.usage = "--preset P --dataset D --run NAME [--size WxH --frames F --fps R ...]";
  c.define = [](ParamRegistry& r) { define_train_params(r, TrainKind::vae); };
  c.run = run_train_vae;
  c.job_kind = "train_vae";
  return c;
}

}  // namespace mugv::cli
