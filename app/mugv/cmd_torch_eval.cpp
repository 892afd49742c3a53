// mugv eval --run NAME --dataset-dir DIR | --heldout FILE: generates every held-out prompt of the shapes
// starter dataset and checks colour, shape and direction of what came out.
// mugv eval --reconstruct --vae-run NAME --dataset-dir DIR: the same checks on the held-out clips after a
// VAE round trip (encode, decode): the ceiling a DiT on that VAE can reach, so a miss can be blamed on the
// right model.
// mugv eval --sensitivity --run NAME --dataset-dir DIR: how much swapping each word of the held-out prompts
// (colour, shape, direction, background) moves the run's guess of the clean video, step by step along
// the sampling trajectory: which words the model has bound and at which noise levels.
// mugv val-loss --run NAME --dataset D [--vae-run V] [--checkpoint STEP]: the flow loss of a run's
// checkpoints on a dataset's cached latents at fixed noise (train/evaluation.h), one line per checkpoint:
// what recipes (optimizers, learning rates, growth) are compared by.
#include "command.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "dataset/manifest.h"
#include "model/compute.h"
#include "model/run_models.h"
#include "sample/eval.h"
#include "sample/sampler.h"
#include "sample/video_io.h"
#include "train/checkpoint_store.h"
#include "train/clip_video.h"
#include "train/evaluation.h"
#include "train/latent_cache.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>

