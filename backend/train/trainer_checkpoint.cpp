#include "train/trainer_checkpoint.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "model/lora.h"
#include "model/weights.h"
#include "train/rng_state.h"
#include "train/sharded_checkpoint.h"

namespace mugv::dit_training {
namespace {

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

// "adamw" or "muon", from an optimizer file's "optimizer" metadata ("adamw-zero1" is AdamW's ZeRO form).
std::string optimizer_family(const std::string& kind) {
  return kind.substr(0, kind.find('-'));
}

}  // namespace

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

void save_ema_snapshot(Session& s) {
  CheckpointStore store(s.paths.ema_snapshots());
  commit_from_all_ranks(
      s, store,
      [&](const fs::path& staging, bool writes_weights) {
        if (writes_weights) save_power_ema(s, staging);
      },
      commit_metadata(s), 0);
}

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

}  // namespace mugv::dit_training
