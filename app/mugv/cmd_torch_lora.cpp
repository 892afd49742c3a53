// mugv lora info FILE | lora extract --run RUN --out F | lora merge --run RUN [--lora F[:S],...] --out-run
// NEW: adapter files (model/lora_file.h) read, written from runs, and merged into runs.
#include "command.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/strings.h"
#include "model/lora_file.h"
#include "model/weights.h"
#include "sample/model_bundle.h"
#include "sample/release_model.h"
#include "train/checkpoint_store.h"
#include "train/fine_tune.h"
#include "train/run_layout.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

int run_info(const Invocation& inv) {
  const fs::path file = inv.positional[0];
  const LoraFile lora = read_lora_file(file);
  const nlohmann::json j = to_json(lora);
  if (inv.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::string ranks;
  for (int64_t r : lora.info.ranks) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  std::printf("%s\n  layout     %s%s%s\n  modules    %zu (rank %s), %lld parameters, %s\n",
              file.string().c_str(), lora.info.layout.c_str(),
              lora.info.prefix.empty() ? "" : cat(", prefix ", lora.info.prefix).c_str(),
              lora.info.adapter.empty() ? "" : cat(", adapter ", lora.info.adapter).c_str(),
              lora.weights.modules.size(), ranks.c_str(), static_cast<long long>(lora.info.parameters),
              lora.info.dtype.c_str());
  std::printf("  alpha      %s (%s)\n", lora.weights.alpha ? cat(*lora.weights.alpha).c_str() : "-",
              lora.info.alpha_source.c_str());
  size_t shown = 0;
  for (const auto& [module, m] : lora.weights.modules) {
    if (shown++ == 6) {
      std::printf("  ...        %zu more\n", lora.weights.modules.size() - 6);
      break;
    }
    std::printf("  %-40s rank %lld, %lld -> %lld, scale %g\n", module.c_str(),
                static_cast<long long>(m.rank()), static_cast<long long>(m.down.size(1)),
                static_cast<long long>(m.up.size(0)), lora.weights.scale_of(module));
  }
  for (const auto& [k, v] : lora.info.metadata) std::printf("  meta       %s = %s\n", k.c_str(), v.c_str());
  return 0;
}

// Where --out puts the adapter: a .safetensors file, or a folder as PEFT's save_pretrained lays it out.
void write_adapter(const fs::path& out, const LoraWeights& weights, double dropout,
                   const std::map<std::string, std::string>& metadata) {
  if (out.extension() == ".safetensors") {
    if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
    write_lora_file(out, weights, metadata);
    return;
  }
  fs::create_directories(out);
  write_lora_file(out / "adapter_model.safetensors", weights, metadata);
  write_peft_adapter_config(out, weights, dropout);
}

WeightsKind weights_wanted(const ParamValues& v) {
  return weights_kind_from_string(v.get_text("lora.weights")).value_or(WeightsKind::unknown);
}

std::optional<int64_t> checkpoint_wanted(const ParamValues& v) {
  if (!v.has("lora.checkpoint")) return std::nullopt;
  return v.get_int("lora.checkpoint");
}

// The adapter file inside a LoRA run's checkpoint (the EMA unless the training weights are asked for).
fs::path adapter_in_checkpoint(const RunPaths& paths, const std::string& run, std::optional<int64_t> step,
                               WeightsKind want) {
  CheckpointStore store(paths.checkpoints());
  auto ref = step ? std::optional<CheckpointRef>(store.open(*step)) : store.latest_good();
  if (!ref) throw Error(ErrorCode::not_found, run, "has no usable checkpoint");
  const fs::path ema = ref->dir / "ema.safetensors", model = ref->dir / "model.safetensors";
  if (want != WeightsKind::model && fs::exists(ema)) return ema;
  if (want == WeightsKind::ema)
    throw Error(ErrorCode::not_found, ema.string(), "the checkpoint holds no EMA");
  return model;
}

int run_extract(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string run = v.get_text("lora.run");
  const fs::path out = v.get_text("lora.out");
  const RunPaths paths = run_paths(run);
  const RunManifest manifest = read_run_manifest(paths);
  const std::optional<BaseModel> recorded_base =
      base_of_run(manifest);  // checked once: it may hash a model file
  std::map<std::string, std::string> metadata{{"source_run", run}};
  nlohmann::json report = {{"run", run}, {"out", out.string()}};
  LoraWeights weights;
  double dropout = 0;
  if (auto spec = lora_spec_of_run(manifest)) {
    // A LoRA run: its adapter, renamed to the PEFT layout.
    const fs::path file = adapter_in_checkpoint(paths, run, checkpoint_wanted(v), weights_wanted(v));
    LoraFile adapter = read_lora_file(file);
    weights = std::move(adapter.weights);
    const LoraConfig config = parse_lora_config(*spec);
    dropout = config.dropout;
    metadata["lora_targets"] = to_string(config);
    if (auto it = adapter.info.metadata.find("base_sha256"); it != adapter.info.metadata.end())
      metadata["base_sha256"] = it->second;
    metadata["source_checkpoint"] = file.string();
    report["source"] = file.string();
  } else {
    // A full fine-tune (or any run against a --base): the truncated SVD of its difference from the base.
    std::string base_run;
    fs::path base_model;  // a released model folder
    std::optional<int64_t> base_step;
    WeightsKind base_weights = WeightsKind::unknown;
    if (v.has("lora.base")) {
      base_run = v.get_text("lora.base");
    } else if (const auto& base = recorded_base) {
      base_run = base->run;
      base_model = base->release;
      base_step = base->step;
      base_weights = base->weights == WeightSet::model ? WeightsKind::model : WeightsKind::ema;
      metadata["base_sha256"] = base->sha256;
    } else {
      throw Error(ErrorCode::usage, "--base",
                  cat("run ", run,
                      " is neither a LoRA run nor a fine-tune of a base; name the base with --base RUN"));
    }
    ModelBundle tuned = load_run_weights(run, weights_wanted(v), checkpoint_wanted(v));
    ModelBundle base = base_model.empty() ? load_run_weights(base_run, base_weights, base_step)
                                          : load_release_model(base_model, ReleaseLoadOptions{});
    const int64_t rank = v.get_int("lora.rank");
    std::vector<std::string> targets;
    for (const auto& t : split(v.get_text("lora.targets"), ','))
      if (auto name = trim(t); !name.empty()) targets.push_back(name);
    double error = 0;
    weights = extract_lora(*base.dit, *tuned.dit, rank, targets, &error);
    metadata["lora_targets"] = v.get_text("lora.targets");
    metadata["extracted_relative_error"] = cat(error);
    report["relative_error"] = error;
    report["base"] = base_model.empty() ? base_run : base_model.string();
  }
  if (const auto& base = recorded_base) {
    metadata["base_model"] = describe(*base);
    metadata.emplace("base_sha256", base->sha256);
  }
  write_adapter(out, weights, dropout, metadata);
  report["modules"] = weights.modules.size();
  if (inv.json) {
    std::cout << report.dump(2) << "\n";
  } else {
    std::printf("wrote %s: %zu adapted modules%s\n", out.string().c_str(), weights.modules.size(),
                report.contains("relative_error")
                    ? cat(", SVD relative error ", report["relative_error"].get<double>()).c_str()
                    : "");
  }
  return 0;
}

// A LoRA run on a released model merged into a copy of that model's folder: dit.pt (the release's
// torch.save layout and tensor names) with the adapters added, every other entry of the folder (VAE, T5,
// tokenizer, configs) linked to the original, so the new folder loads wherever the released one does
// (`generate --model`, `train --from`, the reference code). The DiT is merged and written in fp32.
int merge_into_release(const Invocation& inv, const std::string& run, const BaseModel& base,
                       const std::vector<LoraArgument>& adapters) {
  const fs::path out = inv.values.get_text("lora.out_model");
  std::error_code ec;
  if (fs::exists(out, ec))
    throw Error(ErrorCode::conflict, out.string(), "exists; choose a new folder for the merged model");
  ModelBundle bundle = load_release_model(base.release, ReleaseLoadOptions{});
  apply_lora_files(bundle, adapters, /*merge=*/true);
  const fs::path staging = out.string() + ".partial";
  fs::remove_all(staging, ec);
  fs::create_directories(staging);
  for (const auto& entry : fs::directory_iterator(base.release)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("dit", 0) == 0) continue;  // dit.pt, dit.safetensors(.index.json), dit/: replaced
    fs::create_symlink(fs::absolute(entry.path()), staging / name);
  }
  save_module_torch(*bundle.dit, staging / "dit.pt");
  write_json_atomic(staging / "merged_from.json",
                    {{"model", base.release.string()}, {"run", run}, {"adapters", bundle.adapters}});
  fs::rename(staging, out);
  if (inv.json) {
    std::cout << nlohmann::json{{"model", out.string()},
                                {"base", base.release.string()},
                                {"run", run},
                                {"adapters", bundle.adapters}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("model %s: the released model in %s with %zu adapter(s) merged into its DiT\n",
                out.string().c_str(), base.release.string().c_str(), adapters.size());
  }
  return 0;
}

int run_merge(const Invocation& inv) {
  const auto& v = inv.values;
  const std::string run = v.get_text("lora.run");
  const RunManifest manifest = read_run_manifest(run_paths(run));
  std::vector<LoraArgument> adapters;
  ModelBundle bundle;
  nlohmann::json merged_from = {{"run", run}};
  if (lora_spec_of_run(manifest)) {
    // The run's own adapter goes into its base first.
    const BaseModel base = *base_of_run(manifest);
    if (base.is_release()) {
      if (!v.has("lora.out_model"))
        throw Error(ErrorCode::usage, "--out-model",
                    cat(run, " trains adapters on the released model in ", base.release.string(),
                        ": give the folder of the merged model"));
      adapters.push_back(
          {adapter_in_checkpoint(run_paths(run), run, checkpoint_wanted(v), weights_wanted(v)), 1.0});
      for (const auto& text : v.get_text_list("lora.lora")) adapters.push_back(parse_lora_argument(text));
      return merge_into_release(inv, run, base, adapters);
    }
    bundle = load_run_weights(
        base.run, base.weights == WeightSet::model ? WeightsKind::model : WeightsKind::ema, base.step);
    adapters.push_back(
        {adapter_in_checkpoint(run_paths(run), run, checkpoint_wanted(v), weights_wanted(v)), 1.0});
    bundle.run = manifest;
    merged_from["base"] = to_json(base);
  } else {
    bundle = load_run_weights(run, weights_wanted(v), checkpoint_wanted(v));
  }
  if (!v.has("lora.out_run")) throw Error(ErrorCode::usage, "--out-run", "name the new run");
  const std::string out_run = v.get_text("lora.out_run");
  for (const auto& text : v.get_text_list("lora.lora")) adapters.push_back(parse_lora_argument(text));
  if (adapters.empty())
    throw Error(ErrorCode::usage, "--lora",
                cat("run ", run, " has no adapter of its own; name adapter files"));
  apply_lora_files(bundle, adapters, /*merge=*/true);
  merged_from["adapters"] = bundle.adapters;
  merged_from["step"] = bundle.checkpoint_step;
  write_bundle_as_run(bundle, out_run, "merged_from", merged_from);
  if (inv.json) {
    std::cout << nlohmann::json{{"run", out_run}, {"merged_from", merged_from}}.dump(2) << "\n";
  } else {
    std::printf("run %s: %s with %zu adapter(s) merged (step %lld)\n", out_run.c_str(), run.c_str(),
                adapters.size(), static_cast<long long>(bundle.checkpoint_step));
  }
  return 0;
}

void define_source(ParamRegistry& r) {
  r.add(param("lora.run", "--run", ParamType::text, nullptr, "the run to take the weights from", "lora"));
  auto checkpoint = param("lora.checkpoint", "--checkpoint", ParamType::integer, nullptr,
                          "checkpoint step (default: the latest good one)", "lora");
  checkpoint.min_value = 1;
  r.add(checkpoint);
  auto weights = param("lora.weights", "--weights", ParamType::choice, "auto",
                       "the EMA or the training weights (auto: the EMA when there is one)", "lora");
  weights.choices = {"auto", "ema", "model"};
  r.add(weights);
}

}  // namespace

