#include "train/trainer.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/lora.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "parallel/sequence_parallel.h"
#include "train/fine_tune.h"
#include "train/flow.h"
#include "train/gradient_sync.h"
#include "train/latent_cache.h"
#include "train/muon.h"
#include "train/optim.h"
#include "train/parametrization.h"
#include "train/pipeline_step.h"
#include "train/posthoc_ema.h"
#include "train/preference.h"
#include "train/rng_state.h"
#include "train/sharded_checkpoint.h"
#include "train/step_log.h"
#include "train/text_feature_cache.h"
#include "train/zero_optimizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
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
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  std::unique_ptr<PowerEma> power_ema;  // post-hoc EMA profiles (--ema-profiles), when tracked
  DataCursor cursor;
  int64_t step = 0;               // last finished step
  std::optional<BaseModel> base;  // fine-tunes: the run they start from (train/fine_tune.h)
  TrainObjective objective = TrainObjective::flow;
  // dpo / kto (train/preference.h): the frozen reference (the base, never trained) and the items the run
  // learns from, indexed by the clip ids of its preference data.
  DiTBundle reference{nullptr};
  std::vector<PreferenceItem> preference_items;
  // A frozen text encoder's features, computed once per caption (LoRA runs, fine-tunes of a released model).
  std::unique_ptr<TextFeatureCache> text_cache;
  // Multi-rank runs (null / empty in one process).
  Rendezvous rendezvous;
  std::shared_ptr<ProcessGroups> groups;
  std::unique_ptr<GradientSync> sync;
  bool zero_sharded = false;  // ZeRO-1 over more than one data-parallel rank
  // Pipeline stages and micro-batches (parallel/pipeline.h): one stage, one chunk unless --pp /
  // --micro-batches.
  PipelineShape pipeline;
  int micro_batches = 1;
  // Every tensor of the model by checkpoint name with this rank's (tensor-parallel) shape, recorded before a
  // pipeline stage releases the parameters it does not hold: what checkpoints of any layout are read against.
  std::map<std::string, std::vector<int64_t>> model_shapes;
  torch::Device device = torch::kCPU;  // of the model, its gradients, optimizer state and each batch
  ComputePrecision precision = ComputePrecision::fp32;  // of the forward passes (model/compute.h)

  bool leader() const { return !groups || groups->rank() == 0; }
  int stage() const { return groups ? groups->coords().pp_rank : 0; }
  // Whether this rank's stage holds the named tensor (every tensor without pipeline stages).
  bool holds(const std::string& name) const {
    return pipeline.stages == 1 || stage_of_parameter(pipeline, name) == stage();
  }
  // Forward and backward as micro-batches through the pipeline (or accumulated in one stage).
  bool pipelined() const { return pipeline.stages > 1 || micro_batches > 1; }
  // "model.pp0of2.tp1of2.safetensors": this rank's file of `stem` (with a data-parallel piece index for
  // ZeRO-sharded state).
  std::string file_name(const std::string& stem, int dp_rank = 0, int dp = 1) const {
    const RankCoords me = coords();
    const ParallelLayout l = layout();
    return checkpoint_file_name(stem, me.tp_rank, l.tp, dp_rank, dp, me.pp_rank, l.pp);
  }
  bool lora() const { return !options.lora.empty(); }
  ParallelLayout layout() const { return groups ? groups->layout() : ParallelLayout{}; }
  RankCoords coords() const { return groups ? groups->coords() : RankCoords{}; }
  void barrier() const {
    if (groups) groups->barrier(GroupKind::world);
  }
};

// Joins the other ranks when this process is one of several (mugv launch, srun); a single process needs
// --tp = --cp = 1. Throws Error(invalid_argument) for a layout that does not fit the world.
void connect_ranks(Session& s) {
  s.rendezvous = rendezvous_from_process_environment();
  const auto& o = s.options;
  s.device = choose_compute_device(o.device, s.rendezvous.local_rank);
  const int world = s.rendezvous.world_size;
  // The frozen reference runs whole on every rank: post-training splits the batch, not the model.
  if (world > 1 && is_preference_objective(s.objective) && o.tp * o.cp * o.pp != 1)
    throw Error(ErrorCode::usage, "--objective",
                cat(to_string(s.objective),
                    " post-training runs data parallel (and ZeRO-1) only; give --tp, --cp "
                    "and --pp 1"));
  if (world == 1) {
    if (o.tp != 1 || o.cp != 1 || o.pp != 1)
      throw Error(ErrorCode::invalid_argument, cat("--tp ", o.tp, " --cp ", o.cp, " --pp ", o.pp),
                  "tensor, context and pipeline parallel need several ranks: start the run with `mugv launch "
                  "--nproc N -- mugv train ...`");
    return;
  }
  const int64_t model_parallel = o.tp * o.cp * o.pp;
  if (model_parallel < 1 || world % model_parallel != 0)
    throw Error(ErrorCode::invalid_argument, cat("--tp ", o.tp, " --cp ", o.cp, " --pp ", o.pp),
                cat("tp x cp x pp = ", model_parallel, " does not divide the ", world, " ranks"));
  ParallelLayout layout{int(o.tp), int(o.cp), world / int(model_parallel), int(o.pp)};
  validate_layout(layout, world, s.preset.dit.heads, s.preset.dit.depth);
  const auto backend = s.device.is_cuda() ? CommBackend::nccl : CommBackend::gloo;
  s.groups = ProcessGroups::connect(s.rendezvous, layout, backend,
                                    std::chrono::milliseconds(int64_t(o.comm_timeout_s * 1000)));
  log_info(cat("rank ", s.groups->rank(), " of ", world, ": layout ", to_string(layout), ", ",
               to_string(backend)));
}

// Runs `fn` on rank 0 only and tells every rank whether it worked, so that a refusal there (run exists, bad
// dataset) stops all ranks at once instead of leaving them waiting for a collective.
void on_leader(Session& s, const std::function<void()>& fn) {
  if (s.leader()) {
    try {
      fn();
    } catch (...) {
      if (!s.groups) throw;
      auto flag = torch::ones({1}, torch::kInt32);
      s.groups->all_reduce_sum(GroupKind::world, flag);
      throw;
    }
  }
  if (!s.groups) return;
  auto flag = torch::zeros({1}, torch::kInt32);
  s.groups->all_reduce_sum(GroupKind::world, flag);
  if (flag.item<int>() != 0)
    throw Error(ErrorCode::conflict, s.options.run, "rank 0 stopped the run (its log says why)");
}

