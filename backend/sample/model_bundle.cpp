#include "sample/model_bundle.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "model/lora_file.h"
#include "model/release_weights.h"
#include "model/run_models.h"
#include "model/weights.h"
#include "train/fine_tune.h"
#include "train/sharded_checkpoint.h"

#include <nlohmann/json.hpp>

namespace mugv {
namespace {

// The trainer's resolved parameters nest dotted keys ("flow.shift_base" -> {"flow": {"shift_base": ..}}).
std::optional<double> shift_base_of(const nlohmann::json& config) {
  if (config.is_object()) {
    if (auto flow = config.find("flow"); flow != config.end() && flow->is_object())
      if (auto base = flow->find("shift_base"); base != flow->end() && base->is_number())
        return base->get<double>();
    if (auto dotted = config.find("flow.shift_base"); dotted != config.end() && dotted->is_number())
      return dotted->get<double>();
  }
  return std::nullopt;
}

std::optional<double> find_number(const nlohmann::json& j, const std::string& key) {
  if (j.is_object()) {
    if (auto it = j.find(key); it != j.end() && it->is_number()) return it->get<double>();
    for (const auto& [k, v] : j.items())
      if (auto found = find_number(v, key)) return found;
  }
  return std::nullopt;
}

CheckpointRef latest_checkpoint(const RunPaths& paths, const std::string& run,
                                std::vector<CheckpointProblem>* refused) {
  CheckpointStore store(paths.checkpoints());
  std::vector<CheckpointProblem> problems;
  auto ref = store.latest_good([&](const CheckpointProblem& p) {
    log_warning(cat(p.dir.string(), ": refused: ", p.reason));
    problems.push_back(p);
  });
  refused->insert(refused->end(), problems.begin(), problems.end());
  if (!ref) {
    std::string why;
    for (const auto& p : problems) why += cat("; ", p.dir.filename().string(), ": ", p.reason);
    throw Error(
        ErrorCode::not_found, run,
        problems.empty() ? "the run has no checkpoint yet; train it first" : "no usable checkpoint" + why);
  }
  return *ref;
}

std::vector<float> float_list(const nlohmann::json& j, size_t count, const std::string& subject,
                              const std::string& key) {
  if (!j.is_array() || j.size() != count)
    throw Error(ErrorCode::format, subject, cat("\"", key, "\" must be a list of ", count, " numbers"));
  std::vector<float> out;
  for (const auto& v : j) {
    if (!v.is_number()) throw Error(ErrorCode::format, subject, cat("\"", key, "\" must hold numbers"));
    out.push_back(v.get<float>());
  }
  return out;
}

void load_latent_rgb(ModelBundle& b, const fs::path& path) {
  const int64_t c = b.preset.vae.latent_channels;
  if (fs::exists(path)) {
    const auto j = read_json_file(path);
    const auto& rows = j.value("weight", nlohmann::json());
    if (!rows.is_array() || rows.size() != 3)
      throw Error(ErrorCode::format, path.string(),
                  "\"weight\" must be 3 rows (r, g, b) of one number per latent channel");
    std::vector<float> w;
    for (const auto& row : rows) {
      auto r = float_list(row, static_cast<size_t>(c), path.string(), "weight");
      w.insert(w.end(), r.begin(), r.end());
    }
    b.latent_rgb_weight = torch::tensor(w).view({3, c});
    b.latent_rgb_bias =
        torch::tensor(float_list(j.value("bias", nlohmann::json()), 3, path.string(), "bias"));
    const std::string space = j.value("space", "normalized");
    if (space != "normalized" && space != "raw")
      throw Error(ErrorCode::format, path.string(),
                  cat("\"space\" must be \"normalized\" or \"raw\", not \"", space, "\""));
    b.latent_rgb_space_raw = space == "raw";
    return;
  }
  set_default_latent_rgb(b, c);
}

}  // namespace

void set_default_latent_rgb(ModelBundle& b, int64_t channels) {
  // Without a fitted map, show the first three channels as r, g, b: enough to see layout and motion.
  b.latent_rgb_weight = torch::zeros({3, channels});
  for (int64_t k = 0; k < std::min<int64_t>(3, channels); ++k) b.latent_rgb_weight[k][k] = 0.5;
  b.latent_rgb_bias = torch::zeros({3});
  b.latent_rgb_space_raw = false;
}

const char* to_string(WeightsKind kind) {
  switch (kind) {
    case WeightsKind::ema:
      return "ema";
    case WeightsKind::model:
      return "model";
    default:
      return "unknown";
  }
}

std::optional<WeightsKind> weights_kind_from_string(std::string_view name) {
  if (name == "ema") return WeightsKind::ema;
  if (name == "model") return WeightsKind::model;
  return std::nullopt;
}

void load_prefixed(const PrefixedModules& modules, const fs::path& file) {
  torch::nn::Module holder;
  for (const auto& [prefix, module] : modules) holder.register_module(prefix, module);
  load_module(holder, file, UnexpectedTensors::ignore);
}

namespace {

// Run manifest, preset and tokenizer of DiT run `run_name`.
void load_run_header(ModelBundle& b, const std::string& run_name) {
  const RunPaths paths = run_paths(run_name);
  b.run = read_run_manifest(paths);
  if (b.run.kind != RunLayoutKind::dit)
    throw Error(ErrorCode::invalid_argument, run_name,
                cat("is a ", to_string(b.run.kind), " run; generating needs a DiT run (mugv train)"));
  if (auto released = released_base_dir(b.run)) {
    // A fine-tune of a released model: its preset, prompts cut as the release's T5 pipeline cuts them.
    b.preset = release_preset(find_release_model(*released));
    b.prompt_limit = TokenLimitPolicy::truncate;
  } else {
    if (b.run.vae_run.empty())
      throw Error(ErrorCode::invalid_argument, run_name, "run.json names no VAE run (vae_run)");
    b.preset = load_model_preset(b.run.preset);
  }
  if (!fs::exists(paths.tokenizer()))
    throw Error(ErrorCode::not_found, paths.tokenizer().string(),
                "the run has no tokenizer; it cannot encode prompts");
  b.tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_file(paths.tokenizer()));
}

// The VAE of the run's VAE run with its latent statistics and preview map, and the flow shift.
void load_vae_side(ModelBundle& b, const std::string& run_name) {
  if (auto released = released_base_dir(b.run)) {
    b.codec = load_release_codec(find_release_model(*released));
    set_default_latent_rgb(b, b.codec->latent_channels());
    b.shift_base_px = shift_base_of(b.run.config).value_or(512.0);
    return;
  }
  const RunPaths vae_paths = run_paths(b.run.vae_run);
  b.vae_run = read_run_manifest(vae_paths);
  if (b.vae_run.kind != RunLayoutKind::vae)
    throw Error(ErrorCode::invalid_argument, b.run.vae_run,
                cat("is a ", to_string(b.vae_run.kind), " run, not a VAE run"));
  VideoVAE vae(b.preset.vae);
  const CheckpointRef vae_ckpt = latest_checkpoint(vae_paths, b.run.vae_run, &b.refused);
  b.vae_checkpoint_step = vae_ckpt.step;
  load_prefixed({{"vae", vae.ptr()}}, vae_ckpt.dir / "model.safetensors");
  apply_latent_stats(*vae, vae_paths);
  b.codec = make_video_codec(vae);
  load_latent_rgb(b, vae_paths.latent_rgb());

  if (auto base = shift_base_of(b.run.config)) {
    b.shift_base_px = *base;
  } else if (auto base = find_number(b.run.config, "shift_base_px")) {
    b.shift_base_px = *base;
  } else {
    log_warning(cat(run_name, ": run.json has no flow.shift_base; sampling with MUG-V's 512"));
  }
}

void place(ModelBundle& b, torch::Device device) {
  b.device = device;
  b.dit->to(device);
  if (b.dit->lora()) b.dit->lora()->to(device);  // loaded adapters are the set's, not the module tree's
  b.text->to(device);
  b.codec->module().to(device);
  b.dit->eval();
  b.text->eval();
  b.codec->module().eval();
  b.latent_rgb_weight = b.latent_rgb_weight.to(device);
  b.latent_rgb_bias = b.latent_rgb_bias.to(device);
}

}  // namespace

