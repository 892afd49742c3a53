#pragma once
// The parallel-layout planner behind `mugv plan` and the studio's new-run dialog: for a model preset, a
// video size and a cluster, it enumerates tp × cp × dp × pp layouts with pipeline schedule, ZeRO stage,
// recompute and micro-batch, keeps those whose memory per GPU (memory_model.h, the stage needing most) fits,
// and ranks them by the step time of a cost model (compute at an efficiency that falls with narrow GEMMs, the
// pipeline's bubble, plus tensor-parallel, context-parallel, pipeline point-to-point and data-parallel
// communication). Predicted MFU counts model FLOPs only (docs/MUGV.md §6), so recompute and the bubble lower
// it. The model and its constants are written out in docs/PARALLEL.md. Torch-free; pure; thread-safe.
//
// Rules a layout obeys: tp divides the GPUs of a node (tensor parallel stays inside a node) and tp·cp
// divides the heads (Ulysses splits heads again); cp divides the video tokens; pp divides gpus / (tp·cp) and
// is at most the depth; dp = gpus / (tp·cp·pp); the global batch is a multiple of dp × micro-batch, and the
// quotient m is both the gradient accumulation and the pipeline's micro-batches per step. Schedules tried:
// 1F1B, and with pp > 1 the interleaved one with v = 2, 3 or 4 chunks per stage when v·pp chunks fit the
// depth and m is a multiple of pp (more chunks shrink the bubble and add point-to-point traffic and in-flight
// activations). A request may fix tp, cp or pp (PlanRequest), e.g. to price a given layout. Where keeping
// every block's activations does not fit but recomputing them all does, the fewest recomputed blocks that
// fit are tried too (partial recompute: fewer recomputed FLOPs). LoRA plans may swap the frozen blocks in
// from host memory (block swap), with the copies the compute cannot hide in the step time.

#include "model/config.h"
#include "parallel/layout.h"
#include "parallel/memory_model.h"
#include "parallel/pipeline.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct ClusterSpec {
  int gpus = 8;
  int gpus_per_node = 8;
  double gpu_memory_bytes = 80e9;
  double peak_flops = 989e12;             // dense bf16 per GPU (H100 SXM)
  double intra_node_bytes_per_s = 450e9;  // NVLink, per GPU, one direction
  double inter_node_bytes_per_s = 50e9;   // network, per GPU (one 400 Gb/s NIC each)
  double host_bytes_per_s = 50e9;         // host memory to GPU (PCIe 5.0 x16, one direction): block swap
};

struct PlanRequest {
  ClusterSpec cluster;
  int64_t frames = 0, height = 0, width = 0;
  int64_t global_batch = 0;  // samples per optimizer step; 0 = one per GPU
  int max_micro_batch = 8;   // micro-batches tried: 1, 2, 4, ... up to this, and this one
  // Precision, attention kernel, text encoder and overhead for every candidate; its video shape, micro-batch,
  // zero and recompute fields are ignored (the planner sets them).
  MemoryOptions memory;
  // Fraction of peak that large GEMMs and attention kernels reach; narrow or short GEMMs reach less.
  double max_efficiency = 0.65;
  // Only layouts with this many tensor-parallel ranks, context-parallel ranks or pipeline stages; 0: any.
  int tp = 0, cp = 0, pp = 0;
  // LoRA plans (memory.adapter_parameters >= 0) also try the frozen base's blocks swapped in from host
  // memory (model/block_offload.h) on layouts without tp, cp or pp. Always slower than the same layout
  // without it, so it comes first only where nothing else fits.
  bool allow_block_swap = true;
};

// What a candidate sets besides its layout.
struct StepChoice {
  int zero = 0;
  Recompute recompute = Recompute::none;
  int recompute_blocks = 0;  // partial recompute: `recompute` on the first N blocks of each stage; 0: all
  int micro_batch = 1;
  int virtual_stages = 1;       // the pipeline schedule's model chunks per stage (1: 1F1B)
  bool offload_blocks = false;  // LoRA: block swap of the frozen base (every block recomputed)
};