fs::path preference_dir(const Session& s) {
  return s.paths.root / "preference_data";
}
fs::path clip_subset_file(const Session& s) {
  return s.paths.root / "clip_subset.json";
}

// A new post-training run's data as entries without files yet (they are written once the run folder exists,
// store_run_data), so that the checks and the memory estimate see them.
void preference_clips_from_collection(Session& s) {
  const auto& collection = s.options.preferences;
  if (!collection)
    throw Error(ErrorCode::usage, "--objective",
                cat(to_string(s.objective), " needs labelled preferences collected from the catalog"));
  if (collection->items.empty()) {
    std::string why = collection->skipped.empty()
                          ? "label pairs of generations in the studio, or with `mugv label --auto`"
                          : cat(collection->skipped.size(), " labelled generation(s) are unusable, e.g. ",
                                collection->skipped.front());
    throw Error(
        ErrorCode::invalid_argument, "--objective",
        cat("no labelled preferences to learn from (", s.options.preference_labels, " labels): ", why));
  }
  s.clips.clear();
  for (size_t k = 0; k < collection->items.size(); ++k) {
    CachedClip c;
    c.clip_id = int64_t(k);
    c.caption = collection->items[k].caption;
    c.frames = collection->geometry[k].frames;
    c.height = collection->geometry[k].height;
    c.width = collection->geometry[k].width;
    c.fps = collection->geometry[k].fps;
    c.latent_shape = collection->latents[k].sizes().vec();
    s.clips.push_back(std::move(c));
  }
  s.preference_items = collection->items;
}

// What the run trains on: the latent cache of its dataset (a new SFT run: the clips of its --clip-filter; a
// resumed one: the subset it stored), or a post-training run's labelled generations. `fresh`: a new run.
void load_training_data(Session& s, bool fresh) {
  if (is_preference_objective(s.objective)) {
    if (fresh) {
      preference_clips_from_collection(s);
    } else {
      auto data = read_preference_data(preference_dir(s));
      s.clips = std::move(data.clips);
      s.preference_items = std::move(data.items);
    }
  } else {
    const fs::path cache = latent_cache_dir(s.options.dataset, s.options.vae_run);
    s.clips = list_cached_clips(cache);
    if (s.clips.empty())
      throw Error(ErrorCode::invalid_argument, s.options.dataset,
                  cat("no cached latents for VAE run '", s.options.vae_run, "' in ", cache.string(),
                      "; run `mugv encode --dataset ", s.options.dataset, " --vae-run ", s.options.vae_run,
                      "` first"));
    std::optional<std::vector<int64_t>> subset = s.options.clip_subset;
    if (!fresh && fs::exists(clip_subset_file(s)))
      subset = read_json_file(clip_subset_file(s)).at("clip_ids").get<std::vector<int64_t>>();
    if (subset) {
      const std::set<int64_t> wanted(subset->begin(), subset->end());
      s.clips.erase(std::remove_if(s.clips.begin(), s.clips.end(),
                                   [&](const CachedClip& c) { return !wanted.count(c.clip_id); }),
                    s.clips.end());
      if (s.clips.empty())
        throw Error(ErrorCode::invalid_argument, "--clip-filter",
                    cat("'", s.options.clip_filter, "' selects ", wanted.size(), " clip(s) of ",
                        s.options.dataset, ", none of them in the latent cache ", cache.string()));
      log_info(cat("run ", s.options.run, ": ", s.clips.size(), " cached clips match --clip-filter '",
                   s.options.clip_filter, "'"));
    }
  }
  const int64_t channels = s.preset.dit.in_channels * (s.objective == TrainObjective::dpo ? 2 : 1);
  for (const auto& c : s.clips)
    if (c.latent_shape[0] != channels)
      throw Error(ErrorCode::invalid_argument, c.path.string(),
                  cat("latent has ", c.latent_shape[0], " channels; model preset '", s.preset.name,
                      "' expects ", channels, " (encode with a VAE of the same preset)"));
}

// A new run keeps what it trains on in its folder: the clip subset of its filter, or its preference data
// (then read back so that the entries name their files).
void store_run_data(Session& s) {
  if (s.options.clip_subset)
    write_json_atomic(clip_subset_file(s),
                      {{"clip_filter", s.options.clip_filter}, {"clip_ids", *s.options.clip_subset}});
  if (is_preference_objective(s.objective)) {
    write_preference_data(preference_dir(s), *s.options.preferences);
    s.clips = read_preference_data(preference_dir(s)).clips;
  }
}

int64_t max_video_tokens(const Session& s) {
  int64_t tokens = 0;
  for (const auto& c : s.clips)
    tokens = std::max(
        tokens, dit_video_tokens(s.preset.dit, c.latent_shape[1], c.latent_shape[2], c.latent_shape[3]));
  return tokens;
}

// The frozen base's linear weights in bf16 (LoRA runs, --base-dtype bf16): half their memory. Under bf16
// autocast every linear computes in bf16 anyway, so the forward reads the same values; norms, tables and the
// patch embedder stay fp32. Needs bf16 autocast: an fp32 forward cannot multiply fp32 inputs by bf16 weights.
void store_linears_in_bf16(DiTBundleImpl& model, const Session& s) {
  if (s.precision != ComputePrecision::bf16)
    throw Error(ErrorCode::usage, "--base-dtype",
                "a bf16 base needs --precision bf16 (its linears compute in bf16)");
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_modules("", false))
    if (auto* linear = item.value()->as<torch::nn::Linear>()) {
      linear->weight.set_data(linear->weight.to(torch::kBFloat16));
      if (linear->bias.defined()) linear->bias.set_data(linear->bias.to(torch::kBFloat16));
    }
}

// Pipeline stages and micro-batches from the options; records every tensor's shape, then releases the
// parameters another stage holds (their storage; the modules stay, unused by this stage's forward).
void set_up_pipeline(Session& s) {
  const auto& o = s.options;
  const auto schedule = pipeline_schedule_from_string(o.pp_schedule);
  if (!schedule)
    throw Error(ErrorCode::usage, "--pp-schedule", cat("'", o.pp_schedule, "' is not 1f1b or interleaved"));
  const int stages = s.layout().pp;
  // Interleaving needs neighbouring chunks on different stages: with one stage it is plain accumulation.
  const int virtual_stages = *schedule == PipelineSchedule::interleaved && stages > 1 ? int(o.pp_virtual) : 1;
  s.pipeline = PipelineShape{int(s.preset.dit.depth), stages, virtual_stages};
  s.micro_batches = o.micro_batches > 0 ? int(o.micro_batches) : (stages > 1 ? 2 * stages : 1);
  validate_pipeline(s.pipeline, s.micro_batches);
  if (s.pipelined() && is_preference_objective(s.objective))
    throw Error(ErrorCode::usage, "--micro-batches",
                cat(to_string(s.objective), " post-training runs each step as one batch"));
  s.model_shapes.clear();
  for (const auto& [name, t] : module_state(*s.model)) s.model_shapes[name] = t.sizes().vec();
  if (stages == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : named_parameters(*s.model))
    if (!s.holds(name)) {
      p.set_requires_grad(false);
      p.set_data(torch::empty({0}, p.options()));
    }
  if (s.leader())
    log_info(cat("pipeline: ", stages, " stages x ", virtual_stages, " chunk(s), ", s.micro_batches,
                 " micro-batches per step, ", to_string(*schedule)));
}

