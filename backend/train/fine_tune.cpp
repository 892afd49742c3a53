#include "train/fine_tune.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "model/release_weights.h"
#include "model/weights.h"
#include "train/sharded_checkpoint.h"

namespace mugv {
namespace {

std::string recorded_sha256(const fs::path& checkpoint_dir, const fs::path& file) {
  const auto manifest = read_json_file(checkpoint_dir / "manifest.json");
  const auto files = manifest.value("files", nlohmann::json::object());
  auto it = files.find(file.filename().string());
  if (it == files.end() || !it->is_object())
    throw Error(ErrorCode::corrupt, checkpoint_dir.string(),
                cat(file.filename().string(), " is not in its manifest"));
  return it->value("sha256", std::string());
}

bool run_exists(const std::string& name) {
  try {
    std::error_code ec;
    return fs::exists(run_paths(name).manifest(), ec);
  } catch (const Error&) {
    return false;  // not a run name (a path, say)
  }
}

}  // namespace

fs::path BaseModel::weights_file() const {
  return checkpoint_dir / (weights == WeightSet::model ? "model.safetensors" : "ema.safetensors");
}

std::optional<std::string> lora_spec_of_run(const RunManifest& manifest) {
  if (!manifest.config.is_object()) return std::nullopt;
  const auto train = manifest.config.value("train", nlohmann::json::object());
  if (!train.is_object()) return std::nullopt;
  if (auto it = train.find("lora"); it != train.end() && it->is_string() && !it->get<std::string>().empty())
    return it->get<std::string>();
  return std::nullopt;
}

BaseModel find_base_model(const std::string& run, WeightSet weights, std::optional<int64_t> step) {
  BaseModel b;
  b.run = run;
  b.weights = weights == WeightSet::model ? WeightSet::model : WeightSet::ema;
  const RunPaths paths = run_paths(run);
  b.manifest = read_run_manifest(paths);
  if (b.manifest.kind != RunLayoutKind::dit)
    throw Error(ErrorCode::invalid_argument, run,
                cat("is a ", to_string(b.manifest.kind), " run; fine-tuning starts from a DiT run"));
  if (lora_spec_of_run(b.manifest))
    throw Error(
        ErrorCode::invalid_argument, run,
        "is a LoRA run; merge its adapter into a run first (`mugv lora merge`) to fine-tune on top of it");
  CheckpointStore store(paths.checkpoints());
  CheckpointRef ref;
  if (step) {
    ref = store.open(*step);
  } else {
    auto good = store.latest_good();
    if (!good) throw Error(ErrorCode::not_found, run, "has no usable checkpoint to fine-tune from");
    ref = *good;
  }
  if (const CheckpointLayout saved = read_checkpoint_layout(ref.dir); saved.tp > 1 || saved.pp > 1)
    throw Error(ErrorCode::unsupported, ref.dir.string(),
                "was written by a tensor-parallel or pipeline run; fine-tuning starts from checkpoints "
                "written with --tp 1 --pp 1 (resume the base once in one process to write one)");
  b.step = ref.step;
  b.checkpoint_dir = ref.dir;
  // A run made from other weights (mugv grow, lora merge, ema) holds only those weights: they are its weights
  // and its average at once, so asking for its EMA means them.
  const auto& config = b.manifest.config;
  const bool derived = config.is_object() && (config.contains("grown_from") ||
                                              config.contains("merged_from") || config.contains("ema_from"));
  if (derived && b.weights == WeightSet::ema && !fs::is_regular_file(b.weights_file())) {
    b.weights = WeightSet::model;
    log_info(cat("run ", run, " was made from other weights and holds no EMA; starting from its weights"));
  }
  if (!fs::is_regular_file(b.weights_file()))
    throw Error(ErrorCode::not_found, b.weights_file().string(),
                cat("the checkpoint holds no ", to_string(b.weights), " weights (use --from-weights ",
                    b.weights == WeightSet::ema ? "model" : "ema", ")"));
  b.sha256 = recorded_sha256(ref.dir, b.weights_file());
  return b;
}

BaseModel find_base(const std::string& name, WeightSet weights) {
  if (run_exists(name)) return find_base_model(name, weights);
  BaseModel b;
  ReleaseModelFiles files;
  try {
    files = resolve_release_model(name);
  } catch (const Error& e) {
    throw Error(ErrorCode::not_found, name,
                cat("is neither a run (mugv runs are in ", (mugv_home() / "runs").string(),
                    ") nor a released model: ", e.message()));
  }
  b.release = files.dir;
  b.weights = WeightSet::model;
  b.sha256 = content_hash_of_file(files.dit);
  (void)release_preset(files);  // a folder that lacks a part or whose parts disagree is refused here
  return b;
}

std::string describe(const BaseModel& b) {
  if (b.is_release()) return "the released model in " + b.release.string();
  return cat("run ", b.run, " at step ", b.step, " (", to_string(b.weights), ")");
}

ModelPreset base_preset(const BaseModel& b) {
  return b.is_release() ? release_preset(find_release_model(b.release))
                        : load_model_preset(b.manifest.preset);
}

std::string base_latent_cache(const BaseModel& b) {
  return b.is_release() ? release_latent_cache_name(find_release_model(b.release)) : b.manifest.vae_run;
}

fs::path base_tokenizer(const BaseModel& b) {
  return b.is_release() ? *find_release_model(b.release).tokenizer : run_paths(b.run).tokenizer();
}

nlohmann::json to_json(const BaseModel& b) {
  if (b.is_release()) return {{"model", b.release.string()}, {"sha256", b.sha256}};
  return {{"run", b.run}, {"step", b.step}, {"weights", to_string(b.weights)}, {"sha256", b.sha256}};
}

BaseModel base_model_from_json(const nlohmann::json& j, const std::string& subject) {
  if (j.is_object() && j.contains("model")) {
    BaseModel b;
    try {
      b = find_base(j.at("model").get<std::string>(), WeightSet::model);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::conflict, subject,
                  cat("its base, the released model ", j.value("model", ""), ", cannot be used: ", e.what()));
    }
    if (b.sha256 != j.value("sha256", ""))
      throw Error(ErrorCode::conflict, subject,
                  cat("its base ", b.release.string(), " has another DiT file than when this run started"));
    return b;
  }
  std::string run, weights, sha256;
  int64_t step = 0;
  try {
    run = j.at("run").get<std::string>();
    step = j.at("step").get<int64_t>();
    weights = j.at("weights").get<std::string>();
    sha256 = j.at("sha256").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, subject, cat("\"base\" is malformed: ", e.what()));
  }
  BaseModel b;
  try {
    b = find_base_model(run, weight_set_from_string(weights).value_or(WeightSet::ema), step);
  } catch (const Error& e) {
    throw Error(ErrorCode::conflict, subject,
                cat("its base, run ", run, " at step ", step, ", cannot be used: ", e.what(),
                    " (keep that checkpoint: fine-tunes load their base from it)"));
  }
  if (b.sha256 != sha256)
    throw Error(ErrorCode::conflict, subject,
                cat("its base ", b.weights_file().string(), " changed since this run started (SHA-256 ",
                    b.sha256.substr(0, 12), "…, recorded ", sha256.substr(0, 12), "…)"));
  return b;
}

