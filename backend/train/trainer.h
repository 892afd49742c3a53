#pragma once
// The DiT trainer (`mugv train`, `mugv resume`): rectified flow (flow.h) over a latent cache
// (data.h), jointly training the small text encoder, with AdamW or Muon (muon.h), optionally under μP
// (parametrization.h), warm-up + constant/cosine LR, gradient clipping, an online EMA (optim.h) and, with
// --ema-profiles, post-hoc EMA profiles kept in checkpoints and stored as snapshots (posthoc_ema.h). The run
// folder follows run_layout.h exactly:
//   run.json (kind dit, model preset, dataset, VAE run, resolved config), tokenizer.model (trained
//   on the cached captions at run start), metrics.jsonl (one line per step: step, loss, lr,
//   grad_norm, tokens_per_s, flops_per_s, mfu, peak_rss_bytes, data_wait_ms, step_ms), and
//   checkpoints/step-N/ {model, ema, optimizer}.safetensors + trainer_state.json (step, torch RNG
//   state in base64, data cursor, seed) committed through CheckpointStore.
//
// Exact resume: noise, t, conditioning and dropout are drawn per (seed, step, sample), the loader
// resumes from its cursor, the optimiser state is restored bit for bit and torch uses the same
// thread count, so N steps straight and N/2 + stop + resume + N/2 give identical parameters on CPU.
//
// Failure behaviour: a NaN/Inf loss or gradient norm stops the run with Error(invalid_argument)
// naming the step; nothing is saved for that step, so the last good checkpoint stays `latest`.
// A cancel (token checked every step) saves a checkpoint of the last finished step, then throws
// Error(cancelled). Before anything is allocated the memory need is estimated and the run refused
// with Error(out_of_memory) stating the estimate when it exceeds MemAvailable or --max-memory-gb.
// Resume loads the newest checkpoint that verifies AND loads (a damaged, truncated or other-preset
// checkpoint is refused with its reason, reported in TrainResult::refused, and an older one used).
// Multi-rank runs (started by `mugv launch` or srun; parallel/rendezvous.h): the ranks form a tp × cp × dp ×
// pp layout (--tp, --cp, --pp; dp is the rest). Pipeline stages (--pp, --pp-schedule) each hold a contiguous
// part of the blocks (parallel/pipeline.h) and run the step as --micro-batches micro-batches through the
// schedule (train/pipeline_step.h); in one process --micro-batches accumulates gradients. Each step's batch
// is split over the data-parallel ranks (sample i of the batch draws the same noise wherever it runs), the
// DiT is split by tensor/sequence and context parallel (model/dit_parallel.h), gradients are reduced by
// gradient_sync.h and, with --zero 1, AdamW state is sharded (zero_optimizer.h). Rank 0 alone writes
// run.json, the tokenizer, metrics and progress and commits checkpoints; every rank writes its pieces
// (sharded_checkpoint.h). MFU counts every rank's measured GEMM peak. Cancel, save-now and sample-now are
// agreed by all ranks before they act. Objectives (train.objective): flow (the above), or post-training of a
// --from base against a frozen copy of it on labelled generations, dpo / kto (train/preference.h); these run
// in one process. SFT is flow on a clip subset (TrainOptions::clip_subset, kept in the run folder as
// clip_subset.json). Not thread-safe: one training per process at a time (torch thread settings are global).

#include "core/progress.h"
#include "model/config.h"
#include "model/run_models.h"
#include "train/checkpoint_store.h"
#include "train/data.h"
#include "train/train_params.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double flops_per_s = 0;
  double mfu = 0;  // flops_per_s / measured GEMM rate
  int64_t peak_rss_bytes = 0;
  double data_wait_ms = 0;
  double step_ms = 0;
  double compute_ms = 0;        // step_ms less communication and data wait (this rank)
  double communication_ms = 0;  // waiting for gradient reduction and ZeRO's parameter gather (this rank)
  // Pipeline stages: waiting for the neighbouring stages' activations and gradients (the bubble, as this
  // stage sees it) and for its own sends to land.
  double pipeline_wait_ms = 0;
  double pipeline_ms = 0;  // the whole schedule (forwards, backwards and waits) on this stage
  struct RankSplit {
    double compute_ms = 0, communication_ms = 0, data_wait_ms = 0;
    int64_t peak_rss_bytes = 0;
    double pipeline_wait_ms = 0, pipeline_ms = 0;
  };
  std::vector<RankSplit> ranks;  // multi-rank runs: every rank's split, by rank
  DataCursor cursor;             // the batch this step used
  // Post-training (dpo / kto): accuracy, margin (and KTO's reference_point) of train/preference.h; null else.
  nlohmann::json objective;
  // With a curriculum (train/curriculum.h): its stage, whether the step trained on images, the latent frames
  // kept and the first-frame conditioning; null else.
  nlohmann::json curriculum;
  nlohmann::json to_json() const;
};