// Partial recomputation (--recompute-blocks N): the first N blocks this rank's pipeline stage holds, in model
// order (Megatron's block method); empty = every block.
std::vector<int64_t> recomputed_blocks(const Session& s) {
  const int64_t wanted = s.options.recompute_blocks;
  if (wanted <= 0) return {};
  std::vector<int64_t> blocks;
  for (int chunk : chunks_of_stage(s.pipeline, s.stage())) {
    const BlockRange range = chunk_blocks(s.pipeline, chunk);
    for (int b = range.first; b < range.last && int64_t(blocks.size()) < wanted; ++b) blocks.push_back(b);
  }
  return blocks;
}

void build_model(Session& s) {
  torch::set_num_threads(static_cast<int>(s.options.threads));
  torch::manual_seed(s.options.seed);  // every rank builds the same weights, then keeps its pieces
  s.model = DiTBundle(s.preset);
  if (s.base) load_base_model(*s.base, s.model->dit, s.model->text);  // draws nothing from the generator
  if (s.base && s.base->is_release())                                 // the released T5 stays as released
    for (auto& p : s.model->text->parameters()) p.set_requires_grad(false);
  auto recompute = recompute_from_string(s.options.recompute);
  if (!recompute || *recompute == Recompute::unknown)
    throw Error(ErrorCode::usage, "--recompute",
                cat("'", s.options.recompute, "' is not none, selective or full"));
  const PrecisionChoice precision = choose_compute_precision(s.options.precision, s.device.type());
  s.precision = precision.precision;
  if (s.leader())
    log_info(
        cat("device ", s.device.str(), ", precision ", to_string(s.precision), " (", precision.reason, ")"));
  const ParallelLayout layout = s.layout();
  if (s.groups && layout.tp * layout.cp > 1)
    s.model->dit->set_parallel(std::make_shared<C10dDiTParallel>(s.groups));
  if (s.lora()) {
    // The base (DiT and text encoder) is frozen; the adapters are the only parameters that train.
    for (auto& p : s.model->parameters()) p.set_requires_grad(false);
    if (s.options.base_dtype == "bf16") store_linears_in_bf16(*s.model, s);
    lora_set_of(*s.model->dit).attach_trainable(*s.model->dit, parse_lora_config(s.options.lora));
  }
  set_up_pipeline(s);
  s.model->dit->set_recompute(*recompute, recomputed_blocks(s));
  // Built on the CPU (the same initial weights on any device), then moved: only this rank's tensor-parallel
  // pieces and pipeline stage, so a GPU never holds the whole model.
  s.model->to(s.device);
  s.model->train();
  if (s.options.offload == "blocks") {
    // The frozen blocks wait in host memory; the adapters inside them stay on the device.
    if (layout.tp * layout.cp * layout.pp > 1)
      throw Error(
          ErrorCode::usage, "--offload",
          cat("block swap runs the whole DiT on each rank; this layout splits it (", to_string(layout), ")"));
    auto offload = std::make_shared<BlockOffload>(*s.model->dit, s.device, OffloadUse::training);
    if (s.leader())
      log_info(cat("block swap: ", offload->blocks(), " frozen blocks in host memory, ",
                   offload->block_bytes() / (1 << 20), " MiB each; every block is recomputed in backward"));
    s.model->dit->set_block_offload(std::move(offload));
  }
  s.params.clear();
  for (auto& [name, p] : named_parameters(*s.model))
    if (p.requires_grad() && s.holds(name)) s.params.emplace_back(name, p);
  const auto parametrization = parametrization_from_string(s.options.parametrization);
  if (!parametrization)
    throw Error(ErrorCode::usage, "--parametrization",
                cat("'", s.options.parametrization, "' is not standard or mup"));
  const double width_multiplier = double(s.preset.dit.hidden) / double(s.options.mup_base_hidden);
  // μP's initial spread only for new models: a fine-tune's weights come from its base.
  if (*parametrization == Parametrization::mup && !s.base) apply_mup_init(s.params, width_multiplier);
  bool text_trains = false;
  for (const auto& p : s.model->text->parameters()) text_trains = text_trains || p.requires_grad();
  if (s.base && !text_trains) {
    // Named by the base, the token length and the precision: features of another encoder never mix in.
    s.text_cache = std::make_unique<TextFeatureCache>(
        cat(to_json(*s.base).dump(), "|", s.preset.text.max_tokens, "|", to_string(s.precision)),
        *s.model->text);
    if (s.leader())
      log_info(cat("text features of the frozen text encoder are cached in ", s.text_cache->dir().string()));
  }
  s.zero_sharded = s.groups && s.options.zero >= 1 && layout.dp > 1;
  if (s.options.optimizer == "muon")
    s.optimizer = std::make_unique<Muon>(s.groups, s.params, s.options.muon, s.options.adam, s.zero_sharded);
  else if (s.options.optimizer != "adamw")
    throw Error(ErrorCode::usage, "--optimizer", cat("'", s.options.optimizer, "' is not adamw or muon"));
  else if (s.zero_sharded)
    s.optimizer = std::make_unique<ZeroAdamW>(s.groups, s.params, s.options.adam);
  else
    s.optimizer = std::make_unique<AdamW>(s.params, s.options.adam);
  if (*parametrization == Parametrization::mup)
    s.optimizer->set_lr_scales(mup_lr_scales(s.params, width_multiplier, s.options.optimizer == "muon"));
  s.ema = std::make_unique<Ema>(s.params, s.options.ema_decay);
  if (const auto profiles = parse_sigma_rels(s.options.ema_profiles); !profiles.empty())
    s.power_ema = std::make_unique<PowerEma>(s.params, profiles);
  if (s.groups) s.sync = std::make_unique<GradientSync>(s.groups, s.params);
  if (is_preference_objective(s.objective)) {
    // The reference is the base as it was, frozen: the yardstick the policy's errors are measured against.
    // Same mode as the policy, so that before the first update both predict exactly the same.
    s.reference = DiTBundle(s.preset);
    load_base_model(*s.base, s.reference->dit, s.reference->text);
    for (auto& p : s.reference->parameters()) p.set_requires_grad(false);
    s.reference->to(s.device);
    s.reference->train();
    // It only runs forwards under no-grad: an inference block swap, so it costs the device two blocks too.
    if (s.options.offload == "blocks")
      s.reference->dit->set_block_offload(std::make_shared<BlockOffload>(*s.reference->dit, s.device));
  }
}

