// Runs made from another run's weights:
//   mugv grow --run SMALL --width 2 --out RUN: a run whose DiT is `width` times as wide as SMALL's and
//     computes the same function (HyperCloning, model/growth.h), to continue with `mugv train --from RUN`.
//   mugv ema --run RUN --length SIGMA_REL --out NEW: the weights averaged over any EMA length, made after
//     training from the run's post-hoc EMA snapshots (train/posthoc_ema.h).
#include "command.h"

#include "core/error.h"
#include "core/presets.h"
#include "core/strings.h"
#include "model/growth.h"
#include "model/weights.h"
#include "sample/model_bundle.h"
#include "train/checkpoint_store.h"
#include "train/fine_tune.h"
#include "train/posthoc_ema.h"
#include "train/sharded_checkpoint.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <map>

namespace mugv::cli {
namespace {

// The preset of the grown model: `name` when it exists and is the grown shape, else written as a user preset
// that inherits the narrow one with hidden and heads changed. Throws Error(conflict) when a preset of that
// name has another shape.
ModelPreset grown_preset(const ModelPreset& narrow, const DiTConfig& wide, const std::string& name,
                         int factor) {
  if (!find_preset("models", name)) {
    save_user_preset("models", name,
                     {{"inherits", narrow.name},
                      {"description", cat(narrow.name, " grown to ", factor, "x its width (mugv grow)")},
                      {"dit", {{"hidden", wide.hidden}, {"heads", wide.heads}}}});
  }
  ModelPreset preset = load_model_preset(name);
  const DiTConfig& d = preset.dit;
  if (d.hidden != wide.hidden || d.heads != wide.heads || d.depth != wide.depth ||
      d.mlp_ratio != wide.mlp_ratio || d.in_channels != wide.in_channels || d.text_dim != wide.text_dim ||
      d.patch_t != wide.patch_t || d.patch_h != wide.patch_h || d.patch_w != wide.patch_w ||
      d.null_caption != wide.null_caption || preset.text.dim != narrow.text.dim ||
      preset.text.kind != narrow.text.kind)
    throw Error(ErrorCode::conflict, name,
                cat("is a model preset of another shape (hidden ", d.hidden, ", ", d.heads, " heads, depth ",
                    d.depth, "); name the grown preset with --preset"));
  return preset;
}

// The largest difference between the two DiTs' outputs on one random input, relative to the output's scale.
double output_difference(DiTImpl& narrow, DiTImpl& wide) {
  torch::NoGradGuard no_grad;
  const DiTConfig& c = narrow.config();
  torch::manual_seed(0);
  const auto x = torch::randn({2, c.in_channels, 2 * c.patch_t, 4 * c.patch_h, 4 * c.patch_w});
  const auto timestep = torch::tensor({250.0f, 800.0f});
  const auto text = torch::randn({2, 8, c.text_dim});
  const auto mask = torch::ones({2, 8});
  const auto fps = torch::full({2}, 8.0f);
  narrow.eval();
  wide.eval();
  const auto a = narrow.forward(x, timestep, text, mask, fps);
  const auto b = wide.forward(x, timestep, text, mask, fps);
  return (a - b).abs().max().item<double>() / std::max(1e-6, a.abs().max().item<double>());
}

int run_grow(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("grow.run")) throw Error(ErrorCode::usage, "--run", "name the run to grow");
  if (!v.has("grow.out")) throw Error(ErrorCode::usage, "--out", "name the new run");
  const std::string source = v.get_text("grow.run"), out = v.get_text("grow.out");
  GrowthOptions options;
  options.factor = static_cast<int>(v.get_int("grow.width"));
  options.noise = v.get_real("grow.noise");
  options.seed = static_cast<uint64_t>(v.get_int("grow.seed"));
  const auto weights = weights_kind_from_string(v.get_text("grow.weights"));
  const auto step =
      v.has("grow.checkpoint") ? std::optional<int64_t>(v.get_int("grow.checkpoint")) : std::nullopt;

  ModelBundle bundle = load_run_weights(source, weights.value_or(WeightsKind::unknown), step);
  if (lora_spec_of_run(bundle.run))
    throw Error(ErrorCode::invalid_argument, source,
                "is a LoRA run; merge its adapter first (mugv lora merge) and grow the merged run");
  if (const auto base = base_of_run(bundle.run); base && base->is_release())
    throw Error(ErrorCode::invalid_argument, source,
                "fine-tunes a released model; growth works on runs of a model preset");
  const DiTConfig wide_config = grown_dit_config(bundle.preset.dit, options.factor);
  const std::string preset_name =
      v.has("grow.preset") ? v.get_text("grow.preset") : cat(bundle.preset.name, "-w", options.factor);
  ModelPreset preset = grown_preset(bundle.preset, wide_config, preset_name, options.factor);

