#pragma once
// The parameters of `mugv train`, `mugv resume` and `mugv train-vae`, declared once in a registry
// (core/params.h) so that flags, presets/train/*.toml, run.json configs and the studio's forms agree.
//
// Cascade: built-in defaults < presets/train/<preset>.toml < environment < command line. --preset
// names a training preset; a name that is only a model preset (presets/models/<name>.toml) is used
// as the model with the built-in training defaults. A run stores its resolved values in run.json
// ("config"), and `mugv resume` rebuilds its options from there.
//
// Keys: train.*  (optimisation, checkpoints, threads), data.* (VAE clip geometry), flow.*
// (objective), run identity: train.preset, train.model, train.dataset, train.vae_run, train.run.
// Thread safety: pure functions; the registry they fill follows core/params.h rules.

#include "core/params.h"
#include "train/flow.h"
#include "train/muon.h"
#include "train/optim.h"
#include "train/preference.h"
#include "train/run_layout.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

// Which command's parameter set to declare.
enum class TrainKind { unknown = 0, dit, vae };
const char* to_string(TrainKind kind);
std::optional<TrainKind> train_kind_from_string(std::string_view name);

void define_train_params(ParamRegistry& registry, TrainKind kind);

// Re-resolves `values` with the training preset they name (train.preset) inserted below the
// environment and command line. Throws Error(not_found) listing presets when the name is neither
// a training nor a model preset, Error(invalid_argument) naming the preset file when the preset is for the
// other trainer (core/presets.h preset_trainer).
[[nodiscard]] ParamValues resolve_train_preset(const ParamValues& values, TrainKind kind);
// Values from a run's stored config (run.json), with `overrides` (canonical values by key) on top.
[[nodiscard]] ParamValues values_from_run_config(const ParamRegistry& registry, const nlohmann::json& config,
                                                 const nlohmann::json& overrides, const std::string& origin);

// What a resumed DiT run may change: its total step count, and other training values by key — the
// parallel layout ({"train.tp": 1}), threads, device, precision — which do not change the model or the
// data. resume_dit writes them into the run's stored config, so later resumes keep them.
struct ResumeChanges {
  ResumeChanges(std::optional<int64_t> new_steps = std::nullopt)
      : steps(new_steps) {}  // NOLINT: implicit by design
  std::optional<int64_t> steps;
  nlohmann::json values = nlohmann::json::object();
};

// The values a DiT run continues with: its stored config, with the manifest's identity (run, model,
// dataset, VAE run) and the changes on top. `registry` holds the DiT training parameters
// (define_train_params) and must outlive the values, which refer to it.
[[nodiscard]] ParamValues dit_resume_values(const ParamRegistry& registry, const RunPaths& paths,
                                            const RunManifest& manifest, const ResumeChanges& changes);

