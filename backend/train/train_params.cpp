#include "train/train_params.h"

#include "parallel/rendezvous.h"

#include "core/error.h"
#include "core/presets.h"
#include "core/strings.h"
#include "model/config.h"
#include "parallel/rendezvous.h"

#include <thread>

namespace mugv {
namespace {

ParamSpec spec(std::string key, std::string flag, ParamType type, nlohmann::json default_value,
               std::string help, std::string group, std::optional<double> min_value = std::nullopt,
               std::optional<double> max_value = std::nullopt) {
  ParamSpec s;
  s.key = std::move(key);
  s.flag = std::move(flag);
  s.type = type;
  s.default_value = std::move(default_value);
  s.help = std::move(help);
  s.group = std::move(group);
  s.min_value = min_value;
  s.max_value = max_value;
  return s;
}

// Collects the leaves of `nested` whose dotted keys `registry` declares into `out` (dotted keys).
void collect_declared(const ParamRegistry& registry, const nlohmann::json& nested, const std::string& prefix,
                      nlohmann::json& out) {
  for (auto it = nested.begin(); it != nested.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it.value().is_object())
      collect_declared(registry, it.value(), key, out);
    else if (registry.find_by_key(key))
      out[key] = it.value();
  }
}

// The registry's defaults under the values of `nested` (a preset or a run's config) that this command
// declares, as the preset layer: a preset or a run may carry settings of the other trainer.
ParamValues defaults_under(const ParamRegistry& registry, const nlohmann::json& nested,
                           const std::string& origin) {
  ParamValues out(registry);
  for (const auto& s : registry.specs())
    if (!s.default_value.is_null()) out.set(s.key, s.default_value, ParamSource::builtin_default);
  nlohmann::json declared = nlohmann::json::object();
  collect_declared(registry, nested, "", declared);
  apply_preset_layer(out, declared, ParamSource::preset, origin);
  return out;
}

}  // namespace

const char* to_string(TrainKind kind) {
  switch (kind) {
    case TrainKind::dit:
      return "dit";
    case TrainKind::vae:
      return "vae";
    default:
      return "unknown";
  }
}

std::optional<TrainKind> train_kind_from_string(std::string_view name) {
  if (name == "dit") return TrainKind::dit;
  if (name == "vae") return TrainKind::vae;
  return std::nullopt;
}