Command lora_info_command() {
  Command c;
  c.words = {"lora", "info"};
  c.summary = "what an adapter file holds: layout, modules, rank, alpha, metadata";
  c.usage = "FILE";
  c.min_positional = c.max_positional = 1;
  c.run = run_info;
  return c;
}

Command lora_extract_command() {
  Command c;
  c.words = {"lora", "extract"};
  c.summary = "write a run's adapter (LoRA runs) or an SVD adapter of a fine-tune as a PEFT file";
  c.usage =
      "--run RUN --out FILE.safetensors|DIR [--checkpoint STEP --weights W --rank R --targets T --base RUN]";
  c.define = [](ParamRegistry& r) {
    define_source(r);
    r.add(param("lora.out", "--out", ParamType::path, nullptr,
                "adapter file (.safetensors) or folder (adapter_model.safetensors + adapter_config.json)",
                "lora"));
    auto rank =
        param("lora.rank", "--rank", ParamType::integer, 16, "rank of an SVD-extracted adapter", "lora");
    rank.min_value = 1;
    r.add(rank);
    r.add(param("lora.targets", "--targets", ParamType::text, "attn,cross,mlp",
                "linears of an SVD-extracted adapter (model/lora.h targets)", "lora"));
    r.add(param("lora.base", "--base", ParamType::text, nullptr,
                "the run to take the difference from (default: the run's recorded base)", "lora"));
  };
  c.run = [](const Invocation& inv) {
    if (!inv.values.has("lora.run")) throw Error(ErrorCode::usage, "--run", "name the run");
    if (!inv.values.has("lora.out"))
      throw Error(ErrorCode::usage, "--out", "give the adapter file or folder");
    return run_extract(inv);
  };
  return c;
}

Command lora_merge_command() {
  Command c;
  c.words = {"lora", "merge"};
  c.summary =
      "a new run with adapters merged into a run's weights (a LoRA run's own adapter first), or a new model "
      "folder for a LoRA run on a released model";
  c.usage =
      "--run RUN (--out-run NEW | --out-model DIR) [--lora FILE[:SCALE],...] [--checkpoint STEP --weights W]";
  c.define = [](ParamRegistry& r) {
    define_source(r);
    auto lora = param("lora.lora", "--lora", ParamType::list, nlohmann::json::array(),
                      "adapter files FILE[:SCALE], comma-separated", "lora");
    lora.item_type = ParamType::path;
    r.add(lora);
    r.add(param("lora.out_run", "--out-run", ParamType::text, nullptr, "name of the merged run", "lora"));
    r.add(
        param("lora.out_model", "--out-model", ParamType::path, nullptr,
              "folder of the merged model (a LoRA run on a released model): its DiT merged, the rest linked",
              "lora"));
  };
  c.run = [](const Invocation& inv) {
    if (!inv.values.has("lora.run")) throw Error(ErrorCode::usage, "--run", "name the run");
    return run_merge(inv);
  };
  return c;
}

}  // namespace mugv::cli