std::map<std::string, std::string> file_metadata(const Session& s, int64_t step) {
  std::map<std::string, std::string> m{
      {"preset", s.preset.name}, {"kind", "dit"}, {"step", std::to_string(step)}, {"run", s.options.run}};
  if (s.lora()) {  // what model/lora_file.h reads: the checkpoint is an adapter file too
    const LoraConfig lora = parse_lora_config(s.options.lora);
    m["lora"] = to_string(lora);
    m["lora_alpha"] = cat(lora.alpha);
    m["lora_rank"] = std::to_string(lora.rank);
  }
  if (s.base) m["base_sha256"] = s.base->sha256;
  return m;
}

// What the checkpoints hold as "model": every weight, or a LoRA run's adapters alone (the base is its own
// run's checkpoint).
NamedTensors saved_state(const Session& s) {
  if (s.lora()) return s.params;
  // A released base's T5 is frozen and read from its folder; a pipeline stage saves what it holds.
  const bool dit_only = s.base && s.base->is_release();
  NamedTensors kept;
  for (auto& [name, t] : module_state(*s.model))
    if ((!dit_only || name.rfind("dit.", 0) == 0) && s.holds(name)) kept.emplace_back(name, t);
  return kept;
}

// The post-hoc EMA profiles' files of this rank ("ema_p0[.tp0of2].safetensors", ...).
void save_power_ema(const Session& s, const fs::path& dir) {
  for (size_t k = 0; s.power_ema && k < s.power_ema->profiles(); ++k) {
    auto metadata = file_metadata(s, s.step);
    metadata["sigma_rel"] = cat(s.power_ema->sigma_rel(k));
    metadata["gamma"] = cat(s.power_ema->gamma(k));
    save_named_tensors(s.power_ema->tensors(k), dir / s.file_name(PowerEma::stem(k)), metadata);
  }
}

// Every rank writes its files (`write`, given the staging folder and whether this rank writes weights: one
// copy of each tensor-parallel piece) into one staging folder of `store` for the current step; rank 0 adds
// the layout, commits it once all are written and keeps the newest `keep` (0: all). Rank 0 gets the
// reference.
std::optional<CheckpointRef> commit_from_all_ranks(Session& s, CheckpointStore& store,
                                                   const std::function<void(const fs::path&, bool)>& write,
                                                   const nlohmann::json& metadata, int keep) {
  const std::string tag = s.groups ? cat("ranks-", s.rendezvous.master_port) : std::string();
  fs::path staging;
  if (s.leader()) staging = store.begin(s.step, tag);
  s.barrier();
  if (!s.leader()) staging = store.staging_path(s.step, tag);
  const ParallelLayout layout = s.layout();
  const RankCoords me = s.coords();
  write(staging, me.cp_rank == 0 && me.dp_rank == 0);
  if (s.leader() && s.groups)
    write_checkpoint_layout(staging, {layout.tp, layout.cp, layout.dp, layout.pp, s.zero_sharded});
  s.barrier();
  std::optional<CheckpointRef> ref;
  if (s.leader()) {
    ref = store.commit(staging, s.step, metadata);
    if (keep > 0) store.prune(keep);
  }
  s.barrier();
  return ref;
}

nlohmann::json commit_metadata(const Session& s) {
  return {
      {"preset", s.preset.name}, {"kind", "dit"}, {"run", s.options.run}, {"layout", to_string(s.layout())}};
}

CheckpointRef save_checkpoint(Session& s, double loss) {
  CheckpointStore store(s.paths.checkpoints());
  const ParallelLayout layout = s.layout();
  const RankCoords me = s.coords();
  auto write = [&](const fs::path& staging, bool writes_weights) {
    if (writes_weights) {
      save_named_tensors(saved_state(s), staging / s.file_name("model"), file_metadata(s, s.step));
      s.ema->save(staging / s.file_name("ema"), file_metadata(s, s.step));
      save_power_ema(s, staging);
    }
    if (s.zero_sharded ? me.cp_rank == 0 : writes_weights)
      save_named_tensors(
          s.optimizer->state(),
          staging / s.file_name("optimizer", s.zero_sharded ? me.dp_rank : 0, s.zero_sharded ? layout.dp : 1),
          s.optimizer->state_metadata());
    if (s.leader()) {
      nlohmann::json state = {{"step", s.step},
                              {"seed", s.options.seed},
                              {"rng_state", torch_rng_state_base64()},
                              {"data_cursor", {{"epoch", s.cursor.epoch}, {"position", s.cursor.position}}},
                              {"optimizer_steps", s.optimizer->steps_taken()}};
      write_json_atomic(staging / "trainer_state.json", state);
    }
  };
  nlohmann::json metadata = commit_metadata(s);
  metadata["loss"] = loss;
  auto ref = commit_from_all_ranks(s, store, write, metadata, static_cast<int>(s.options.keep_checkpoints));
  if (ref) return *ref;
  return CheckpointRef{s.step, store.dir() / CheckpointStore::step_dir_name(s.step), {}};
}

// A snapshot of every post-hoc EMA profile at the current step (runs/R/ema_snapshots/step-N), all kept.
void save_ema_snapshot(Session& s) {
  CheckpointStore store(s.paths.ema_snapshots());
  commit_from_all_ranks(
      s, store,
      [&](const fs::path& staging, bool writes_weights) {
        if (writes_weights) save_power_ema(s, staging);
      },
      commit_metadata(s), 0);
}