void define_train_params(ParamRegistry& r, TrainKind kind) {
  const bool dit = kind == TrainKind::dit;
  r.add(spec("train.preset", "--preset", ParamType::text, "tiny",
             "training preset (presets/train/NAME.toml) or model preset name", "run"));
  r.add(spec("train.model", "--model", ParamType::text, nullptr,
             "model preset (default: the training preset's)", "run"));
  r.add(spec("train.dataset", "--dataset", ParamType::text, nullptr, "catalog dataset to train on", "run"));
  if (dit)
    r.add(spec("train.vae_run", "--vae-run", ParamType::text, nullptr,
               "VAE run whose cached latents to learn", "run"));
  r.add(spec("train.run", "--run", ParamType::text, nullptr, "name of the new run ($MUGV_HOME/runs/NAME)",
             "run"));
  if (dit) {
    r.add(spec(
        "train.from", "--from", ParamType::text, "",
        "fine-tune: start from this DiT run's latest checkpoint (its model preset, tokenizer and VAE run "
        "become this run's)",
        "fine-tune"));
    auto weights =
        spec("train.from_weights", "--from-weights", ParamType::choice, "ema",
             "which weights of the base to start from: its EMA or its training weights", "fine-tune");
    weights.choices = {"ema", "model"};
    r.add(weights);
    r.add(
        spec("train.lora", "--lora", ParamType::text, "",
             "train low-rank adapters only, the base frozen: rank=R,alpha=A,dropout=P,targets=attn,cross,mlp,"
             "adaln,text,final,all or module patterns (empty: full fine-tune)",
             "fine-tune"));
    auto base_dtype =
        spec("train.base_dtype", "--base-dtype", ParamType::choice, "fp32",
             "LoRA: keep the frozen base's linear weights in bf16 (half their memory; needs --precision "
             "bf16) or fp32",
             "fine-tune");
    base_dtype.choices = {"fp32", "bf16"};
    r.add(base_dtype);
    auto offload =
        spec("train.offload", "--offload", ParamType::choice, "none",
             "LoRA: keep the frozen base's blocks in host memory and copy each to the device while "
             "the previous one computes (blocks; every block is then recomputed in backward), or "
             "keep them all on the device (none)",
             "fine-tune");
    offload.choices = {"none", "blocks"};
    r.add(offload);
  }

  r.add(spec("train.steps", "--steps", ParamType::integer, dit ? 1000 : 2000, "optimizer steps in total",
             "training", 1.0));
  r.add(spec("train.batch", "--batch", ParamType::integer, 4, "clips per step", "training", 1.0));
  if (dit) {
    auto bucket_batch =
        spec("train.bucket_batch", "--bucket-batch", ParamType::choice, "fixed",
             "clips per batch in each bucket of one clip size (frames x height x width): fixed (--batch) or "
             "memory (as many as fit the memory --batch clips of the largest bucket need)",
             "training");
    bucket_batch.choices = {"fixed", "memory"};
    r.add(bucket_batch);
  }
  r.add(spec("train.lr", "--lr", ParamType::real, dit ? 1e-4 : 2e-4, "peak learning rate", "training", 0.0));
  r.add(spec("train.warmup", "--warmup", ParamType::integer, dit ? 100 : 50, "linear warm-up steps",
             "training", 0.0));
  auto schedule = spec("train.schedule", "--schedule", ParamType::choice, "constant",
                       "learning rate after warm-up", "training");
  schedule.choices = {"constant", "cosine"};
  r.add(schedule);
  r.add(spec("train.min_lr", "--min-lr", ParamType::real, 0.0, "final learning rate of the cosine schedule",
             "training", 0.0));
  if (dit) {
    auto optimizer =
        spec("train.optimizer", "--optimizer", ParamType::choice, "adamw",
             "adamw, or muon: Newton-Schulz orthogonalised momentum on the hidden matrices, AdamW on "
             "embeddings, norms, biases, adaLN tables and the output layer",
             "training");
    optimizer.choices = {"adamw", "muon"};
    r.add(optimizer);
    auto parametrization = spec(
        "train.parametrization", "--parametrization", ParamType::choice, "standard",
        "standard, or mup: init and per-layer learning rates scaled with width so a learning rate tuned at "
        "--mup-base-hidden (e.g. by mugv sweep) carries over to wider models",
        "training");
    parametrization.choices = {"standard", "mup"};
    r.add(parametrization);
    r.add(spec("train.mup_base_hidden", "--mup-base-hidden", ParamType::integer, 64,
               "mup: the hidden size at which mup equals the standard parametrisation (the tuning proxy's)",
               "training", 1.0));
    r.add(spec("train.muon_momentum", "--muon-momentum", ParamType::real, 0.95, "Muon: momentum (Nesterov)",
               "training", 0.0, 1.0));
    r.add(spec("train.muon_lr_scale", "--muon-lr-scale", ParamType::real, 1.0,
               "Muon: its learning rate as a multiple of --lr (updates are already scaled to AdamW's RMS)",
               "training", 0.0));
  }
  if (dit) {
    auto objective = spec(
        "train.objective", "--objective", ParamType::choice, "flow",
        "flow (rectified flow on the dataset), or post-training on labelled generations against the frozen "
        "--from base: dpo (Diffusion-DPO on preferred pairs) or kto (KTO on good/bad labels)",
        "post-training");
    objective.choices = {"flow", "dpo", "kto"};
    r.add(objective);
    auto labels =
        spec("train.preference_labels", "--preference-labels", ParamType::choice, "all",
             "dpo/kto: whose labels to learn from: all, human (the studio's labelling view) or auto "
             "(an automatic labeller)",
             "post-training");
    labels.choices = {"all", "human", "auto"};
    r.add(labels);
    r.add(spec("train.preference_beta", "--preference-beta", ParamType::real, 1000.0,
               "dpo/kto: beta, how far the policy may move from the reference per unit of flow error",
               "post-training", 0.0));
    r.add(spec("train.preference_sft_weight", "--preference-sft-weight", ParamType::real, 0.0,
               "dpo/kto: weight of the preferred generations' flow loss added to the preference loss (RPO), "
               "which keeps the policy near what was preferred",
               "post-training", 0.0));
    r.add(
        spec("train.curriculum", "--curriculum", ParamType::text, "",
             "stages by step that change each batch (images share, clip length, first-frame "
             "conditioning): a preset of presets/curricula (e.g. mugv) or a TOML file; empty: none. Kept in "
             "the run folder, so a resume follows the same stages",
             "training"));
    r.add(spec("train.clip_filter", "--clip-filter", ParamType::text, "",
               "train on the dataset's clips matching this catalog filter only (SFT on a curated subset), "
               "e.g. \"decision=keep,aesthetic>=5,tag=hq\"; the subset is fixed when the run starts",
               "post-training"));
  }
  r.add(spec("train.weight_decay", "--weight-decay", ParamType::real, 0.0,
             "decoupled weight decay (AdamW and Muon)", "training", 0.0));
  r.add(spec("train.beta1", "--beta1", ParamType::real, 0.9, "AdamW beta1", "training", 0.0, 1.0));
  r.add(spec("train.beta2", "--beta2", ParamType::real, 0.999, "AdamW beta2", "training", 0.0, 1.0));
  r.add(spec("train.adam_eps", "--adam-eps", ParamType::real, 1e-8,
             "AdamW epsilon (MUG-V uses 1e-10 in bf16 on GPU; 1e-8 on fp32 CPU)", "training", 0.0));
  r.add(spec("train.grad_clip", "--grad-clip", ParamType::real, 1.0, "gradient norm clip (0: off)",
             "training", 0.0));
  if (dit) {
    r.add(spec("train.ema", "--ema", ParamType::real, 0.999, "online EMA decay of the weights", "training",
               0.0, 1.0));
    r.add(
        spec("train.ema_profiles", "--ema-profiles", ParamType::text, "",
             "post-hoc EMA: relative lengths (sigma_rel) of the power-function EMAs to track, e.g. 0.05,0.1; "
             "`mugv ema` then makes any length from their snapshots (empty: none)",
             "training"));
    r.add(spec("train.ema_snapshot_every", "--ema-snapshot-every", ParamType::integer, 0,
               "post-hoc EMA: store snapshots of the profiles every N steps (0: with every checkpoint)",
               "training", 0.0));
  }
  r.add(spec("train.seed", "--seed", ParamType::integer, 0, "seed of weights, data order and noise",
             "training", 0.0));
  r.add(spec("train.save_every", "--save-every", ParamType::integer, 500,
             "checkpoint every N steps (and at the end)", "checkpoints", 1.0));
  r.add(spec("train.keep", "--keep", ParamType::integer, 3, "checkpoints kept (older ones are deleted)",
             "checkpoints", 1.0));
  if (dit) {
    r.add(spec("train.sample_every", "--sample-every", ParamType::integer, 0,
               "render samples every N steps (0: never)", "checkpoints", 0.0));
    r.add(spec("train.sample_prompts", "--sample-prompts", ParamType::text, "",
               "prompts of the training samples, separated by '|' (empty: two captions of the dataset)",
               "checkpoints"));
    r.add(spec("train.sample_steps", "--sample-steps", ParamType::integer, 10,
               "sampler steps of the training samples", "checkpoints", 1.0));
  }
  r.add(spec("train.threads", "--threads", ParamType::integer, 0, "CPU threads (0: all cores)", "machine",
             0.0));
  r.add(spec("train.max_memory_gb", "--max-memory-gb", ParamType::real, 0.0,
             "refuse to start when the estimate exceeds this (0: available RAM only)", "machine", 0.0));
  r.add(spec("train.prefetch", "--prefetch", ParamType::integer, 2, "batches read ahead by the loader thread",
             "machine", 0.0));
  auto device =
      spec("train.device", "--device", ParamType::choice, "auto",
           "where to train: cuda (each rank on the GPU of its node-local rank), cpu, or auto (cuda when a "
           "GPU is visible)",
           "machine");
  device.choices = {"auto", "cpu", "cuda"};
  r.add(device);
  auto precision =
      spec("train.precision", "--precision", ParamType::choice, "auto",
           "forward-pass arithmetic: bf16 mixed precision (fp32 master weights) or fp32; auto: bf16 on "
           "CUDA, fp32 on CPUs",
           "machine");
  precision.choices = {"auto", "fp32", "bf16"};
  r.add(precision);
  if (dit) {
    r.add(spec(
        "train.tp", "--tp", ParamType::integer, 1,
        "tensor-parallel ranks (heads and MLP split, sequence parallel between them; keep within a node)",
        "parallel", 1.0));
    r.add(spec("train.cp", "--cp", ParamType::integer, 1,
               "context-parallel ranks (the video tokens split, Ulysses all-to-all around self-attention)",
               "parallel", 1.0));
    r.add(spec("train.pp", "--pp", ParamType::integer, 1,
               "pipeline stages (the blocks split into contiguous stages; activations pass between them "
               "point to point)",
               "parallel", 1.0));
    auto schedule = spec("train.pp_schedule", "--pp-schedule", ParamType::choice, "1f1b",
                         "pipeline schedule: 1f1b, or interleaved (--pp-virtual chunks per stage, a smaller "
                         "bubble for more point-to-point traffic)",
                         "parallel");
    schedule.choices = {"1f1b", "interleaved"};
    r.add(schedule);
    r.add(spec("train.pp_virtual", "--pp-virtual", ParamType::integer, 2,
               "interleaved schedule: model chunks per pipeline stage", "parallel", 2.0));
    r.add(spec("train.micro_batches", "--micro-batches", ParamType::integer, 0,
               "micro-batches per step on each data-parallel replica (gradient accumulation; the pipeline "
               "runs them in flight); 0: one, or 2 x pp with pipeline stages",
               "parallel", 0.0));
    r.add(spec("train.zero", "--zero", ParamType::integer, 0,
               "ZeRO stage: 0 off, 1 AdamW state sharded over the data-parallel ranks", "parallel", 0.0,
               1.0));
    auto recompute =
        spec("train.recompute", "--recompute", ParamType::choice, "none",
             "activation recomputation per block: none, selective (attention core) or full", "parallel");
    recompute.choices = {"none", "selective", "full"};
    r.add(recompute);
    r.add(spec("train.recompute_blocks", "--recompute-blocks", ParamType::integer, 0,
               "partial recomputation: --recompute applies to the first N blocks of each pipeline stage, the "
               "others keep their activations (0: every block)",
               "parallel", 0.0));
    r.add(spec("train.comm_timeout", "--comm-timeout", ParamType::real, 300.0,
               "seconds a collective may wait for the other ranks before the run fails", "parallel", 1.0));
  }
  if (dit) {
    r.add(spec("flow.shift_base", "--shift-base", ParamType::real, 512.0,
               "resolution (pixels) at which the timestep shift is 1 per latent frame", "objective", 1.0));
    r.add(spec("flow.p_first_frame", "--p-first-frame", ParamType::real, 0.0,
               "probability of first-frame conditioning (I2V/TI2V training)", "objective", 0.0, 1.0));
    r.add(spec("flow.caption_dropout", "--caption-dropout", ParamType::real, 0.1,
               "probability of training on the null caption (for guidance)", "objective", 0.0, 1.0));
  } else {
    r.add(spec("data.size", "--size", ParamType::size2d, "64x64", "clip size WxH (centre crop)", "data"));
    r.add(spec("data.frames", "--frames", ParamType::integer, 17, "frames per clip", "data", 1.0));
    r.add(spec("data.fps", "--fps", ParamType::real, 8.0,
               "frame rate clips are resampled to (0: as recorded)", "data", 0.0));
    r.add(spec("data.heldout_clips", "--heldout-clips", ParamType::integer, 4,
               "held-out clips (heldout.jsonl beside the dataset) for the reconstruction PSNR", "data", 0.0));
    r.add(spec("data.crop_frames", "--crop-frames", ParamType::integer, 0,
               "train on random windows of this many frames (0: whole clips); the encoder is chunk-local, so "
               "windows of a few chunks learn the same model faster. Use at least 2 x decoder_window + 1 "
               "chunks: the "
               "decoder draws a chunk from that many latents, and only a middle chunk has real neighbours on "
               "both sides, as inside whole clips",
               "data", 0.0));
    r.add(spec("data.crop_size", "--crop-size", ParamType::text, "",
               "train on random WxH crops of the clips (empty: whole frames); fully convolutional, so crops "
               "learn the same model faster",
               "data"));
  }
}