namespace mugv::cli {
namespace {

void define_eval(ParamRegistry& r) {
  r.add(param("eval.run", "--run", ParamType::text, nullptr, "the DiT run to evaluate", "eval"));
  r.add(param("eval.dataset_dir", "--dataset-dir", ParamType::path, nullptr,
              "a folder written by `mugv make-dataset shapes` (reads heldout.json and dataset.json)",
              "eval"));
  r.add(param("eval.heldout", "--heldout", ParamType::path, nullptr, "a heldout.json file", "eval"));
  auto steps = param("eval.steps", "--steps", ParamType::integer, 25, "Euler steps per video", "eval");
  steps.min_value = 1;
  r.add(steps);
  auto cfg = param("eval.cfg", "--cfg", ParamType::real, 4.0, "classifier-free guidance scale", "eval");
  cfg.min_value = 0.0;
  r.add(cfg);
  auto weights = param("eval.weights", "--weights", ParamType::choice, "auto",
                       "which weights of the checkpoint: auto (EMA when present), ema or model", "eval");
  weights.choices = {"auto", "ema", "model"};
  r.add(weights);
  r.add(device_param("eval.device", "eval"));
  auto seed = param("eval.seed", "--seed", ParamType::integer, 0,
                    "noise seed of the first prompt (then +1 each)", "eval");
  seed.min_value = 0.0;
  r.add(seed);
  auto checkpoint = param("eval.checkpoint", "--checkpoint", ParamType::integer, nullptr,
                          "evaluate the checkpoint of this step (default: the latest good one)", "eval");
  checkpoint.min_value = 0.0;
  r.add(checkpoint);
  auto backgrounds = param("eval.backgrounds", "--backgrounds", ParamType::choice, "listed",
                           "listed: each held-out prompt as listed; all: each held-out combination on every "
                           "background the starter set draws its colour on",
                           "eval");
  backgrounds.choices = {"listed", "all"};
  r.add(backgrounds);
  auto seeds = param("eval.seeds", "--seeds", ParamType::integer, 1,
                     "noise seeds per prompt (the spread over seeds is reported)", "eval");
  seeds.min_value = 1;
  seeds.max_value = 1000;
  r.add(seeds);
  r.add(param("eval.samples", "--samples", ParamType::path, nullptr,
              "folder to keep the generated videos in (one mp4 per prompt)", "eval"));
  r.add(param("eval.reconstruct", "--reconstruct", ParamType::boolean, false,
              "judge VAE round trips of the held-out clips (heldout.jsonl) instead of generated videos",
              "eval"));
  r.add(param("eval.sensitivity", "--sensitivity", ParamType::boolean, false,
              "measure how much each word of the held-out prompts steers the model instead of judging videos",
              "eval"));
  r.add(param("eval.vae_run", "--vae-run", ParamType::text, nullptr,
              "with --reconstruct: the VAE run (default: the VAE run of --run)", "eval"));
}

struct EvalSource {
  fs::path heldout;   // heldout.json (prompts)
  fs::path settings;  // dataset.json (frames, size, fps) beside it
};

EvalSource eval_source(const ParamValues& v) {
  if (v.has("eval.heldout")) {
    fs::path heldout = v.get_text("eval.heldout");
    return {heldout, heldout.parent_path() / "dataset.json"};
  }
  if (v.has("eval.dataset_dir")) {
    const fs::path dir = v.get_text("eval.dataset_dir");
    return {dir / "heldout.json", dir / "dataset.json"};
  }
  throw Error(ErrorCode::usage, "--dataset-dir", "give --dataset-dir DIR or --heldout FILE");
}

// Every held-out clip of heldout.jsonl (beside heldout.json) through the VAE at the dataset's geometry.
std::vector<ShapesVerdict> judge_reconstructions(const Invocation& inv, const EvalSource& source,
                                                 const GenerateRequest& geometry, std::string* vae_run_out) {
  const auto& v = inv.values;
  std::string vae_run;
  if (v.has("eval.vae_run")) {
    vae_run = v.get_text("eval.vae_run");
  } else if (v.has("eval.run")) {
    vae_run = read_run_manifest(run_paths(v.get_text("eval.run"))).vae_run;
    if (vae_run.empty())
      throw Error(ErrorCode::invalid_argument, v.get_text("eval.run"), "names no VAE run; give --vae-run");
  } else {
    throw Error(ErrorCode::usage, "--vae-run", "--reconstruct needs --vae-run NAME (or a DiT --run)");
  }
  *vae_run_out = vae_run;
  const fs::path clips_file = source.heldout.parent_path() / "heldout.jsonl";
  auto manifest = read_manifest(clips_file);
  for (const auto& problem : manifest.problems)
    log_warning(cat(clips_file.string(), ":", problem.line, ": ", problem.reason));
  if (manifest.entries.empty())
    throw Error(ErrorCode::invalid_argument, clips_file.string(), "holds no clips");

  VAEBundle bundle = load_vae_run(vae_run);
  torch::NoGradGuard no_grad;
  std::vector<ShapesVerdict> verdicts;
  ProgressMeter meter(inv.progress, "eval", "clips", static_cast<int64_t>(manifest.entries.size()));
  for (const auto& entry : manifest.entries) {
    inv.cancel.throw_if_cancelled("eval");
    try {
      auto video = decode_clip_video(entry.path, entry.start_s.value_or(0.0), geometry.frames, geometry.width,
                                     geometry.height, geometry.fps);
      auto recon = bundle->vae->decode(bundle->vae->encode(video.unsqueeze(0)).first, geometry.frames);
      verdicts.push_back(judge_shapes_clip(entry.caption, video_to_frames(recon.clamp(-1, 1)[0])));
    } catch (const Error& err) {
      log_warning(cat(entry.path.string(), ": held-out clip skipped: ", err.what()));
    }
    meter.advance(1, entry.caption);
  }
  meter.flush();
  finish_progress_line();
  if (verdicts.empty())
    throw Error(ErrorCode::invalid_argument, clips_file.string(), "no clip could be read");
  return verdicts;
}

// Generates every held-out prompt with the run's DiT.
std::vector<ShapesVerdict> judge_generations(const Invocation& inv, const std::vector<std::string>& prompts,
                                             const GenerateRequest& base, ModelBundle& bundle) {
  const auto& v = inv.values;
  std::optional<fs::path> samples;
  if (v.has("eval.samples")) {
    samples = fs::path(v.get_text("eval.samples"));
    fs::create_directories(*samples);
  }
  std::vector<ShapesVerdict> verdicts;
  const auto seeds = static_cast<size_t>(v.get_int("eval.seeds"));
  ProgressMeter meter(inv.progress, "eval", "videos", static_cast<int64_t>(prompts.size() * seeds));
  const auto first_seed = static_cast<uint64_t>(v.get_int("eval.seed"));
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (size_t k = 0; k < seeds; ++k) {
      GenerateRequest request = base;
      request.prompt = prompts[i];
      // With one seed per prompt this is the seed of the first prompt, then +1 each, as before.
      request.seed = first_seed + i * seeds + k;
      SampleResult result = sample(bundle, request, inv.cancel);
      if (samples) {
        const std::string name =
            seeds == 1 ? cat("eval_", std::setw(3), std::setfill('0'), i, ".mp4")
                       : cat("eval_", std::setw(3), std::setfill('0'), i, "_seed", request.seed, ".mp4");
        save_video(*samples / name, result, request.fps);
      }
      ShapesVerdict verdict = judge_shapes_clip(prompts[i], result.frames);
      verdict.seed = request.seed;
      verdict.repeat = static_cast<int>(k);
      verdicts.push_back(std::move(verdict));
      meter.update(static_cast<int64_t>(verdicts.size()), prompts[i]);
    }
  }
  meter.flush();
  finish_progress_line();
  return verdicts;
}

// Mean over the prompts of prompt_sensitivity(), per attribute and step.
PromptSensitivity mean_sensitivity(const Invocation& inv, const std::vector<std::string>& prompts,
                                   const GenerateRequest& base, ModelBundle& bundle) {
  PromptSensitivity total;
  ProgressMeter meter(inv.progress, "sensitivity", "prompts", static_cast<int64_t>(prompts.size()));
  const auto first_seed = static_cast<uint64_t>(inv.values.get_int("eval.seed"));
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest request = base;
    request.prompt = prompts[i];
    request.seed = first_seed + i;
    const PromptSensitivity one =
        prompt_sensitivity(bundle, request, shapes_prompt_alternatives(prompts[i]), inv.cancel);
    total.times = one.times;
    for (const auto& [name, values] : one.change) {
      auto& sum = total.change[name];
      sum.resize(values.size(), 0.0);
      for (size_t k = 0; k < values.size(); ++k) sum[k] += values[k] / double(prompts.size());
    }
    meter.update(static_cast<int64_t>(i + 1), prompts[i]);
  }
  meter.flush();
  finish_progress_line();
  return total;
}