ModelBundle load_run_weights(const std::string& run_name, WeightsKind want,
                             std::optional<int64_t> checkpoint_step) {
  ModelBundle b;
  load_run_header(b, run_name);
  const RunPaths paths = run_paths(run_name);
  b.text = make_text_encoder(b.preset.text);
  b.dit = DiT(b.preset.dit);
  const CheckpointRef ckpt = checkpoint_step ? CheckpointStore(paths.checkpoints()).open(*checkpoint_step)
                                             : latest_checkpoint(paths, run_name, &b.refused);
  b.checkpoint_step = ckpt.step;
  const auto base = base_of_run(b.run);
  const bool lora = lora_spec_of_run(b.run).has_value();
  if (base && (lora || base->is_release())) {
    // A LoRA run's checkpoints hold its adapters, and a fine-tune of a released model its DiT alone: the rest
    // is the base its config names.
    load_base_model(*base, b.dit, b.text);
    const fs::path ema = ckpt.dir / "ema.safetensors", model = ckpt.dir / "model.safetensors";
    const bool use_ema = want != WeightsKind::model && fs::exists(ema);
    if (want == WeightsKind::ema && !use_ema)
      throw Error(ErrorCode::not_found, ema.string(), "the checkpoint holds no EMA of the adapters");
    const fs::path file = use_ema ? ema : model;
    b.weights = use_ema ? WeightsKind::ema : WeightsKind::model;
    if (lora)
      lora_set_of(*b.dit).attach(*b.dit, read_lora_file(file).weights, 1.0, file.string());
    else
      load_prefixed({{"dit", b.dit.ptr()}}, file);
    return b;
  }
  if (const CheckpointLayout saved = read_checkpoint_layout(ckpt.dir); saved.tp > 1 || saved.pp > 1) {
    // Written by a tensor-parallel or pipeline run: join its pieces (the EMA weights, as below).
    torch::nn::Module holder;
    holder.register_module("dit", b.dit.ptr());
    holder.register_module("text", b.text);
    const NamedTensors targets = module_state(holder);
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& [name, t] : targets) shapes[name] = t.sizes().vec();
    const WeightsKind kind = want == WeightsKind::model ? WeightsKind::model : WeightsKind::ema;
    auto canonical = read_canonical_tensors(ckpt.dir, to_string(kind), saved, shapes);
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : targets) {
      auto it = canonical.tensors.find(name);
      if (it == canonical.tensors.end() || it->second.sizes() != t.sizes())
        throw Error(ErrorCode::corrupt, ckpt.dir.string(), cat("tensor ", name, " is missing or misshapen"));
      t.copy_(it->second);
    }
    b.weights = kind;
    return b;
  }
  const fs::path ema = ckpt.dir / "ema.safetensors", model = ckpt.dir / "model.safetensors";
  if (!fs::exists(model) && !fs::exists(ema))
    throw Error(ErrorCode::not_found, ckpt.dir.string(),
                "checkpoint holds neither ema.safetensors nor model.safetensors");
  if (want == WeightsKind::model && !fs::exists(model))
    throw Error(ErrorCode::not_found, model.string(), "the checkpoint holds no training weights");
  if (want == WeightsKind::ema && !fs::exists(ema))
    throw Error(ErrorCode::not_found, ema.string(),
                "the checkpoint holds no EMA weights (trained with ema = 0?)");
  if (fs::exists(model)) {
    load_prefixed({{"dit", b.dit.ptr()}, {"text", b.text}}, model);
    b.weights = WeightsKind::model;
  }
  if (fs::exists(ema) && want != WeightsKind::model) {
    // The EMA may track the DiT alone (a frozen text encoder); the text weights then come from
    // model.safetensors.
    try {
      load_prefixed({{"dit", b.dit.ptr()}, {"text", b.text}}, ema);
      b.weights = WeightsKind::ema;
    } catch (const Error&) {
      if (b.weights == WeightsKind::unknown) throw;
      try {
        load_prefixed({{"dit", b.dit.ptr()}}, ema);
        b.weights = WeightsKind::ema;
      } catch (const Error& e) {
        if (want == WeightsKind::ema) throw;
        log_warning(cat(ema.string(), ": not usable (", e.what(), "); using model.safetensors"));
      }
    }
  }
  return b;
}