ParamValues resolve_train_preset(const ParamValues& values, TrainKind kind) {
  const ParamRegistry& registry = values.registry();
  const std::string name = values.get_text("train.preset");
  nlohmann::json preset;
  std::string origin;
  if (auto ref = find_preset("train", name)) {
    preset = load_preset("train", name);
    origin = ref->path.string();
  } else if (find_preset("models", name)) {
    preset = nlohmann::json{{"train", {{"model", name}}}};
    origin = "presets/models/" + name + ".toml";
  } else {
    std::string known;
    for (const auto& p : list_presets("train")) known += (known.empty() ? "" : ", ") + p.name;
    for (const auto& p : list_presets("models")) known += (known.empty() ? "" : ", ") + p.name;
    throw Error(ErrorCode::not_found, name, "no such training or model preset; known: " + known);
  }
  if (const std::string trainer = preset_trainer(preset, origin);
      !trainer.empty() && trainer != to_string(kind))
    throw Error(ErrorCode::invalid_argument, origin,
                cat("is a preset for ", trainer == "vae" ? "mugv train-vae" : "mugv train", " (trainer = \"",
                    trainer, "\"), not for ", kind == TrainKind::vae ? "mugv train-vae" : "mugv train"));
  // The preset may carry the other trainer's settings, but no key that neither trainer has.
  ParamRegistry dit, vae;
  define_train_params(dit, TrainKind::dit);
  define_train_params(vae, TrainKind::vae);
  check_preset_keys(preset, {&registry, &dit, &vae}, origin);
  ParamValues out = defaults_under(registry, preset, origin);
  for (const auto& [key, entry] : values.entries())
    if (entry.source == ParamSource::environment || entry.source == ParamSource::command_line ||
        entry.source == ParamSource::user_file)
      out.set(key, entry.value, entry.source, entry.origin);
  return out;
}

