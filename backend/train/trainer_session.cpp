#include "train/trainer_session.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "model/lora.h"
#include "model/weights.h"
#include "parallel/sequence_parallel.h"
#include "train/muon.h"
#include "train/parametrization.h"
#include "train/zero_optimizer.h"

#include <algorithm>
#include <set>

namespace mugv::dit_training {
namespace {

fs::path curriculum_file(const Session& s) {
  return s.paths.root / "curriculum.json";
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

}  // namespace

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

void load_run_curriculum(Session& s, bool fresh) {
  const fs::path stored = curriculum_file(s);
  if (fresh) {
    if (!s.options.curriculum.empty())
      s.curriculum = load_curriculum(s.options.curriculum).resolved(s.options.steps);
  } else if (fs::exists(stored)) {
    s.curriculum = curriculum_from_json(read_json_file(stored), stored.string());
  }
}

void store_run_data(Session& s) {
  if (!s.curriculum.empty()) write_json_atomic(curriculum_file(s), s.curriculum.to_json());
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

int64_t trainable_estimate(const Session& s) {
  return s.lora() ? lora_parameter_count(s.preset.dit, parse_lora_config(s.options.lora)) : -1;
}

}  // namespace mugv::dit_training
