// mugv eval --run NAME --dataset-dir DIR | --heldout FILE: generates every held-out prompt of the shapes
// starter dataset and checks colour, shape and direction of what came out.
#include "command.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "sample/eval.h"
#include "sample/sampler.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>

namespace mugv::cli {
namespace {

void define(ParamRegistry& r) {
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
  auto seed = param("eval.seed", "--seed", ParamType::integer, 0,
                    "noise seed of the first prompt (then +1 each)", "eval");
  seed.min_value = 0.0;
  r.add(seed);
  r.add(param("eval.samples", "--samples", ParamType::path, nullptr,
              "folder to keep the generated videos in (one mp4 per prompt)", "eval"));
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("eval.run")) throw Error(ErrorCode::usage, "--run", "name the run to evaluate");
  fs::path heldout, settings;
  if (v.has("eval.heldout")) {
    heldout = v.get_text("eval.heldout");
    settings = heldout.parent_path() / "dataset.json";
  } else if (v.has("eval.dataset_dir")) {
    heldout = fs::path(v.get_text("eval.dataset_dir")) / "heldout.json";
    settings = fs::path(v.get_text("eval.dataset_dir")) / "dataset.json";
  } else {
    throw Error(ErrorCode::usage, "--dataset-dir", "give --dataset-dir DIR or --heldout FILE");
  }
  const auto prompts = read_heldout_prompts(heldout);
  if (prompts.empty()) throw Error(ErrorCode::invalid_argument, heldout.string(), "holds no prompts");

  GenerateRequest base;
  base.steps = static_cast<int>(v.get_int("eval.steps"));
  base.cfg_scale = v.get_real("eval.cfg");
  if (fs::exists(settings)) {
    const auto s = read_json_file(settings);
    base.frames = s.value("frames", base.frames);
    base.width = base.height = s.value("size", base.width);
    base.fps = s.value("fps", base.fps);
  }
  ModelBundle bundle = load_for_inference(v.get_text("eval.run"));
  std::optional<fs::path> samples;
  if (v.has("eval.samples")) {
    samples = fs::path(v.get_text("eval.samples"));
    fs::create_directories(*samples);
  }

  std::vector<ShapesVerdict> verdicts;
  ProgressMeter meter(inv.progress, "eval", "prompts", static_cast<int64_t>(prompts.size()));
  uint64_t seed = static_cast<uint64_t>(v.get_int("eval.seed"));
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest request = base;
    request.prompt = prompts[i];
    request.seed = seed + i;
    SampleResult result = sample(bundle, request, inv.cancel);
    if (samples)
      save_video(*samples / cat("eval_", std::setw(3), std::setfill('0'), i, ".mp4"), result, request.fps);
    verdicts.push_back(judge_shapes_clip(prompts[i], result.frames));
    meter.update(static_cast<int64_t>(i + 1), prompts[i]);
  }
  meter.flush();
  finish_progress_line();

  const ShapesScore total = score(verdicts);
  if (inv.json) {
    nlohmann::json j = {{"run", bundle.run.name},
                        {"checkpoint_step", bundle.checkpoint_step},
                        {"heldout", heldout.string()},
                        {"total", to_json(total)},
                        {"prompts", nlohmann::json::array()}};
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
    std::cout << bundle.run.name << " step " << bundle.checkpoint_step << ": colour " << total.color << "/"
              << total.clips << ", shape " << total.shape << "/" << total.clips << ", direction "
              << total.direction << "/" << total.clips << ", all three " << total.all << "/" << total.clips
              << "\n";
  }
  return 0;
}

}  // namespace

Command eval_command() {
  Command c;
  c.words = {"eval"};
  c.summary = "generate the held-out prompts of the shapes dataset and check colour, shape and direction";
  c.usage = "--run NAME (--dataset-dir DIR | --heldout FILE) [--steps --cfg --seed --samples DIR]";
  c.define = define;
  c.run = run;
  c.job_kind = "eval";
  return c;
}

}  // namespace mugv::cli