  // The grown tensors into a DiT of the grown preset: every tensor of the new model must be produced.
  const auto grown = grow_dit_tensors(module_state(*bundle.dit), bundle.preset.dit, options);
  DiT wide(preset.dit);
  std::map<std::string, torch::Tensor> by_name(grown.begin(), grown.end());
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : module_state(*wide)) {
      auto it = by_name.find(name);
      if (it == by_name.end() || it->second.sizes() != target.sizes())
        throw Error(ErrorCode::invalid_argument, name, "the grown tensor does not fit the grown preset");
      target.copy_(it->second);
    }
  }
  const double difference = output_difference(*bundle.dit, *wide);

  DiT narrow = bundle.dit;
  bundle.dit = wide;
  bundle.preset = preset;
  bundle.run.preset = preset.name;
  if (bundle.run.config.is_object() && bundle.run.config.contains("train"))
    bundle.run.config["train"]["model"] = preset.name;
  const nlohmann::json provenance = {{"run", source},
                                     {"step", bundle.checkpoint_step},
                                     {"weights", to_string(bundle.weights)},
                                     {"width", options.factor},
                                     {"noise", options.noise},
                                     {"seed", options.seed},
                                     {"preset", preset.name},
                                     {"from_preset", narrow->config().hidden},
                                     {"output_difference", difference}};
  write_bundle_as_run(bundle, out, "grown_from", provenance);
  if (inv.json) {
    std::cout << nlohmann::json{{"run", out}, {"grown_from", provenance}}.dump(2) << "\n";
  } else {
    std::printf(
        "run %s: %s (hidden %d, %d heads) grown %dx to preset %s (hidden %d, %d heads); outputs differ by "
        "%.2g relative; continue with `mugv train --from %s`\n",
        out.c_str(), source.c_str(), narrow->config().hidden, narrow->config().heads, options.factor,
        preset.name.c_str(), preset.dit.hidden, preset.dit.heads, difference, out.c_str());
  }
  return 0;
}

// The post-hoc EMA of `run` at `sigma_rel` and `step` written into the bundle's tensors that the snapshots
// hold; returns the snapshot steps used, the profiles and the sum of the weights (near 1 when the fit is
// good).
nlohmann::json reconstruct_ema(ModelBundle& bundle, const std::string& run, double sigma_rel, int64_t step) {
  const RunManifest& manifest = bundle.run;
  const std::string profiles_text =
      manifest.config.is_object() ? manifest.config.value("/train/ema_profiles"_json_pointer, std::string())
                                  : "";
  const std::vector<double> profiles = parse_sigma_rels(profiles_text);
  if (profiles.empty())
    throw Error(
        ErrorCode::invalid_argument, run,
        "tracked no post-hoc EMA profiles; train with --ema-profiles 0.05,0.1 to make any EMA length later");
  CheckpointStore store(run_paths(run).ema_snapshots());
  std::vector<CheckpointRef> used;
  for (const auto& ref : store.list())
    if (ref.step <= step) used.push_back(ref);
  if (used.empty())
    throw Error(ErrorCode::not_found, run, cat("has no post-hoc EMA snapshots up to step ", step));
  std::vector<EmaProfilePoint> points;
  for (const auto& ref : used)
    for (double p : profiles) points.push_back({gamma_of_sigma_rel(p), ref.step});
  const std::vector<double> weights = posthoc_ema_weights(points, {gamma_of_sigma_rel(sigma_rel), step});

  // The trainable tensors by checkpoint name ("dit.…", "text.…"), whole shapes; the rest keep the
  // checkpoint's.
  torch::nn::Module holder;
  holder.register_module("dit", bundle.dit.ptr());
  holder.register_module("text", bundle.text);
  std::map<std::string, torch::Tensor> targets;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [name, t] : module_state(holder)) {
    targets[name] = t;
    shapes[name] = t.sizes().vec();
  }
  std::map<std::string, torch::Tensor> sum;
  size_t i = 0;
  for (const auto& ref : used) {
    if (auto problem = store.verify(ref.dir)) throw Error(ErrorCode::corrupt, ref.dir.string(), *problem);
    const CheckpointLayout layout = read_checkpoint_layout(ref.dir);
    for (size_t k = 0; k < profiles.size(); ++k, ++i) {
      for (auto& [name, t] : read_canonical_tensors(ref.dir, PowerEma::stem(k), layout, shapes).tensors) {
        if (!targets.count(name))
          throw Error(ErrorCode::corrupt, ref.dir.string(),
                      cat(name, " belongs to no tensor of ", run, "'s model"));
        auto term = t.to(torch::kFloat64) * weights[i];
        auto [it, fresh] = sum.emplace(name, term);
        if (!fresh) it->second.add_(term);
      }
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, total] : sum) targets.at(name).copy_(total);
  nlohmann::json snapshots = nlohmann::json::array();
  for (const auto& ref : used) snapshots.push_back(ref.step);
  double weight_sum = 0;
  for (double w : weights) weight_sum += w;
  return {{"snapshots", snapshots}, {"profiles", profiles}, {"weight_sum", weight_sum}};
}