ParamValues values_from_run_config(const ParamRegistry& registry, const nlohmann::json& config,
                                   const nlohmann::json& overrides, const std::string& origin) {
  ParamValues out = defaults_under(registry, config, origin);
  for (auto it = overrides.begin(); it != overrides.end(); ++it)
    out.set(it.key(), it.value(), ParamSource::command_line, it.key());
  return out;
}

TrainOptions train_options_from(const ParamValues& v, TrainKind kind) {
  auto required = [&](const char* key, const char* flag) {
    if (!v.has(key)) throw Error(ErrorCode::usage, flag, "is required");
    return v.get_text(key);
  };
  auto opt_real = [&](const char* key, double fallback) {
    return v.registry().find_by_key(key) && v.has(key) ? v.get_real(key) : fallback;
  };
  auto opt_int = [&](const char* key, int64_t fallback) {
    return v.registry().find_by_key(key) && v.has(key) ? v.get_int(key) : fallback;
  };
  TrainOptions o;
  o.run = required("train.run", "--run");
  // Post-training on labelled generations (dpo, kto) reads no dataset.
  const bool preference =
      kind == TrainKind::dit && v.has("train.objective") && v.get_text("train.objective") != "flow";
  o.dataset = preference && !v.has("train.dataset") ? std::string() : required("train.dataset", "--dataset");
  if (kind == TrainKind::dit) {
    if (v.has("train.from")) o.from = v.get_text("train.from");
    if (v.has("train.from_weights")) o.from_weights = v.get_text("train.from_weights");
    if (v.has("train.lora")) o.lora = trim(v.get_text("train.lora"));
    if (v.has("train.base_dtype")) o.base_dtype = v.get_text("train.base_dtype");
    if (o.base_dtype == "bf16" && o.lora.empty())
      throw Error(ErrorCode::usage, "--base-dtype",
                  "a bf16 base is for LoRA runs (--lora): a full fine-tune trains it");
    if (v.has("train.offload")) o.offload = v.get_text("train.offload");
    if (o.offload == "blocks" && o.lora.empty())
      throw Error(ErrorCode::usage, "--offload",
                  "block swap keeps a frozen base in host memory; a full fine-tune trains every block (use "
                  "--lora)");
    if (!o.lora.empty() && o.from.empty())
      throw Error(ErrorCode::usage, "--lora", "adapters train on a base: give --from RUN");
    // A fine-tune learns the latents of its base's VAE run, which it finds itself.
    o.vae_run = o.from.empty() || v.has("train.vae_run") ? required("train.vae_run", "--vae-run") : "";
  }
  o.preset = v.get_text("train.preset");
  o.model = v.has("train.model") ? v.get_text("train.model") : o.preset;
  o.steps = v.get_int("train.steps");
  o.batch = v.get_int("train.batch");
  o.lr = v.get_real("train.lr");
  o.warmup_steps = v.get_int("train.warmup");
  o.schedule = lr_schedule_from_string(v.get_text("train.schedule")).value_or(LrSchedule::constant);
  o.min_lr = v.get_real("train.min_lr");
  o.adam.beta1 = v.get_real("train.beta1");
  o.adam.beta2 = v.get_real("train.beta2");
  o.adam.eps = v.get_real("train.adam_eps");
  o.adam.weight_decay = v.get_real("train.weight_decay");
  if (kind == TrainKind::dit && v.has("train.optimizer")) o.optimizer = v.get_text("train.optimizer");
  o.muon.momentum = opt_real("train.muon_momentum", o.muon.momentum);
  if (kind == TrainKind::dit) {
    o.objective = v.get_text("train.objective");
    o.preference_labels = v.get_text("train.preference_labels");
    o.preference_beta = v.get_real("train.preference_beta");
    o.preference_sft_weight = v.get_real("train.preference_sft_weight");
    o.clip_filter = trim(v.get_text("train.clip_filter"));
    o.curriculum = trim(v.get_text("train.curriculum"));
    if (o.objective != "flow" && !o.curriculum.empty())
      throw Error(ErrorCode::usage, "--curriculum",
                  cat(o.objective,
                      " learns from labelled generations as they are; a curriculum shapes flow "
                      "training on the dataset"));
    if (o.objective != "flow" && o.from.empty())
      throw Error(ErrorCode::usage, "--objective",
                  cat(o.objective, " post-trains a model against its frozen self: give --from RUN"));
    if (o.objective != "flow" && !o.clip_filter.empty())
      throw Error(ErrorCode::usage, "--clip-filter",
                  cat(o.objective, " learns from labelled generations, not from the dataset's clips"));
  }
  if (kind == TrainKind::dit) o.parametrization = v.get_text("train.parametrization");
  o.mup_base_hidden = opt_int("train.mup_base_hidden", o.mup_base_hidden);
  o.muon.lr_scale = opt_real("train.muon_lr_scale", o.muon.lr_scale);
  o.grad_clip = v.get_real("train.grad_clip");
  o.ema_decay = opt_real("train.ema", 0.999);
  if (kind == TrainKind::dit) o.ema_profiles = v.get_text("train.ema_profiles");
  o.ema_snapshot_every = opt_int("train.ema_snapshot_every", 0);
  o.seed = static_cast<uint64_t>(v.get_int("train.seed"));
  o.save_every = v.get_int("train.save_every");
  o.keep_checkpoints = v.get_int("train.keep");
  o.sample_every = opt_int("train.sample_every", 0);
  o.sample_steps = opt_int("train.sample_steps", 10);
  if (v.registry().find_by_key("train.sample_prompts") && v.has("train.sample_prompts"))
    for (const auto& prompt : split(v.get_text("train.sample_prompts"), '|'))
      if (auto text = trim(prompt); !text.empty()) o.sample_prompts.push_back(text);
  o.threads = v.get_int("train.threads");
  if (o.threads == 0) {
    // All cores, shared by the ranks this node runs.
    const int64_t ranks_here = std::max(1, rendezvous_from_process_environment().local_world_size);
    o.threads = std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()) / ranks_here);
  }
  o.tp = opt_int("train.tp", 1);
  o.cp = opt_int("train.cp", 1);
  o.pp = opt_int("train.pp", 1);
  if (v.registry().find_by_key("train.pp_schedule") && v.has("train.pp_schedule"))
    o.pp_schedule = v.get_text("train.pp_schedule");
  o.pp_virtual = opt_int("train.pp_virtual", 2);
  o.micro_batches = opt_int("train.micro_batches", 0);
  o.zero = opt_int("train.zero", 0);
  o.comm_timeout_s = opt_real("train.comm_timeout", 300.0);
  if (v.registry().find_by_key("train.recompute") && v.has("train.recompute"))
    o.recompute = v.get_text("train.recompute");
  o.recompute_blocks = opt_int("train.recompute_blocks", 0);
  if (v.registry().find_by_key("train.bucket_batch") && v.has("train.bucket_batch"))
    o.bucket_batch = v.get_text("train.bucket_batch");
  o.max_memory_gb = v.get_real("train.max_memory_gb");
  o.prefetch = v.get_int("train.prefetch");
  o.precision = v.get_text("train.precision");
  o.device = v.get_text("train.device");
  o.flow.shift_base_px = opt_real("flow.shift_base", 512.0);
  o.flow.p_first_frame = opt_real("flow.p_first_frame", 0.0);
  o.flow.p_caption_dropout = opt_real("flow.caption_dropout", 0.1);
  if (v.registry().find_by_key("data.size")) {
    Size2D size = v.get_size2d("data.size");
    o.width = size.width;
    o.height = size.height;
    o.frames = v.get_int("data.frames");
    o.fps = v.get_real("data.fps");
    o.heldout_clips = v.get_int("data.heldout_clips");
    o.crop_frames = v.get_int("data.crop_frames");
    if (const std::string crop = v.get_text("data.crop_size"); !crop.empty()) {
      const auto parsed = parse_size2d(crop);
      if (!parsed) throw Error(ErrorCode::usage, "--crop-size", cat("'", crop, "' is not WxH"));
      o.crop_width = parsed->width;
      o.crop_height = parsed->height;
    }
  }
  return o;
}

ParamValues dit_resume_values(const ParamRegistry& registry, const RunPaths& paths,
                              const RunManifest& manifest, const ResumeChanges& changes) {
  nlohmann::json overrides = changes.values.is_object() ? changes.values : nlohmann::json::object();
  overrides.update({{"train.run", manifest.name},
                    {"train.model", manifest.preset},
                    {"train.dataset", manifest.dataset},
                    {"train.vae_run", manifest.vae_run}});
  if (changes.steps) overrides["train.steps"] = *changes.steps;
  return values_from_run_config(registry, manifest.config, overrides, paths.manifest().string());
}

}  // namespace mugv