std::optional<fs::path> released_base_dir(const RunManifest& manifest) {
  if (!manifest.config.is_object()) return std::nullopt;
  auto it = manifest.config.find("base");
  if (it == manifest.config.end() || !it->is_object()) return std::nullopt;
  auto model = it->find("model");
  if (model == it->end() || !model->is_string()) return std::nullopt;
  return fs::path(model->get<std::string>());
}

std::optional<BaseModel> base_of_run(const RunManifest& manifest) {
  if (!manifest.config.is_object()) return std::nullopt;
  auto it = manifest.config.find("base");
  if (it == manifest.config.end() || !it->is_object()) return std::nullopt;
  return base_model_from_json(*it, manifest.name);
}

void load_base_model(const BaseModel& base, const DiT& dit, const std::shared_ptr<TextEncoderBase>& text) {
  if (base.is_release()) {
    const ReleaseModelFiles files = find_release_model(base.release);
    load_release_dit(files, *dit.ptr());
    load_release_text(files, *text);
    return;
  }
  torch::nn::Module both, dit_only;
  both.register_module("dit", dit.ptr());
  both.register_module("text", text);
  dit_only.register_module("dit", dit.ptr());
  const fs::path file = base.weights_file();
  const WeightFiles files = WeightFiles::open(file);
  const std::string text_probe = "text." + module_state(*text).front().first;
  if (files.contains(text_probe)) {
    load_module(both, files, {}, UnexpectedTensors::ignore);
    return;
  }
  // An EMA that tracks the DiT alone: the text encoder comes from the training weights.
  load_module(dit_only, files, {}, UnexpectedTensors::ignore);
  torch::nn::Module text_only;
  text_only.register_module("text", text);
  load_module(text_only, base.checkpoint_dir / "model.safetensors", UnexpectedTensors::ignore);
}

}  // namespace mugv