ModelBundle load_for_inference(const std::string& run_name, torch::Device device, WeightsKind want,
                               std::optional<int64_t> checkpoint_step) {
  ModelBundle b = load_run_weights(run_name, want, checkpoint_step);
  load_vae_side(b, run_name);
  place(b, device);
  return b;
}

ModelBundle bundle_for_training_samples(const std::string& run_name, DiT dit,
                                        std::shared_ptr<TextEncoderBase> text, int64_t step) {
  ModelBundle b;
  load_run_header(b, run_name);
  b.dit = std::move(dit);
  b.text = std::move(text);
  b.checkpoint_step = step;
  b.weights = WeightsKind::model;
  load_vae_side(b, run_name);
  b.codec->module().eval();
  b.device = b.dit->parameters().empty() ? torch::Device(torch::kCPU) : b.dit->parameters().front().device();
  b.codec->module().to(b.device);
  b.latent_rgb_weight = b.latent_rgb_weight.to(b.device);
  b.latent_rgb_bias = b.latent_rgb_bias.to(b.device);
  return b;
}

void apply_lora_files(ModelBundle& b, const std::vector<LoraArgument>& adapters, bool merge) {
  std::vector<LoraFile> files;
  for (const auto& a : adapters) files.push_back(read_lora_file(a.file));
  // Every file checked against the model first, so a bad second file leaves the model as it was.
  for (size_t i = 0; i < files.size(); ++i)
    check_lora_weights(*b.dit, files[i].weights, adapters[i].file.string());
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string name = adapters[i].file.string();
    if (merge)
      merge_lora(*b.dit, files[i].weights, adapters[i].scale, name);
    else
      lora_set_of(*b.dit).attach(*b.dit, files[i].weights, adapters[i].scale, name, b.device);
    b.adapters.push_back(cat(name, ":", adapters[i].scale, merge ? " merged" : ""));
  }
}