// This rank's pieces of whole tensors, checked against `targets` (names and this rank's shapes) before
// anything is copied. Throws Error(corrupt) naming `subject` and the first missing or misshapen tensor.
std::vector<torch::Tensor> cut_pieces(const CanonicalTensors& canonical, const NamedTensors& targets,
                                      const Session& s, const std::string& subject) {
  const int tp = s.layout().tp, tp_rank = s.coords().tp_rank;
  std::vector<torch::Tensor> pieces;
  for (const auto& [name, target] : targets) {
    auto it = canonical.tensors.find(name);
    if (it == canonical.tensors.end())
      throw Error(ErrorCode::corrupt, subject, cat("tensor ", name, " is missing"));
    const auto want = full_shape_of(name, target.sizes().vec(), tp);
    if (it->second.sizes().vec() != want)
      throw Error(ErrorCode::corrupt, subject,
                  cat(name, " has shape ", it->second.sizes(), "; expected ", want));
    pieces.push_back(shard_tensor(it->second, tensor_parallel_role(state_parameter_name(name)), tp_rank, tp));
  }
  return pieces;
}

void copy_pieces(const NamedTensors& targets, const std::vector<torch::Tensor>& pieces) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) targets[i].second.copy_(pieces[i]);
}

// The parameters a run trains for the memory estimate: a LoRA run's adapters, or -1 (all).
int64_t trainable_estimate(const Session& s) {
  return s.lora() ? lora_parameter_count(s.preset.dit, parse_lora_config(s.options.lora)) : -1;
}

// "adamw" or "muon", from an optimizer file's "optimizer" metadata ("adamw-zero1" is AdamW's ZeRO form).
std::string optimizer_family(const std::string& kind) {
  return kind.substr(0, kind.find('-'));
}

// Loads one checkpoint into the session; throws Error naming the problem.
void load_checkpoint(Session& s, const CheckpointRef& ref) {
  const std::string preset = ref.metadata.value("preset", "");
  if (preset != s.preset.name)
    throw Error(ErrorCode::invalid_argument, ref.dir.string(),
                cat("made for model preset '", preset, "'; this run uses '", s.preset.name, "'"));
  // Whatever layout wrote it: join the pieces, then cut this rank's (sharded_checkpoint.h).
  const CheckpointLayout saved = read_checkpoint_layout(ref.dir);
  const int tp = s.layout().tp;
  const NamedTensors model_state = saved_state(s);
  std::map<std::string, std::vector<int64_t>> full_shapes;
  for (const auto& [name, shape] : s.model_shapes) full_shapes[name] = full_shape_of(name, shape, tp);
  const std::string subject = cat(ref.dir.string(), " (written as ", describe(saved), ")");
  auto model_pieces =
      cut_pieces(read_canonical_tensors(ref.dir, "model", saved, full_shapes), model_state, s, subject);
  auto ema_pieces =
      cut_pieces(read_canonical_tensors(ref.dir, "ema", saved, full_shapes), s.ema->tensors(), s, subject);
  auto optimizer = read_canonical_tensors(ref.dir, "optimizer", saved, full_shapes);
  const std::string saved_family = optimizer_family(
      optimizer.metadata.count("optimizer") ? optimizer.metadata.at("optimizer") : std::string("adamw"));
  if (saved_family != s.options.optimizer)
    throw Error(ErrorCode::invalid_argument, subject,
                cat("its optimizer state is ", saved_family, "'s; this run uses ", s.options.optimizer));
  const NamedTensors optimizer_targets = s.optimizer->state_targets();
  auto optimizer_pieces = cut_pieces(optimizer, optimizer_targets, s, subject);
  std::map<std::string, torch::Tensor> optimizer_state;
  for (size_t i = 0; i < optimizer_targets.size(); ++i)
    optimizer_state[optimizer_targets[i].first] = optimizer_pieces[i];
  auto step_it = optimizer.metadata.find("step");
  if (step_it == optimizer.metadata.end())
    throw Error(ErrorCode::corrupt, subject, "optimizer step is missing");
  s.optimizer->load_state(optimizer_state, std::stoll(step_it->second), subject);
  std::vector<std::vector<torch::Tensor>> profile_pieces;
  for (size_t k = 0; s.power_ema && k < s.power_ema->profiles(); ++k)
    profile_pieces.push_back(
        cut_pieces(read_canonical_tensors(ref.dir, PowerEma::stem(k), saved, full_shapes),
                   s.power_ema->tensors(k), s, subject));
  copy_pieces(model_state, model_pieces);
  copy_pieces(s.ema->tensors(), ema_pieces);
  for (size_t k = 0; k < profile_pieces.size(); ++k) copy_pieces(s.power_ema->tensors(k), profile_pieces[k]);
  auto state = read_json_file(ref.dir / "trainer_state.json");
  try {
    s.step = state.at("step").get<int64_t>();
    s.cursor.epoch = state.at("data_cursor").at("epoch").get<int64_t>();
    s.cursor.position = state.at("data_cursor").at("position").get<int64_t>();
    set_torch_rng_state_base64(state.at("rng_state").get<std::string>(),
                               (ref.dir / "trainer_state.json").string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::corrupt, (ref.dir / "trainer_state.json").string(), e.what());
  }
  if (s.step != ref.step)
    throw Error(ErrorCode::corrupt, ref.dir.string(),
                cat("trainer state says step ", s.step, ", folder says ", ref.step));
}

// The samples of the global batch that this data-parallel rank trains on: [begin, end).
std::pair<int64_t, int64_t> my_samples(const Session& s, int64_t batch) {
  const int64_t dp = s.layout().dp, rank = s.coords().dp_rank;
  return {batch * rank / dp, batch * (rank + 1) / dp};
}

// One step's inputs on this rank: its samples of the global batch, tokenised.
struct StepData {
  torch::Tensor latents, fps, ids, mask;  // this rank's samples [b, ...]
  int64_t global_batch = 0, first = 0;    // the batch's size and this rank's first sample in it
  int64_t height = 0, width = 0;          // pixel geometry of the bucket (the timestep shift)
  DataCursor cursor, next_cursor;
  double wait_ms = 0;
  std::vector<int64_t> clip_ids;  // this rank's samples (post-training: indices of its preference items)
};