struct TrainCallbacks {
  ProgressFn progress;
  std::function<void(const StepMetrics&)> on_step;
  // Called before step `step` runs, with the model bundle (tests poison weights or cancel here).
  std::function<void(int64_t step, DiTBundleImpl& model)> before_step;
  // Renders samples at --sample-every steps; when empty the trainer logs that it skips them.
  std::function<void(int64_t step, const RunPaths& run, DiTBundleImpl& model)> sample;
  // Polled after every step: true asks for a checkpoint / samples of that step now ("save now", "sample
  // now").
  std::function<bool()> save_requested;
  std::function<bool()> sample_requested;
};

struct TrainResult {
  int64_t start_step = 0;  // checkpoint step the run continued from (0: fresh)
  int64_t last_step = 0;
  double last_loss = 0;
  std::optional<CheckpointRef> last_checkpoint;
  std::vector<CheckpointProblem> refused;  // checkpoints skipped on resume, with reasons
  double gemm_flops = 0;                   // measured GEMM peak used for MFU
  RunPaths paths;
};

struct MemoryEstimate {
  int64_t parameters = 0;            // every parameter, adapters included
  int64_t trainable_parameters = 0;  // those with gradients, AdamW moments and an EMA
  int64_t weight_bytes = 0;          // weights + grads + AdamW moments + EMA
  int64_t activation_bytes = 0;      // one step's saved activations (estimate)
  int64_t total_bytes = 0;           // + a fixed runtime allowance
  std::string describe()
      const;  // "3.1 GiB (weights/optimizer 1.2 GiB, activations 1.6 GiB, runtime 0.3 GiB)"
};
// `trainable_parameters`: those that get gradients, optimizer state and an EMA (a LoRA run's adapters, which
// come on top of the preset's parameters); -1 = every parameter of the preset (pretraining, full fine-tune).
[[nodiscard]] MemoryEstimate estimate_dit_training_memory(const ModelPreset& preset, int64_t batch,
                                                          int64_t video_tokens,
                                                          int64_t trainable_parameters = -1);
// --bucket-batch memory: each bucket of `clips` (frames × height × width) takes as many clips per batch as
// fit the memory `batch` clips of the bucket with the most video tokens need (estimate_dit_training_memory,
// with `samples_per_clip` samples per clip: 2 for DPO pairs), so short or small clips train in larger batches
// at the same peak; never fewer than `batch`, nor more than the bucket holds.
[[nodiscard]] std::map<BucketGeometry, int64_t> memory_bucket_batches(const ModelPreset& preset,
                                                                      const std::vector<CachedClip>& clips,
                                                                      int64_t batch,
                                                                      int64_t trainable_parameters,
                                                                      int64_t samples_per_clip = 1);
// Throws Error(out_of_memory) with the estimate when it exceeds `max_memory_gb` (when > 0) or, when the
// run keeps its tensors in host memory (`host_memory`: a CPU run), MemAvailable.
void preflight_memory(const MemoryEstimate& estimate, double max_memory_gb, const std::string& subject,
                      bool host_memory = true);

// Starts a new DiT run. `config` is stored in run.json (the resolved ParamValues::to_json()).
// Throws Error(conflict) when the run already exists, Error(invalid_argument) when the cache is
// empty or does not match the model ("run `mugv encode ...` first").
TrainResult train_dit(const TrainOptions& options, const nlohmann::json& config, const CancelToken& cancel,
                      const TrainCallbacks& callbacks = {});
// Continues run `name` from its last good checkpoint up to `steps` total (default: the run's own).
// Throws Error(not_found) when the run has no usable checkpoint, Error(invalid_argument) when it is
// already at or past `steps`.
TrainResult resume_dit(const std::string& name, const ResumeChanges& changes, const CancelToken& cancel,
                       const TrainCallbacks& callbacks = {});

}  // namespace mugv