struct TrainOptions {
  std::string run;
  std::string preset;  // training preset name (as given)
  std::string model;   // model preset name
  std::string dataset;
  std::string vae_run;  // DiT runs (fine-tunes: the base's when empty)
  // Fine-tuning (train/fine_tune.h): the DiT run to start from, which of its weights, and the LoRA settings
  // (model/lora.h parse_lora_config; empty: every weight trains).
  std::string from;
  std::string from_weights = "ema";
  std::string lora;
  std::string base_dtype = "fp32";  // LoRA: the frozen base's linear weights in fp32 or bf16
  std::string offload = "none";     // LoRA: none | blocks (the frozen blocks swapped in from host memory)
  int64_t steps = 1000;
  int64_t batch = 4;
  double lr = 1e-4;
  int64_t warmup_steps = 100;
  LrSchedule schedule = LrSchedule::constant;
  double min_lr = 0.0;
  std::string optimizer = "adamw";  // adamw | muon (train/muon.h: Muon on hidden matrices, AdamW on the rest)
  AdamWOptions adam;
  MuonOptions muon;
  std::string parametrization = "standard";  // standard | mup (train/parametrization.h)
  int64_t mup_base_hidden = 64;              // μP: the width at which it equals the standard parametrisation
  // Post-training (train/preference.h): flow on the dataset, or dpo / kto on labelled generations against the
  // frozen --from base, with whose labels, beta and the weight of its SFT anchor. `preferences` is the
  // collected data (preference_collect.h) for a new run; a resumed one reads its own copy from the run
  // folder.
  std::string objective = "flow";
  std::string preference_labels = "all";
  double preference_beta = 1000.0;
  double preference_sft_weight = 0.0;  // λ of the winners' flow loss added to DPO / KTO (preference.h)
  std::shared_ptr<const PreferenceCollection> preferences;
  // SFT on a curated subset: the catalog filter (catalog/clips.h parse_clip_filter) and, for a new run, the
  // clip ids it selected (the trainer is catalog-free; the command resolves them). Stored in the run folder.
  std::string clip_filter;
  // The curriculum (train/curriculum.h): a preset name or TOML file; empty: none. A new run stores the loaded
  // stages in its folder (curriculum.json) and a resumed one follows those.
  std::string curriculum;
  std::optional<std::vector<int64_t>> clip_subset;
  double grad_clip = 1.0;  // 0: no clipping (the norm is still measured)
  double ema_decay = 0.999;
  // Post-hoc EMA (train/posthoc_ema.h): relative lengths of the power-function EMAs tracked ("0.05,0.1";
  // empty: none) and how often their snapshots are stored (0: with every checkpoint).
  std::string ema_profiles;
  int64_t ema_snapshot_every = 0;
  uint64_t seed = 0;
  int64_t save_every = 500;
  int64_t keep_checkpoints = 3;
  int64_t sample_every = 0;
  int64_t sample_steps = 10;
  std::vector<std::string> sample_prompts;  // empty: captions of the dataset
  int64_t threads = 0;                      // 0: all cores
  double max_memory_gb = 0;                 // 0: only MemAvailable limits
  int64_t prefetch = 2;
  std::string device = "auto";     // auto | cpu | cuda (model/compute.h)
  std::string precision = "auto";  // forward passes: auto | fp32 | bf16 (model/compute.h)
  // Multi-rank DiT runs (started by `mugv launch` or srun): dp = world / (tp · cp · pp).
  int64_t tp = 1, cp = 1, pp = 1;
  std::string pp_schedule = "1f1b";  // 1f1b | interleaved (parallel/pipeline.h)
  int64_t pp_virtual = 2;            // interleaved: chunks per stage
  int64_t micro_batches = 0;       // per step and data-parallel replica; 0: 1, or 2·pp with pipeline stages
  int64_t zero = 0;                // ZeRO stage: 0 off, 1 optimizer state sharded over data-parallel ranks
  std::string recompute = "none";  // activation recomputation: none | selective | full
  int64_t recompute_blocks = 0;    // partial: the first N blocks of each pipeline stage (0: all)
  // Clips per batch in each bucket of clips of one size: fixed (--batch everywhere) or memory (as many as fit
  // the memory --batch clips of the largest bucket need).
  std::string bucket_batch = "fixed";
  double comm_timeout_s = 300;  // a collective (or a missing rank) fails the run after this
  FlowOptions flow;
  // VAE runs: the clip geometry decoded for training and later used by `mugv encode`.
  int64_t width = 64, height = 64, frames = 17;
  double fps = 8;
  int64_t heldout_clips = 4;  // VAE runs: held-out clips for the final PSNR
  // VAE runs: random training windows (0: the whole clip along that axis).
  int64_t crop_frames = 0, crop_width = 0, crop_height = 0;
};

// Reads the resolved values (of either kind; absent keys keep their defaults). Throws
// Error(usage) naming the flag when a required identity value (--run, --dataset, --vae-run) is unset.
[[nodiscard]] TrainOptions train_options_from(const ParamValues& values, TrainKind kind);

}  // namespace mugv