// Reads the next batch (on the first rank of this replica group) and hands this rank its samples. The
// tp x cp x pp ranks of one data-parallel replica train on the same samples: one of them reads and tokenises,
// the others receive the tensors by broadcast, so the files are read once per replica.
StepData next_step_data(const Session& s, LatentLoader* loader, int64_t text_tokens) {
  const bool shared = s.groups && s.groups->group_size(GroupKind::replica) > 1;
  StepData d;
  torch::Tensor header = torch::zeros({12}, torch::kInt64);
  if (loader) {
    Batch batch = loader->next();
    d.global_batch = batch.latents.size(0);
    const auto [first, last] = my_samples(s, d.global_batch);
    d.first = first;
    d.latents = batch.latents.narrow(0, first, last - first).contiguous();
    d.clip_ids.assign(batch.clip_ids.begin() + first, batch.clip_ids.begin() + last);
    d.fps = batch.fps.narrow(0, first, last - first).contiguous();
    std::vector<int64_t> ids, mask;
    for (int64_t i = first; i < last; ++i) {
      auto tok = s.tokenizer->encode(batch.captions[size_t(i)], static_cast<int>(text_tokens),
                                     TokenLimitPolicy::truncate);
      ids.insert(ids.end(), tok.ids.begin(), tok.ids.end());
      mask.insert(mask.end(), tok.mask.begin(), tok.mask.end());
    }
    d.ids = torch::tensor(ids, torch::kInt64).view({last - first, text_tokens});
    d.mask = torch::tensor(mask, torch::kInt64).view({last - first, text_tokens}).to(torch::kFloat32);
    d.height = batch.height;
    d.width = batch.width;
    d.cursor = batch.cursor;
    d.next_cursor = loader->cursor();
    d.wait_ms = batch.wait_ms;
    if (!shared) return d;
    const auto shape = d.latents.sizes();
    header = torch::tensor({shape[0], shape[1], shape[2], shape[3], shape[4], d.global_batch, d.first,
                            d.height, d.width, d.next_cursor.epoch, d.next_cursor.position, int64_t(0)},
                           torch::kInt64);
  }
  if (!shared) return d;
  s.groups->broadcast(GroupKind::replica, header, 0);
  auto h = header.accessor<int64_t, 1>();
  if (!loader) {
    d.latents = torch::empty({h[0], h[1], h[2], h[3], h[4]}, torch::kFloat32);
    d.fps = torch::empty({h[0]}, torch::kFloat32);
    d.ids = torch::empty({h[0], text_tokens}, torch::kInt64);
    d.mask = torch::empty({h[0], text_tokens}, torch::kFloat32);
    d.global_batch = h[5];
    d.first = h[6];
    d.height = h[7];
    d.width = h[8];
    d.next_cursor = {h[9], h[10]};
  }
  for (torch::Tensor* t : {&d.latents, &d.fps, &d.ids, &d.mask})
    s.groups->broadcast(GroupKind::replica, *t, 0);
  return d;
}

// The start of the DiT's pass for a flow batch (model/dit.h begin_pass): the captions encoded (or read from
// `text_cache`) and dropped where the batch says. Call under the run's autocast.
DiTPass begin_velocity_pass(const Session& s, DiTBundleImpl& model, TextFeatureCache* text_cache,
                            const FlowBatch& fb, const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                            const torch::Tensor& fps) {
  const int64_t text_tokens = s.preset.text.max_tokens;
  const bool any_cond = fb.cond_mask.any().item<bool>();
  auto text = text_cache ? text_cache->features(ids_t, mask_t) : model.text->forward(ids_t, mask_t);
  // A DiT without a learned null caption (the release layout) drops captions to the encoded empty prompt.
  torch::Tensor null_text, null_mask;
  if (!model.dit->has_null_caption() && fb.drop_caption.any().item<bool>()) {
    const auto empty = s.tokenizer->encode("", static_cast<int>(text_tokens), TokenLimitPolicy::truncate);
    null_mask = torch::tensor(empty.mask, torch::kLong).view({1, -1}).to(s.device, torch::kFloat32);
    const auto empty_ids = torch::tensor(empty.ids, torch::kLong).view({1, -1}).to(s.device);
    null_text =
        text_cache ? text_cache->features(empty_ids, null_mask) : model.text->forward(empty_ids, null_mask);
  }
  // A model without a learned null caption (the release layout) needs nothing when no caption is dropped;
  // one with it always goes through drop_captions, so its null caption gets a (zero) gradient every step.
  const bool pass_through = !model.dit->has_null_caption() && !fb.drop_caption.any().item<bool>();
  auto [text_in, mask_in] =
      pass_through ? std::make_pair(text, mask_t)
                   : model.dit->drop_captions(text, mask_t, fb.drop_caption, null_text, null_mask);
  return model.dit->begin_pass(fb.x_t, fb.t * kDiTTimesteps, text_in, mask_in, fps,
                               any_cond ? fb.cond_mask : torch::Tensor());
}

// The velocity part of the DiT's output for a finished pass, in fp32.
torch::Tensor velocity_of(const Session& s, DiTBundleImpl& model, DiTPass& pass) {
  return model.dit->finish_pass(pass).narrow(1, 0, s.preset.dit.in_channels).to(torch::kFloat32);
}

// The velocity `model` predicts for a flow batch, in fp32 (the loss and its gradient are computed in fp32);
// captions are dropped where the batch says. `text_cache`: the frozen text encoder's cached features, or null
// to run the model's own text encoder.
torch::Tensor predict_velocity(const Session& s, DiTBundleImpl& model, TextFeatureCache* text_cache,
                               const FlowBatch& fb, const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                               const torch::Tensor& fps) {
  AutocastScope autocast(s.precision, s.device.type());
  DiTPass pass = begin_velocity_pass(s, model, text_cache, fb, ids_t, mask_t, fps);
  model.dit->run_blocks(pass, 0, s.preset.dit.depth);
  return velocity_of(s, model, pass);
}

FlowBatch sample_range(const FlowBatch& fb, int64_t begin, int64_t end) {
  auto part = [&](const torch::Tensor& t) { return t.narrow(0, begin, end - begin); };
  return {part(fb.x_t), part(fb.t), part(fb.target), part(fb.cond_mask), part(fb.drop_caption)};
}