void write_bundle_as_run(const ModelBundle& b, const std::string& out_run, const std::string& key,
                         const nlohmann::json& provenance) {
  const RunPaths paths = run_paths(out_run);
  std::error_code ec;
  if (fs::exists(paths.manifest(), ec))
    throw Error(ErrorCode::conflict, out_run, "a run of this name exists; choose another name");
  fs::create_directories(paths.root);
  fs::copy_file(run_paths(b.run.name).tokenizer(), paths.tokenizer(), fs::copy_options::overwrite_existing);
  RunManifest manifest = b.run;
  manifest.name = out_run;
  if (!manifest.config.is_object()) manifest.config = nlohmann::json::object();
  manifest.config.erase("base");
  if (manifest.config.contains("train")) {
    manifest.config["train"]["lora"] = "";
    manifest.config["train"]["from"] = "";
    manifest.config["train"]["run"] = out_run;
  }
  manifest.config[key] = provenance;
  torch::nn::Module holder;
  holder.register_module("dit", b.dit.ptr());
  holder.register_module("text", b.text);
  const std::map<std::string, std::string> metadata{
      {"preset", b.preset.name}, {"kind", "dit"}, {"run", out_run}};
  CheckpointStore store(paths.checkpoints());
  const fs::path staging = store.begin(b.checkpoint_step);
  save_named_tensors(module_state(holder), staging / "model.safetensors", metadata);
  store.commit(staging, b.checkpoint_step, {{"preset", b.preset.name}, {"kind", "dit"}, {"run", out_run}});
  write_run_manifest(paths, manifest);
}

}  // namespace mugv