struct StepCost {
  double compute_s = 0;    // model FLOPs + recompute FLOPs at the layout's efficiency
  double recompute_s = 0;  // the part of compute_s spent re-running forwards
  double tp_comm_s = 0;    // tensor-parallel all-gathers / reduce-scatters (not overlapped)
  double cp_comm_s = 0;    // Ulysses all-to-alls (not overlapped)
  double dp_comm_s = 0;    // gradient reduction and ZeRO-1 parameter gather left after overlap
  double pp_bubble_s = 0;  // pipeline fill and drain: compute_s × (pp − 1) / (v · m)
  double pp_comm_s = 0;    // point-to-point sends and receives at the stage boundaries (not overlapped)
  double offload_s = 0;    // block swap: host-to-device copies of the frozen blocks not hidden behind compute
  double step_s = 0;
  double efficiency = 0;  // fraction of peak the compute runs at
  double mfu = 0;         // model FLOPs / (step_s × gpus × peak)
  // step_s = compute_s + pp_bubble_s + tp_comm_s + cp_comm_s + pp_comm_s + dp_comm_s + offload_s
  double samples_per_s = 0;
};

struct PlannedLayout {
  ParallelLayout layout;
  // The pipeline schedule (1F1B when layout.pp is 1) and its model chunks per stage (1 for 1F1B).
  PipelineSchedule schedule = PipelineSchedule::one_f_one_b;
  int virtual_stages = 1;
  int zero = 0;
  Recompute recompute = Recompute::none;
  int recompute_blocks = 0;     // partial recompute: the first N blocks of each stage; 0: all
  bool offload_blocks = false;  // LoRA: block swap of the frozen base
  int micro_batch = 1;
  int64_t grad_accumulation = 1;  // micro-batches per rank per step (the pipeline's m)
  MemoryBreakdown memory;         // the stage needing most (memory.stage says which)
  StepCost cost;
};

struct Plan {
  std::vector<PlannedLayout> fitting;     // fit in memory, fastest step first
  int64_t considered = 0;                 // candidates whose memory was estimated
  int64_t too_large = 0;                  // of those, how many do not fit
  std::optional<PlannedLayout> smallest;  // the candidate needing the least memory (set when considered > 0)
  int64_t video_tokens = 0;
  int64_t global_batch = 0;     // the one used (request's, or gpus when it was 0)
  double flops_per_sample = 0;  // model FLOPs of one sample, training
};

// Throws Error(invalid_argument) naming the value for: gpus < 1, gpus_per_node < 1, gpus above one node
// that are not a multiple of gpus_per_node, non-positive memory / peak / bandwidths, a global batch < 0,
// max_micro_batch < 1, and a bad video shape (validate_video_shape).
void validate_request(const ModelPreset& preset, const PlanRequest& request);

// The step time of one layout (its memory is not checked). Throws like validate_request, for a layout that
// breaks the rules above, for a pipeline validate_pipeline refuses, for interleaving (virtual_stages > 1)
// without pipeline stages, for recompute_blocks < 0, and for a block swap without adapters or with tp, cp
// or pp > 1.
[[nodiscard]] StepCost estimate_step(const ModelPreset& preset, const PlanRequest& request,
                                     const ParallelLayout& layout, const StepChoice& choice);
// The same for every block recomputed and no block swap.
[[nodiscard]] StepCost estimate_step(const ModelPreset& preset, const PlanRequest& request,
                                     const ParallelLayout& layout, int zero, Recompute recompute,
                                     int micro_batch, int virtual_stages = 1);

// "none", "selective", "full", "full, first 12 blocks of each stage", "full, block swap".
[[nodiscard]] std::string recompute_description(const PlannedLayout& planned);

// Every valid layout, estimated; `fitting` is empty when nothing fits (see no_fit_message).
[[nodiscard]] Plan plan_layouts(const ModelPreset& preset, const PlanRequest& request);

// "no layout of mugv-10b fits in 80 GB per GPU: the smallest needs 93.1 GB (tp8.cp8.dp1, ZeRO-1, full
// recompute, micro-batch 1); use more GPUs, GPUs with more memory, or a shorter or smaller video" (a pipeline
// layout also names its schedule, micro-batches and the stage).
[[nodiscard]] std::string no_fit_message(const ModelPreset& preset, const PlanRequest& request,
                                         const Plan& plan);

}  // namespace mugv