// Forward and backward of one flow step as micro-batches through this rank's pipeline stage
// (train/pipeline_step.h); the gradients are left accumulated in the parameters. Each micro-batch's loss is
// its squared-error sum over the elements every data-parallel rank counts in this step, so the summed
// gradients are those of the whole batch's mean, as in one process. Returns the step's loss (on every rank)
// and this stage's waits.
PipelineStepResult pipelined_flow_step(Session& s, const StepData& batch, int64_t step,
                                       const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                                       const torch::Tensor& fps) {
  const auto& o = s.options;
  // On the CPU: each micro-batch goes to the device when its forward starts, so a stage never holds the
  // replica's whole batch there.
  const FlowBatch fb =
      make_flow_batch(batch.latents, o.seed, step, batch.height, batch.width, o.flow, batch.first);
  auto counted = torch::tensor({flow_loss_elements(fb.target, fb.cond_mask)}, torch::kFloat64);
  if (s.groups) s.groups->all_reduce_sum(GroupKind::data, counted);
  const double total = std::max(1.0, counted.item<double>());
  // Micro-batches: as many as asked, at most one per sample (interleaving needs a multiple of the stages).
  const int64_t samples = batch.latents.size(0);
  int micro = int(std::min<int64_t>(s.micro_batches, samples));
  if (s.pipeline.virtual_stages > 1) micro -= micro % s.pipeline.stages;
  if (micro < 1)
    throw Error(
        ErrorCode::invalid_argument, o.run,
        cat("step ", step, ": ", samples, " sample(s) per replica cannot fill the interleaved schedule's ",
            s.pipeline.stages, " micro-batches; raise --batch"));
  auto range = [&](int j) { return std::make_pair(samples * j / micro, samples * (j + 1) / micro); };
  std::vector<FlowBatch> parts;
  for (int j = 0; j < micro; ++j) parts.push_back(sample_range(fb, range(j).first, range(j).second));
  // A micro-batch's copy on the device from its forward to its loss, so a stage that is both the first and
  // the last copies it once; released once its loss is computed.
  std::vector<FlowBatch> on_device(static_cast<size_t>(micro));
  DiTBundleImpl& model = *s.model;
  PipelineStepHooks hooks;
  hooks.begin = [&](int j) {
    AutocastScope autocast(s.precision, s.device.type());
    const auto [b, e] = range(j);
    on_device[size_t(j)] = to_device(parts[size_t(j)], s.device);
    return begin_velocity_pass(s, model, s.text_cache.get(), on_device[size_t(j)], ids_t.narrow(0, b, e - b),
                               mask_t.narrow(0, b, e - b), fps.narrow(0, b, e - b));
  };
  hooks.resume = [&](int j, const DiTPassTensors& received) {
    AutocastScope autocast(s.precision, s.device.type());  // as begin_pass computes the RoPE angles
    return model.dit->resume_pass(parts[size_t(j)].x_t, received);
  };
  hooks.blocks = [&](DiTPass& pass, BlockRange blocks) {
    AutocastScope autocast(s.precision, s.device.type());
    model.dit->run_blocks(pass, blocks.first, blocks.last);
  };
  hooks.loss = [&](int j, DiTPass& pass) {
    torch::Tensor prediction;
    {
      AutocastScope autocast(s.precision, s.device.type());
      prediction = velocity_of(s, model, pass);
    }
    FlowBatch& copied = on_device[size_t(j)];
    const FlowBatch& part = parts[size_t(j)];
    const torch::Tensor target = copied.target.defined() ? copied.target : part.target.to(s.device);
    const torch::Tensor cond_mask = copied.target.defined() ? copied.cond_mask : part.cond_mask.to(s.device);
    copied = FlowBatch{};
    return masked_flow_loss_parts(prediction, target, cond_mask).squared_error_sum / total;
  };
  PipelineStepResult result = run_pipeline_step(s.groups, s.pipeline, s.stage(), micro, s.device, hooks);
  if (s.groups) {  // the last stage's sum, over the data-parallel replicas, on every rank
    auto loss = torch::tensor({result.loss}, torch::kFloat64);
    s.groups->all_reduce_sum(GroupKind::data, loss);
    if (s.stage() != s.pipeline.stages - 1) loss.zero_();
    s.groups->all_reduce_sum(GroupKind::pipeline, loss);
    result.loss = loss.item<double>();
  }
  return result;
}

// One post-training step's loss (train/preference.h) on this batch of preference items: the policy's and the
// frozen reference's per-sample flow errors under the same t and noise. A DPO item's latent holds the
// winner's channels then the loser's; both halves draw the same t and noise (the draws depend only on the
// sample's index in the batch). Conditioning frames and caption dropout are off: the labels judge whole
// videos of their prompts.
PreferenceLoss preference_step_loss(Session& s, const StepData& batch, int64_t step,
                                    const torch::Tensor& ids_t, const torch::Tensor& mask_t,
                                    const torch::Tensor& fps) {
  const auto& o = s.options;
  FlowOptions plain = o.flow;
  plain.p_first_frame = 0;
  plain.p_caption_dropout = 0;
  // Noise from per-sample seeds by the items' places in the whole batch, so a rank's part of the batch draws
  // what one process would for the same items.
  auto flow_of = [&](const torch::Tensor& x0) {
    return to_device(
        make_flow_batch(x0.contiguous(), o.seed, step, batch.height, batch.width, plain, batch.first),
        s.device);
  };
  const SumOverRanks sum_over_ranks = [&s](torch::Tensor& t) {
    if (s.groups && s.layout().dp > 1) s.groups->all_reduce_sum(GroupKind::data, t);
  };
  auto errors = [&](DiTBundleImpl& model, TextFeatureCache* cache, const FlowBatch& fb,
                    const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& rates) {
    return per_sample_flow_error(predict_velocity(s, model, cache, fb, ids, mask, rates), fb.target,
                                 torch::Tensor());
  };
  if (s.objective == TrainObjective::dpo) {
    const int64_t c = s.preset.dit.in_channels, n = batch.latents.size(0);
    const FlowBatch both =
        concat(flow_of(batch.latents.narrow(1, 0, c)), flow_of(batch.latents.narrow(1, c, c)));
    const auto ids2 = torch::cat({ids_t, ids_t}), mask2 = torch::cat({mask_t, mask_t});
    const auto fps2 = torch::cat({fps, fps});
    const auto policy = errors(*s.model, s.text_cache.get(), both, ids2, mask2, fps2);
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = errors(*s.reference, nullptr, both, ids2, mask2, fps2);
    }
    return dpo_loss(policy.narrow(0, 0, n), policy.narrow(0, n, n), reference.narrow(0, 0, n),
                    reference.narrow(0, n, n), o.preference_beta, o.preference_sft_weight, sum_over_ranks);
  }
  const FlowBatch fb = flow_of(batch.latents);
  std::vector<uint8_t> desirable;
  for (int64_t id : batch.clip_ids) desirable.push_back(s.preference_items.at(size_t(id)).desirable ? 1 : 0);
  const auto labels = torch::tensor(desirable, torch::kUInt8).to(torch::kBool).to(s.device);
  const auto policy = errors(*s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = errors(*s.reference, nullptr, fb, ids_t, mask_t, fps);
  }
  return kto_loss(policy, reference, labels, o.preference_beta, o.preference_sft_weight, 1.0, 1.0,
                  sum_over_ranks);
}

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

