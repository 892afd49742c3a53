#pragma once
// The state of one DiT training run on this rank, and how it is set up (trainer.cpp's train_dit and
// resume_dit, in this order): connect_ranks, load_training_data, build_model; the checkpoints
// (trainer_checkpoint.h) and the step (trainer_step.h) work on it. Internal to the trainer: train/trainer.h
// is the interface.
//
// Every function throws Error naming the option or file that is wrong (usage for an option that does not
// parse, invalid_argument for one that does not fit the data or the layout). With several ranks the
// functions that talk (connect_ranks, on_leader, build_model's optimizers) must be called by every rank in
// the same order.

#include "model/compute.h"
#include "model/run_models.h"
#include "model/tokenizer.h"
#include "parallel/pipeline.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "train/curriculum.h"
#include "train/data.h"
#include "train/fine_tune.h"
#include "train/gradient_sync.h"
#include "train/latent_cache.h"
#include "train/optim.h"
#include "train/posthoc_ema.h"
#include "train/preference.h"
#include "train/sharded_checkpoint.h"
#include "train/text_feature_cache.h"
#include "train/trainer.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv::dit_training {

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
  Curriculum curriculum;          // stages by step (empty: none), as stored in the run folder
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

// Joins the other ranks when this process is one of several (mugv launch, srun) and picks the device; a
// single process needs --tp = --cp = --pp = 1. Throws Error(invalid_argument) for a layout that does not fit
// the world, Error(usage) for a post-training run split by tp / cp / pp.
void connect_ranks(Session& s);

// Runs `fn` on rank 0 only and tells every rank whether it worked, so that a refusal there (run exists, bad
// dataset) stops all ranks at once instead of leaving them waiting for a collective.
void on_leader(Session& s, const std::function<void()>& fn);

// Where a post-training run keeps its labelled data (runs/R/preference_data).
fs::path preference_dir(const Session& s);

// What the run trains on: the latent cache of its dataset (a new SFT run: the clips of its --clip-filter; a
// resumed one: the subset it stored), or a post-training run's labelled generations. `fresh`: a new run.
// Throws Error(invalid_argument) for an empty selection or latents of another preset.
void load_training_data(Session& s, bool fresh);

// A new run keeps what it trains on in its folder: the clip subset of its filter, or its preference data
// (then read back so that the entries name their files), and its curriculum. Rank 0, once the run folder
// exists.
void store_run_data(Session& s);

// The run's curriculum: a new run loads --curriculum (`fresh`), a resumed one reads the copy in its folder.
// Throws the errors of train/curriculum.h naming the preset, file and key.
void load_run_curriculum(Session& s, bool fresh);

// The most video tokens of any clip the run trains on (the memory estimate's sequence length).
int64_t max_video_tokens(const Session& s);

// The parameters a run trains for the memory estimate: a LoRA run's adapters, or -1 (all).
int64_t trainable_estimate(const Session& s);

// The model on its device as the options say — base weights, adapters, precision, tensor / context /
// pipeline split, recomputation, block swap, μP — with its optimizer, EMAs, gradient sync and (post-training)
// the frozen reference. Seeded, so every rank builds the same weights and keeps its pieces.
void build_model(Session& s);

}  // namespace mugv::dit_training