int run_ema(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("ema.run")) throw Error(ErrorCode::usage, "--run", "name the run");
  if (!v.has("ema.out")) throw Error(ErrorCode::usage, "--out", "name the new run");
  const std::string run = v.get_text("ema.run"), out = v.get_text("ema.out");
  const double sigma_rel = v.get_real("ema.length");
  (void)gamma_of_sigma_rel(sigma_rel);  // a bad length is refused before anything is read
  ModelBundle bundle = load_run_weights(run, WeightsKind::model);
  if (lora_spec_of_run(bundle.run))
    throw Error(ErrorCode::invalid_argument, run, "is a LoRA run; post-hoc EMA makes whole models");
  const int64_t step = v.has("ema.step") ? v.get_int("ema.step") : bundle.checkpoint_step;
  nlohmann::json provenance = reconstruct_ema(bundle, run, sigma_rel, step);
  provenance["run"] = run;
  provenance["sigma_rel"] = sigma_rel;
  provenance["step"] = step;
  write_bundle_as_run(bundle, out, "ema_from", provenance);
  if (inv.json) {
    std::cout << nlohmann::json{{"run", out}, {"ema_from", provenance}}.dump(2) << "\n";
  } else {
    std::printf(
        "run %s: %s's weights averaged with a power EMA of relative length %g at step %lld, from %zu "
        "snapshots\n",
        out.c_str(), run.c_str(), sigma_rel, static_cast<long long>(step), provenance["snapshots"].size());
  }
  return 0;
}

}  // namespace

Command ema_command() {
  Command c;
  c.words = {"ema"};
  c.summary = "a run with the weights averaged over any EMA length, from a run's post-hoc EMA snapshots";
  c.usage = "--run RUN --length SIGMA_REL --out NEW [--step STEP]";
  c.define = [](ParamRegistry& r) {
    r.add(param("ema.run", "--run", ParamType::text, nullptr, "the run trained with --ema-profiles", "ema"));
    r.add(param("ema.out", "--out", ParamType::text, nullptr, "name of the new run", "ema"));
    auto length =
        param("ema.length", "--length", ParamType::real, 0.1,
              "relative EMA length sigma_rel (EDM2: the profile's width as a fraction of training)", "ema");
    length.min_value = 0.0;
    length.max_value = 0.28;
    r.add(length);
    auto step = param("ema.step", "--step", ParamType::integer, nullptr,
                      "the training step the average ends at (default: the run's latest checkpoint)", "ema");
    step.min_value = 1.0;
    r.add(step);
  };
  c.run = run_ema;
  c.job_kind = "model";
  return c;
}

Command grow_command() {
  Command c;
  c.words = {"grow"};
  c.summary = "a run whose DiT is wider and computes the same function (HyperCloning), to train on from";
  c.usage = "--run RUN --out NEW [--width 2 --noise 0.1 --preset NAME --checkpoint STEP --weights ema|model]";
  c.define = [](ParamRegistry& r) {
    r.add(param("grow.run", "--run", ParamType::text, nullptr, "the DiT run to grow", "grow"));
    r.add(param("grow.out", "--out", ParamType::text, nullptr, "name of the grown run", "grow"));
    auto width =
        param("grow.width", "--width", ParamType::integer, 2, "width factor (hidden and heads)", "grow");
    width.min_value = 2;
    width.max_value = 8;
    r.add(width);
    auto noise =
        param("grow.noise", "--noise", ParamType::real, 0.1,
              "symmetry-breaking noise (zero-sum over the copies, relative to each weight's spread)", "grow");
    noise.min_value = 0.0;
    r.add(noise);
    auto seed = param("grow.seed", "--seed", ParamType::integer, 0, "seed of the noise", "grow");
    seed.min_value = 0.0;
    r.add(seed);
    r.add(param("grow.preset", "--preset", ParamType::text, nullptr,
                "model preset of the grown model (default: <preset>-w<width>, written when missing)",
                "grow"));
    auto checkpoint = param("grow.checkpoint", "--checkpoint", ParamType::integer, nullptr,
                            "checkpoint step (default: latest)", "grow");
    checkpoint.min_value = 0.0;
    r.add(checkpoint);
    auto weights = param("grow.weights", "--weights", ParamType::choice, "ema",
                         "which weights of the checkpoint: ema or model", "grow");
    weights.choices = {"ema", "model"};
    r.add(weights);
  };
  c.run = run_grow;
  c.job_kind = "model";
  return c;
}

}  // namespace mugv::cli