// What one step's forward and backward left besides the gradients.
struct ForwardBackward {
  double loss = 0;  // the batch's loss, the same on every rank
  double pipeline_wait_ms = 0, pipeline_ms = 0;
  nlohmann::json objective_metrics;  // post-training objectives: accuracy, margin, reference point
};

// One step's forward and backward on this rank: afterwards each parameter's gradient is its part of the
// gradient of the whole batch's loss (summed over the data-parallel ranks once s.sync->end_step() ran). A
// non-finite loss stops the run before the backward: `stop_nonfinite` throws.
ForwardBackward forward_backward(Session& s, const StepData& batch, int64_t step,
                                 const std::function<void(const char*, double)>& stop_nonfinite) {
  const auto& o = s.options;
  const auto& latents = batch.latents;
  const auto fps = batch.fps.to(s.device);
  const auto ids_t = batch.ids.to(s.device);
  const auto mask_t = batch.mask.to(s.device);
  ForwardBackward out;
  if (s.pipelined()) {  // the schedule runs the backward of each micro-batch itself
    s.optimizer->zero_grad();
    if (s.sync) s.sync->begin_step(/*overlap=*/false);
    const PipelineStepResult piped = pipelined_flow_step(s, batch, step, ids_t, mask_t, fps);
    out.loss = piped.loss;
    out.pipeline_wait_ms = piped.receive_ms + piped.send_ms;
    out.pipeline_ms = piped.total_ms;
    if (!std::isfinite(out.loss)) stop_nonfinite("loss", out.loss);
    return out;
  }
  torch::Tensor loss;
  if (is_preference_objective(s.objective)) {
    const PreferenceLoss preference = preference_step_loss(s, batch, step, ids_t, mask_t, fps);
    loss = preference.loss;
    out.loss = preference.value;
    out.objective_metrics = {{"accuracy", preference.accuracy}, {"margin", preference.margin}};
    if (s.options.preference_sft_weight > 0) out.objective_metrics["sft"] = preference.sft;
    if (s.objective == TrainObjective::kto) out.objective_metrics["reference_point"] = preference.reference;
  } else if (s.layout().dp > 1) {
    // The noise is drawn on the CPU from per-sample seeds, so a run's noise is the same on any device.
    const FlowBatch fb = to_device(
        make_flow_batch(latents, o.seed, step, batch.height, batch.width, o.flow, batch.first), s.device);
    const torch::Tensor pred = predict_velocity(s, *s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
    // Each rank holds part of the batch: loss = (its squared-error sum) / (elements counted on all ranks),
    // so the data-parallel SUM of gradients is the gradient of the whole batch's mean.
    auto parts = masked_flow_loss_parts(pred, fb.target, fb.cond_mask);
    auto counted = torch::tensor({parts.counted}, torch::kFloat64);
    s.groups->all_reduce_sum(GroupKind::data, counted);
    loss = parts.squared_error_sum / std::max(1.0, counted.item<double>());
    auto total = loss.detach().to(torch::kFloat64).reshape({1});
    s.groups->all_reduce_sum(GroupKind::data, total);
    out.loss = total.item<double>();
  } else {
    const FlowBatch fb = to_device(
        make_flow_batch(latents, o.seed, step, batch.height, batch.width, o.flow, batch.first), s.device);
    const torch::Tensor pred = predict_velocity(s, *s.model, s.text_cache.get(), fb, ids_t, mask_t, fps);
    loss = masked_flow_loss(pred, fb.target, fb.cond_mask);
    out.loss = loss.item<double>();
  }
  if (!std::isfinite(out.loss)) stop_nonfinite("loss", out.loss);
  s.optimizer->zero_grad();
  if (s.sync) s.sync->begin_step();
  loss.backward();
  return out;
}

// One training step: forward_backward, then the update: gradients reduced over the ranks and clipped, the
// optimizer's step at the scheduled rate, the EMAs.
struct StepOutcome {
  ForwardBackward pass;
  double grad_norm = 0, lr = 0, communication_ms = 0;
};
StepOutcome train_step(Session& s, const StepData& batch, int64_t step,
                       const std::function<void(const char*, double)>& stop_nonfinite) {
  const auto& o = s.options;
  StepOutcome u;
  u.pass = forward_backward(s, batch, step, stop_nonfinite);
  if (s.sync) {
    s.sync->end_step();
    u.grad_norm = s.sync->clip_grad_norm(o.grad_clip);
    u.communication_ms = s.sync->communication_ms();
  } else {
    std::vector<torch::Tensor> params;
    for (auto& [name, p] : s.params) params.push_back(p);
    u.grad_norm = clip_grad_norm(params, o.grad_clip);
  }
  if (!std::isfinite(u.grad_norm)) stop_nonfinite("gradient norm", u.grad_norm);
  u.lr = scheduled_lr(step, o.lr, o.warmup_steps, o.steps, o.schedule, o.min_lr);
  auto t_optimizer = std::chrono::steady_clock::now();
  s.optimizer->step(u.lr);
  if (s.zero_sharded)  // the parameter all-gather of ZeRO-1 is communication too
    u.communication_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_optimizer).count();
  s.ema->update(s.params, step);
  if (s.power_ema) s.power_ema->update(s.params, step);
  return u;
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

}  // namespace

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

namespace {

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

TrainResult train_dit(const TrainOptions& options, const nlohmann::json& config, const CancelToken& cancel,
                      const TrainCallbacks& callbacks) {
  Session s;
  s.options = options;
  s.objective = objective_of(options);
  s.paths = run_paths(options.run);
  if (!options.from.empty()) {
    s.base = find_base(options.from, weight_set_from_string(options.from_weights).value_or(WeightSet::ema));
    adopt_base(s);
  }
  s.preset = s.base ? base_preset(*s.base) : load_model_preset(s.options.model);
  connect_ranks(s);
  // Refused before the run folder exists, so a corrected command can use the same name.
  if (s.options.base_dtype == "bf16" &&
      choose_compute_precision(s.options.precision, s.device.type()).precision != ComputePrecision::bf16)
    throw Error(ErrorCode::usage, "--base-dtype",
                "a bf16 base needs --precision bf16 (its linears compute in bf16)");
  load_training_data(s, true);
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
  return run_loop(s, cancel, callbacks, TrainResult{});
}

TrainResult resume_dit(const std::string& name, const ResumeChanges& changes, const CancelToken& cancel,
                       const TrainCallbacks& callbacks) {
  Session s;
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
  s.objective = objective_of(s.options);
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
  return run_loop(s, cancel, callbacks, std::move(result));
}

}  // namespace mugv