int report_sensitivity(const Invocation& inv, const ModelBundle& bundle, const PromptSensitivity& s,
                       size_t prompts) {
  if (inv.json) {
    nlohmann::json j = {
        {"run", bundle.run.name}, {"mode", "sensitivity"}, {"checkpoint_step", bundle.checkpoint_step},
        {"prompts", prompts},     {"times", s.times},      {"change", s.change}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << bundle.run.name << " step " << bundle.checkpoint_step
            << ": change of the x0 guess when one word of " << prompts
            << " prompts is swapped (relative RMS)\n"
            << "     t";
  for (const auto& [name, values] : s.change) std::cout << std::setw(12) << name;
  std::cout << "\n";
  for (size_t k = 0; k < s.times.size(); ++k) {
    std::cout << std::fixed << std::setprecision(2) << std::setw(6) << s.times[k] << std::setprecision(4);
    for (const auto& [name, values] : s.change) std::cout << std::setw(12) << values[k];
    std::cout << "\n";
  }
  return 0;
}

int run_eval(const Invocation& inv) {
  const auto& v = inv.values;
  const bool reconstruct = v.get_bool("eval.reconstruct");
  if (reconstruct && v.get_bool("eval.sensitivity"))
    throw Error(ErrorCode::usage, "--sensitivity", "choose --reconstruct or --sensitivity, not both");
  if (!reconstruct && !v.has("eval.run")) throw Error(ErrorCode::usage, "--run", "name the run to evaluate");
  if (reconstruct && v.has("eval.checkpoint"))
    throw Error(ErrorCode::usage, "--checkpoint", "names a DiT checkpoint; --reconstruct judges the VAE");
  const EvalSource source = eval_source(v);

  GenerateRequest base;
  base.steps = static_cast<int>(v.get_int("eval.steps"));
  base.cfg_scale = v.get_real("eval.cfg");
  if (fs::exists(source.settings)) {
    const auto s = read_json_file(source.settings);
    base.frames = s.value("frames", base.frames);
    base.width = base.height = s.value("size", base.width);
    base.fps = s.value("fps", base.fps);
  }

  std::vector<ShapesVerdict> verdicts;
  std::string evaluated;  // the run whose output was judged
  int64_t step = 0;
  if (reconstruct) {
    verdicts = judge_reconstructions(inv, source, base, &evaluated);
  } else {
    auto prompts = read_heldout_prompts(source.heldout);
    if (prompts.empty())
      throw Error(ErrorCode::invalid_argument, source.heldout.string(), "holds no prompts");
    if (v.get_text("eval.backgrounds") == "all") prompts = on_every_background(prompts);
    std::optional<int64_t> checkpoint;
    if (v.has("eval.checkpoint")) checkpoint = v.get_int("eval.checkpoint");
    ModelBundle bundle = load_for_inference(
        v.get_text("eval.run"), choose_compute_device(v.get_text("eval.device")),
        weights_kind_from_string(v.get_text("eval.weights")).value_or(WeightsKind::unknown), checkpoint);
    if (v.get_bool("eval.sensitivity"))
      return report_sensitivity(inv, bundle, mean_sensitivity(inv, prompts, base, bundle), prompts.size());
    verdicts = judge_generations(inv, prompts, base, bundle);
    evaluated = bundle.run.name;
    step = bundle.checkpoint_step;
  }

  const ShapesScore total = score(verdicts);
  const auto by_background = score_by_background(verdicts);
  const auto by_seed = score_by_repeat(verdicts);
  if (inv.json) {
    nlohmann::json j = {{"run", evaluated},
                        {"mode", reconstruct ? "reconstruct" : "generate"},
                        {"checkpoint_step", step},
                        {"heldout", source.heldout.string()},
                        {"total", to_json(total)},
                        {"by_background", nlohmann::json::object()},
                        {"by_seed", nlohmann::json::object()},
                        {"prompts", nlohmann::json::array()}};
    for (const auto& [name, s] : by_background) j["by_background"][name] = to_json(s);
    for (const auto& [name, s] : by_seed) j["by_seed"][name] = to_json(s);
    for (const auto& verdict : verdicts) j["prompts"].push_back(to_json(verdict));
    std::cout << j.dump(2) << "\n";
  } else {
    auto mark = [](bool ok) { return ok ? "ok  " : "MISS"; };
    for (const auto& verdict : verdicts) {
      std::cout << mark(verdict.color_ok) << " colour  " << mark(verdict.shape_ok) << " shape  "
                << mark(verdict.direction_ok) << " direction  " << verdict.prompt << "  -> "
                << (verdict.got.found ? cat(verdict.got.color, " ", verdict.got.shape, " ",
                                            verdict.got.direction.empty() ? "still" : verdict.got.direction)
                                      : std::string("nothing visible"))
                << "\n";
    }
    std::cout << evaluated << (reconstruct ? " round trip" : cat(" step ", step)) << ": colour "
              << total.color << "/" << total.clips << ", shape " << total.shape << "/" << total.clips
              << ", direction " << total.direction << "/" << total.clips << " (axis " << total.axis << "/"
              << total.clips << "), all three " << total.all << "/" << total.clips << "\n";
    auto breakdown = [](const char* what, const std::map<std::string, ShapesScore>& scores) {
      if (scores.size() < 2) return;
      for (const auto& [name, s] : scores)
        std::cout << "  " << what << " " << name << ": colour " << s.color << "/" << s.clips << ", shape "
                  << s.shape << "/" << s.clips << ", direction " << s.direction << "/" << s.clips << "\n";
    };
    breakdown("background", by_background);
    breakdown("seed no.", by_seed);
  }
  return 0;
}

}  // namespace

void define_val_loss(ParamRegistry& r) {
  r.add(param("val.run", "--run", ParamType::text, nullptr, "the DiT run whose checkpoints to evaluate",
              "eval"));
  r.add(param("val.dataset", "--dataset", ParamType::text, nullptr,
              "catalog dataset whose cached latents to evaluate on (encode it with the run's VAE first)",
              "eval"));
  r.add(param("val.vae_run", "--vae-run", ParamType::text, nullptr,
              "the latent cache's VAE run (default: the run's)", "eval"));
  auto checkpoint = param("val.checkpoint", "--checkpoint", ParamType::integer, nullptr,
                          "only the checkpoint of this step (default: every checkpoint of the run)", "eval");
  checkpoint.min_value = 0.0;
  r.add(checkpoint);
  auto weights = param("val.weights", "--weights", ParamType::choice, "model",
                       "which weights of each checkpoint: model (the trained ones) or ema", "eval");
  weights.choices = {"model", "ema"};
  r.add(weights);
  auto draws = param("val.draws", "--draws", ParamType::integer, 2, "noise draws per clip", "eval");
  draws.min_value = 1;
  draws.max_value = 64;
  r.add(draws);
  auto seed = param("val.seed", "--seed", ParamType::integer, 20, "seed of the draws", "eval");
  seed.min_value = 0.0;
  r.add(seed);
  auto shift = param("val.shift_base", "--shift-base", ParamType::real, nullptr,
                     "timestep shift base in pixels (default: the run's flow.shift_base)", "eval");
  shift.min_value = 1.0;
  r.add(shift);
  r.add(param("val.threads", "--threads", ParamType::integer, 0, "torch threads (0: all cores)", "eval"));
}

int run_val_loss(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("val.run")) throw Error(ErrorCode::usage, "--run", "name the run");
  if (!v.has("val.dataset")) throw Error(ErrorCode::usage, "--dataset", "name the dataset");
  const std::string run = v.get_text("val.run");
  if (v.get_int("val.threads") > 0) torch::set_num_threads(static_cast<int>(v.get_int("val.threads")));
  const RunManifest manifest = read_run_manifest(run_paths(run));
  const std::string vae_run = v.has("val.vae_run") ? v.get_text("val.vae_run") : manifest.vae_run;
  const fs::path cache = latent_cache_dir(v.get_text("val.dataset"), vae_run);
  const auto clips = list_cached_clips(cache);
  if (clips.empty())
    throw Error(ErrorCode::invalid_argument, cache.string(),
                cat("holds no cached clips; run `mugv encode --dataset ", v.get_text("val.dataset"),
                    " --vae-run ", vae_run, "` first"));
  FlowEvalOptions options;
  options.draws = v.get_int("val.draws");
  options.seed = static_cast<uint64_t>(v.get_int("val.seed"));
  options.shift_base_px =
      v.has("val.shift_base")
          ? v.get_real("val.shift_base")
          : (manifest.config.is_object() ? manifest.config.value("/flow/shift_base"_json_pointer, 512.0)
                                         : 512.0);
  std::vector<int64_t> steps;
  if (v.has("val.checkpoint")) {
    steps.push_back(v.get_int("val.checkpoint"));
  } else {
    for (const auto& ref : CheckpointStore(run_paths(run).checkpoints()).list()) steps.push_back(ref.step);
  }
  if (steps.empty()) throw Error(ErrorCode::not_found, run, "has no checkpoints");
  const WeightsKind weights =
      weights_kind_from_string(v.get_text("val.weights")).value_or(WeightsKind::model);
  for (int64_t step : steps) {
    inv.cancel.throw_if_cancelled("val-loss");
    ModelBundle bundle = load_run_weights(run, weights, step);
    const double loss = fixed_draw_flow_loss(*bundle.dit, *bundle.text, *bundle.tokenizer,
                                             bundle.preset.text.max_tokens, clips, options);
    const nlohmann::json line = {{"run", run},
                                 {"step", step},
                                 {"loss", loss},
                                 {"weights", to_string(bundle.weights)},
                                 {"clips", clips.size()},
                                 {"draws", options.draws}};
    if (inv.json)
      std::cout << line.dump() << std::endl;
    else
      std::printf("%s step %lld: validation loss %.5f (%zu clips x %lld draws, %s weights)\n", run.c_str(),
                  static_cast<long long>(step), loss, clips.size(), static_cast<long long>(options.draws),
                  to_string(bundle.weights));
  }
  return 0;
}

Command val_loss_command() {
  Command c;
  c.words = {"val-loss"};
  c.summary = "flow loss of a run's checkpoints on a dataset's cached latents at fixed noise";
  c.usage = "--run NAME --dataset D [--vae-run V --checkpoint STEP --weights model|ema --draws N --seed S]";
  c.define = define_val_loss;
  c.run = run_val_loss;
  c.job_kind = "model";
  return c;
}

Command eval_command() {
  Command c;
  c.words = {"eval"};
  c.summary = "generate the held-out prompts of the shapes dataset and check colour, shape and direction";
  c.usage =
      "(--run NAME | --reconstruct --vae-run NAME) (--dataset-dir DIR | --heldout FILE) "
      "[--checkpoint STEP --backgrounds listed|all --seeds N --steps --cfg --seed --samples DIR]";
  c.define = define_eval;
  c.run = run_eval;
  c.job_kind = "eval";
  return c;
}

}  // namespace mugv::cli
