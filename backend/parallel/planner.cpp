#include "parallel/planner.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/info.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <limits>

namespace mugv {

namespace {

// GEMMs narrower than this many columns, or shorter than this many rows, run at half their best efficiency
// (the knee of measured H100 bf16 GEMM throughput curves, as a smooth saturating fit).
constexpr double kWidthKnee = 128;
constexpr double kRowsKnee = 512;
// Fraction of a micro-batch's backward (forward, for the ZeRO-1 parameter gather) that communication can
// hide behind: NCCL kernels take SMs from the compute they overlap with.
constexpr double kOverlap = 0.8;
constexpr double kCollectiveLatencyS = 15e-6;
// Model chunks per stage the interleaved schedule is tried with (Megatron's usual choice).
constexpr int kMaxInterleavedChunks = 4;  // chunks per stage the interleaved schedule is tried with

[[noreturn]] void bad(const std::string& subject, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, subject, message);
}

int64_t effective_global_batch(const PlanRequest& r) {
  return r.global_batch > 0 ? r.global_batch : r.cluster.gpus;
}

struct Workload {
  ModelInfo info;
  int64_t sequence = 0;        // video tokens + start / end
  double model_flops = 0;      // per sample, forward + backward
  double recompute_flops = 0;  // per sample, extra forward work of the recompute mode
};

// `recomputed_share`: the fraction of the blocks that `recompute` applies to (partial recompute).
Workload workload(const ModelPreset& p, const PlanRequest& r, Recompute recompute,
                  double recomputed_share = 1) {
  Workload w;
  w.info = describe(p, r.frames, r.height, r.width);
  w.sequence = w.info.video_tokens + 2;
  const double tokens = double(w.info.video_tokens);
  const double text_tokens = double(p.dit.text_tokens);
  w.model_flops = w.info.flops_per_sample;
  const bool adapters = r.memory.adapter_parameters >= 0;
  if (adapters) {
    // LoRA: the frozen linears skip their weight-gradient GEMMs (2 of every 6 FLOPs per parameter and token);
    // the adapters cost 6 per parameter and token; a frozen text encoder runs forward only.
    w.model_flops +=
        (6.0 * double(r.memory.adapter_parameters) - 2.0 * double(dit_parameter_count(p.dit))) * tokens;
    if (r.memory.text_encoder == TextEncoderUse::trained)
      w.model_flops += 2.0 * double(text_encoder_parameter_count(p.text)) * text_tokens;
  } else if (r.memory.text_encoder == TextEncoderUse::trained) {
    w.model_flops += 6.0 * double(text_encoder_parameter_count(p.text)) * text_tokens;
  }
  const double d = p.dit.hidden, depth = p.dit.depth;
  if (recompute == Recompute::selective) {
    // The self-attention core (QKᵀ and PV), forward only: what model/dit.cpp recomputes.
    const double per_token_block = 4.0 * d * double(w.sequence);
    w.recompute_flops = per_token_block * depth * tokens * recomputed_share;
  } else if (recompute == Recompute::full) {
    w.recompute_flops = w.info.flops_per_sample / 3.0 * recomputed_share;  // one more forward of the DiT
  }
  return w;
}

// The blocks of the stage holding most (all of them without a pipeline).
int most_stage_blocks(const PipelineShape& shape) {
  int most = 0;
  for (int stage = 0; stage < shape.stages; ++stage) most = std::max(most, stage_block_count(shape, stage));
  return most;
}

bool divides(int64_t a, int64_t b) {
  return a > 0 && b % a == 0;
}

void check_layout(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& l, int64_t video_tokens) {
  const int node = std::min(r.cluster.gpus_per_node, r.cluster.gpus);
  validate_layout(l, r.cluster.gpus, p.dit.heads, p.dit.depth);
  if (!divides(l.tp, node))
    bad(to_string(l),
        cat("tp ", l.tp, " does not divide the ", node, " GPUs of a node (tensor parallel stays in a node)"));
  if (video_tokens % l.cp != 0)
    bad(to_string(l), cat(video_tokens, " video tokens cannot be split evenly over cp = ", l.cp, " ranks"));
}

// The pipeline's busiest stage: the most blocks and the most trainable parameters any stage holds (stage 0
// adds the embedders and the text encoder, the last the final layer).
struct StageLoad {
  int blocks = 0;
  int64_t parameters = 0;
};

StageLoad busiest_stage(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& l,
                        const PipelineShape& shape) {
  StageLoad most;
  for (int stage = 0; stage < shape.stages; ++stage) {
    const int blocks = stage_block_count(shape, stage);
    // LoRA: only the adapters are reduced, and they sit in the blocks.
    const int64_t parameters = r.memory.adapter_parameters >= 0
                                   ? r.memory.adapter_parameters * blocks / p.dit.depth
                                   : parameters_per_stage(p, l.tp, r.memory.text_encoder, shape, stage);
    most.blocks = std::max(most.blocks, blocks);
    most.parameters = std::max(most.parameters, parameters);
  }
  return most;
}

// Pipeline neighbours are tp·cp·dp ranks apart (Megatron's tp-cp-dp-pp order). Every stage waits for its
// neighbours, so the pipeline moves at the pace of its slowest boundary: one pair of neighbours on different
// nodes puts every transfer at the inter-node bandwidth.
bool pipeline_crosses_nodes(const ParallelLayout& l, int gpus_per_node) {
  const int stride = l.tp * l.cp * l.dp;
  for (int rank = 0; rank + stride < l.world(); ++rank)
    if (rank / gpus_per_node != (rank + stride) / gpus_per_node) return true;
  return false;
}

// Chunks per stage of the schedules tried: 1F1B (1), and with pipeline stages the interleaved schedule with
// 2..kMaxInterleavedChunks chunks when they fit the depth and the micro-batches are a multiple of the stages.
std::vector<int> virtual_stage_choices(int pp, int depth, int64_t micro_batches) {
  std::vector<int> choices{1};
  if (pp > 1 && micro_batches % pp == 0)
    for (int v = 2; v <= kMaxInterleavedChunks && pp * v <= depth; ++v) choices.push_back(v);
  return choices;
}

std::string gb(double bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f GB", bytes / 1e9);
  return buffer;
}

}  // namespace

void validate_request(const ModelPreset& preset, const PlanRequest& r) {
  const auto& c = r.cluster;
  if (c.gpus < 1) bad("gpus", cat("the GPU count must be at least 1, got ", c.gpus));
  if (c.gpus_per_node < 1)
    bad("gpus-per-node", cat("GPUs per node must be at least 1, got ", c.gpus_per_node));
  if (c.gpus > c.gpus_per_node && c.gpus % c.gpus_per_node != 0)
    bad("gpus", cat(c.gpus, " GPUs are not a multiple of ", c.gpus_per_node, " GPUs per node"));
  if (!(c.gpu_memory_bytes > 0))
    bad("gpu-mem-gb", cat("GPU memory must be positive, got ", c.gpu_memory_bytes));
  if (!(c.peak_flops > 0)) bad("peak-tflops", cat("peak FLOP/s must be positive, got ", c.peak_flops));
  if (!(c.intra_node_bytes_per_s > 0))
    bad("intra-node-gbps", cat("bandwidth must be positive, got ", c.intra_node_bytes_per_s));
  if (!(c.inter_node_bytes_per_s > 0))
    bad("inter-node-gbps", cat("bandwidth must be positive, got ", c.inter_node_bytes_per_s));
  if (r.global_batch < 0)
    bad("global-batch", cat("the global batch must not be negative, got ", r.global_batch));
  // Micro-batch counts are ints in the schedules; a batch beyond that is no training run.
  if (r.global_batch > std::numeric_limits<int32_t>::max())
    bad("global-batch",
        cat("the global batch ", r.global_batch, " is beyond any schedule (at most 2^31 - 1)"));
  if (r.max_micro_batch < 1)
    bad("max-micro-batch", cat("the largest micro-batch must be at least 1, got ", r.max_micro_batch));
  if (!(r.max_efficiency > 0 && r.max_efficiency <= 1))
    bad("max-efficiency", cat("efficiency must be in (0, 1], got ", r.max_efficiency));
  for (const auto& [name, value] : {std::pair<const char*, int>{"tp", r.tp}, {"cp", r.cp}, {"pp", r.pp}})
    if (value < 0) bad(name, cat("--", name, " must be 0 (any) or a rank count, got ", value));
  validate_video_shape(preset, r.frames, r.height, r.width);
}

StepCost estimate_step(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& l, int zero,
                       Recompute recompute, int micro_batch, int virtual_stages) {
  StepChoice choice;
  choice.zero = zero;
  choice.recompute = recompute;
  choice.micro_batch = micro_batch;
  choice.virtual_stages = virtual_stages;
  return estimate_step(p, r, l, choice);
}

StepCost estimate_step(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& l,
                       const StepChoice& choice) {
  const int zero = choice.zero, micro_batch = choice.micro_batch, virtual_stages = choice.virtual_stages;
  // A block swap recomputes every block (model/block_offload.h).
  const Recompute recompute = choice.offload_blocks ? Recompute::full : choice.recompute;
  validate_request(p, r);
  if (micro_batch < 1) bad("micro-batch", cat("micro-batch must be at least 1, got ", micro_batch));
  if (zero != 0 && zero != 1) bad("zero", cat("ZeRO stage must be 0 or 1, got ", zero));
  if (recompute == Recompute::unknown) bad("recompute", "recompute must be none, selective or full");
  if (choice.recompute_blocks < 0)
    bad("recompute-blocks", cat("recomputed blocks must be 0 (all) or more, got ", choice.recompute_blocks));
  if (choice.offload_blocks && r.memory.adapter_parameters < 0)
    bad("offload", "block swap keeps a frozen base in host memory: it needs LoRA adapters");
  if (choice.offload_blocks && l.tp * l.cp * l.pp > 1)
    bad(to_string(l), "block swap runs the whole DiT in each process (tp = cp = pp = 1)");
  const PipelineShape shape{p.dit.depth, l.pp, virtual_stages};
  validate_pipeline(shape);
  const int most_blocks = most_stage_blocks(shape);
  MemoryOptions recomputing = r.memory;
  recomputing.recompute = recompute;
  recomputing.recompute_blocks = choice.offload_blocks ? 0 : choice.recompute_blocks;
  // The busiest stage recomputes this many of its blocks; every stage recomputes the same share.
  const int recomputed = recomputed_blocks(recomputing, most_blocks);
  const Workload w = workload(p, r, recompute, double(recomputed) / double(most_blocks));
  check_layout(p, r, l, w.info.video_tokens);
  const auto& c = r.cluster;
  const int64_t batch = effective_global_batch(r);
  if (batch % (int64_t(l.dp) * micro_batch) != 0)
    bad("global-batch",
        cat("global batch ", batch, " is not a multiple of dp ", l.dp, " x micro-batch ", micro_batch));
  // Micro-batches per step on each replica: the gradient accumulation, and the pipeline's m.
  const int64_t micro_batches = batch / (int64_t(l.dp) * micro_batch);
  const double accumulation = double(micro_batches);
  const int m = int(std::min<int64_t>(micro_batches, INT_MAX));
  if (virtual_stages > 1 && l.pp == 1)
    bad("pp-virtual", cat("the interleaved schedule (", virtual_stages,
                          " chunks per stage) needs pipeline stages (pp > 1)"));
  validate_pipeline(shape, m);
  const StageLoad stage = busiest_stage(p, r, l, shape);

  StepCost s;
  const double d = p.dit.hidden, depth = p.dit.depth;
  // The share of the model's work the busiest stage does (1 without a pipeline): every stage waits for it.
  const double stage_share = double(stage.blocks) / depth;
  const double width = d / l.tp;
  const double rows = double(micro_batch) * double(w.info.video_tokens) / l.cp;
  s.efficiency = r.max_efficiency * (width / (width + kWidthKnee)) * (rows / (rows + kRowsKnee));
  const double rate = c.peak_flops * s.efficiency;
  const double per_gpu = double(batch) / double(c.gpus);
  // Each GPU runs its stage's blocks for its replica's samples: per_gpu samples' worth of work when the
  // stages are even, scaled by the busiest stage's excess.
  const double imbalance = stage_share * l.pp;
  s.compute_s = (w.model_flops + w.recompute_flops) * per_gpu / rate * imbalance;
  s.recompute_s = w.recompute_flops * per_gpu / rate * imbalance;
  // Fill and drain: a stage idles for the bubble fraction f of the step, i.e. f / (1 − f) of its busy time,
  // which is compute × (p − 1) / (v · m).
  const double bubble = pipeline_bubble_fraction(shape, m);
  s.pp_bubble_s = s.compute_s * bubble / (1.0 - bubble);

  const int a = r.memory.precision.activation_bytes;
  const double local_tokens = double(micro_batch) * double(w.sequence) / l.cp;
  const bool full = recompute == Recompute::full;
  const double blocks = stage.blocks;  // the blocks of the busiest stage (all of them without a pipeline)
  const double full_blocks = full ? recomputed : 0.0;  // blocks whose forward runs again in backward
  if (l.tp > 1) {
    // Sequence parallel: an all-gather before and a reduce-scatter after each of the block's three sublayers
    // (self-attention, cross-attention, MLP), forward and backward: 6 all-reduce volumes per block, 9 with a
    // recomputed forward.
    const double collectives = blocks * 6.0 + full_blocks * 3.0;
    const double volume = local_tokens * d * a;
    const double per = 2.0 * (l.tp - 1) / l.tp * volume / c.intra_node_bytes_per_s + 2 * kCollectiveLatencyS;
    s.tp_comm_s = collectives * per * accumulation;
  }
  if (l.cp > 1) {
    // Ulysses: q, k, v to head-split layout and the output back, forward (3 + 1 tensors) and backward (1 +
    // 3); a recomputed forward adds 4. Cross-attention needs none: every rank holds the whole text.
    const double tensors = blocks * 8.0 + full_blocks * 4.0;
    const double volume = local_tokens * (d / l.tp) * a;
    const double bandwidth = l.tp * l.cp <= std::min(c.gpus_per_node, c.gpus) ? c.intra_node_bytes_per_s
                                                                              : c.inter_node_bytes_per_s;
    const double per = double(l.cp - 1) / l.cp * volume / bandwidth + kCollectiveLatencyS;
    s.cp_comm_s = tensors * per * accumulation;
  }
  if (l.pp > 1) {
    // Per micro-batch and chunk, a stage's activations go forward across one boundary and their gradients
    // come back across it (the interleaved schedule crosses v times as many boundaries).
    const double bytes = micro_batch * pipeline_boundary_bytes_per_sample(p.dit, w.info.video_tokens,
                                                                          w.info.latent_frames, l, a);
    const double bandwidth = pipeline_crosses_nodes(l, std::min(c.gpus_per_node, c.gpus))
                                 ? c.inter_node_bytes_per_s
                                 : c.intra_node_bytes_per_s;
    s.pp_comm_s = accumulation * virtual_stages * 2.0 * (bytes / bandwidth + kCollectiveLatencyS);
  }
  const int reducers =
      l.dp * l.cp;  // parameters are replicated over dp and cp, so gradients are reduced over both
  if (reducers > 1) {
    const double n = double(stage.parameters);  // adapters only with LoRA
    // A data-parallel group spans the tp·cp·dp ranks of one stage (all of them without a pipeline).
    const double bandwidth = l.tp * l.cp * l.dp > std::min(c.gpus_per_node, c.gpus)
                                 ? c.inter_node_bytes_per_s
                                 : c.intra_node_bytes_per_s;
    const double share = double(reducers - 1) / reducers;
    const double grads = n * r.memory.precision.grad_bytes, params = n * r.memory.precision.param_bytes;
    // ZeRO-0: all-reduce (2× volume). ZeRO-1: reduce-scatter of gradients, then all-gather of updated
    // weights.
    const double reduce_s = (zero == 1 ? 1.0 : 2.0) * share * grads / bandwidth;
    const double gather_s = zero == 1 ? share * params / bandwidth : 0.0;
    // The reduction overlaps the last micro-batch's backward, the gather the first micro-batch's forward (of
    // the stage's blocks).
    const double micro_model_s = w.model_flops * micro_batch / double(l.tp * l.cp) / rate * stage_share;
    s.dp_comm_s = std::max(0.0, reduce_s - kOverlap * micro_model_s * 2.0 / 3.0) +
                  std::max(0.0, gather_s - kOverlap * micro_model_s / 3.0);
  }
  if (choice.offload_blocks) {
    // Each block's frozen weights cross from host memory twice per micro-batch (forward, and the
    // recomputation in backward); block i+1's copy overlaps block i's compute, so a block takes the longer
    // of its compute and its copy.
    const int frozen_bytes =
        r.memory.frozen_param_bytes > 0 ? r.memory.frozen_param_bytes : r.memory.precision.param_bytes;
    const double copy_s = double(dit_block_parameter_count(p.dit)) * frozen_bytes / c.host_bytes_per_s;
    const double micro_s = s.compute_s / accumulation;  // one micro-batch's forward, recompute and backward
    const double forward_s = w.info.flops_per_sample / 3.0 * micro_batch / rate / depth;
    const double backward_s = micro_s / depth - forward_s;
    s.offload_s =
        accumulation * depth * (std::max(0.0, copy_s - forward_s) + std::max(0.0, copy_s - backward_s));
  }
  s.step_s =
      s.compute_s + s.pp_bubble_s + s.tp_comm_s + s.cp_comm_s + s.pp_comm_s + s.dp_comm_s + s.offload_s;
  s.mfu = w.model_flops * double(batch) / (s.step_s * c.gpus * c.peak_flops);
  s.samples_per_s = double(batch) / s.step_s;
  return s;
}

namespace {

// The layouts the rules allow, in the order tp, cp, pp (dp takes the rest).
std::vector<ParallelLayout> candidate_layouts(const ModelPreset& p, const PlanRequest& r,
                                              int64_t video_tokens) {
  const int gpus = r.cluster.gpus;
  const int node = std::min(r.cluster.gpus_per_node, gpus);
  const int heads = p.dit.heads;
  std::vector<ParallelLayout> layouts;
  auto allowed = [](int fixed, int value) { return fixed == 0 || fixed == value; };
  for (int tp = 1; tp <= node; ++tp) {
    if (node % tp != 0 || heads % tp != 0 || !allowed(r.tp, tp)) continue;
    if (tp > 1 && r.memory.adapter_parameters >= 0) break;  // adapters train with tp = 1 (model/lora.h)
    for (int cp = 1; tp * cp <= gpus; ++cp) {
      if (gpus % (tp * cp) != 0 || heads % (tp * cp) != 0 || video_tokens % cp != 0 || !allowed(r.cp, cp))
        continue;
      const int replicas = gpus / (tp * cp);  // dp × pp
      for (int pp = 1; pp <= replicas && pp <= p.dit.depth; ++pp)
        if (replicas % pp == 0 && allowed(r.pp, pp)) layouts.push_back({tp, cp, replicas / pp, pp});
    }
  }
  return layouts;
}

// The memory model's options for one candidate of the request.
MemoryOptions memory_options(const PlanRequest& r, const ParallelLayout& layout, const StepChoice& choice,
                             int64_t global_batch) {
  MemoryOptions o = r.memory;
  o.frames = r.frames;
  o.height = r.height;
  o.width = r.width;
  o.micro_batch = choice.micro_batch;
  o.zero = choice.zero;
  o.recompute = choice.offload_blocks ? Recompute::full : choice.recompute;
  o.recompute_blocks = choice.recompute_blocks;
  o.offload_blocks = choice.offload_blocks;
  o.pp_virtual_stages = choice.virtual_stages;
  o.pp_micro_batches =
      int(std::min<int64_t>(global_batch / (int64_t(layout.dp) * choice.micro_batch), INT_MAX));
  return o;
}

// Estimates one candidate's memory and counts it; keeps it, with its step time, when it fits. Returns
// whether it fits.
bool consider(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& layout,
              const StepChoice& choice, Plan& plan) {
  PlannedLayout candidate;
  candidate.layout = layout;
  candidate.virtual_stages = choice.virtual_stages;
  candidate.schedule =
      choice.virtual_stages > 1 ? PipelineSchedule::interleaved : PipelineSchedule::one_f_one_b;
  candidate.zero = choice.zero;
  candidate.recompute = choice.offload_blocks ? Recompute::full : choice.recompute;
  candidate.recompute_blocks = choice.recompute_blocks;
  candidate.offload_blocks = choice.offload_blocks;
  candidate.micro_batch = choice.micro_batch;
  candidate.grad_accumulation = plan.global_batch / (int64_t(layout.dp) * choice.micro_batch);
  candidate.memory = estimate_memory(p, layout, memory_options(r, layout, choice, plan.global_batch));
  ++plan.considered;
  if (!plan.smallest || candidate.memory.total() < plan.smallest->memory.total()) plan.smallest = candidate;
  if (double(candidate.memory.total()) > r.cluster.gpu_memory_bytes) {
    ++plan.too_large;
    return false;
  }
  candidate.cost = estimate_step(p, r, layout, choice);
  plan.fitting.push_back(candidate);
  return true;
}

// Partial recompute: when keeping every block's activations does not fit but recomputing all of them does,
// the fewest recomputed blocks per stage that fit (memory falls with each recomputed block), by bisection.
void consider_partial_recompute(const ModelPreset& p, const PlanRequest& r, const ParallelLayout& layout,
                                StepChoice choice, Plan& plan) {
  const int blocks = most_stage_blocks(PipelineShape{p.dit.depth, layout.pp, choice.virtual_stages});
  choice.recompute = Recompute::full;
  MemoryOptions o = memory_options(r, layout, choice, plan.global_batch);
  auto fits = [&](int recomputed) {
    o.recompute_blocks = recomputed;
    return double(estimate_memory(p, layout, o).total()) <= r.cluster.gpu_memory_bytes;
  };
  int low = 1, high = blocks - 1;  // the answer, if any, lies in [low, high]
  if (high < low || !fits(high)) return;
  while (low < high) {
    const int mid = low + (high - low) / 2;
    if (fits(mid))
      high = mid;
    else
      low = mid + 1;
  }
  choice.recompute_blocks = low;
  consider(p, r, layout, choice, plan);
}

}  // namespace

Plan plan_layouts(const ModelPreset& p, const PlanRequest& r) {
  validate_request(p, r);
  Plan plan;
  const ModelInfo info = describe(p, r.frames, r.height, r.width);
  plan.video_tokens = info.video_tokens;
  plan.global_batch = effective_global_batch(r);
  plan.flops_per_sample = workload(p, r, Recompute::none).model_flops;
  // Powers of two, and the largest allowed itself (so a measured run's batch of 3 or 6 can be matched).
  std::vector<int> micro_batches;
  for (int mbs = 1; mbs <= r.max_micro_batch; mbs *= 2) micro_batches.push_back(mbs);
  if (micro_batches.back() != r.max_micro_batch) micro_batches.push_back(r.max_micro_batch);

  const bool adapters = r.memory.adapter_parameters >= 0;
  for (const ParallelLayout& layout : candidate_layouts(p, r, info.video_tokens)) {
    const bool whole_model = layout.tp * layout.cp * layout.pp == 1;
    for (bool offload : {false, true}) {
      if (offload && !(adapters && r.allow_block_swap && whole_model)) continue;
      for (int zero : {0, 1}) {
        if (zero == 1 && layout.dp == 1) continue;  // nothing to shard
        for (int mbs : micro_batches) {
          if (plan.global_batch % (int64_t(layout.dp) * mbs) != 0) continue;
          const int64_t accumulation = plan.global_batch / (int64_t(layout.dp) * mbs);
          for (int virtual_stages : virtual_stage_choices(layout.pp, p.dit.depth, accumulation)) {
            StepChoice choice;
            choice.zero = zero;
            choice.micro_batch = mbs;
            choice.virtual_stages = virtual_stages;
            choice.offload_blocks = offload;
            if (offload) {  // every block is recomputed under a block swap
              choice.recompute = Recompute::full;
              consider(p, r, layout, choice, plan);
              continue;
            }
            bool kept_fits = false, recomputed_fits = false;
            for (Recompute recompute : {Recompute::none, Recompute::selective, Recompute::full}) {
              choice.recompute = recompute;
              const bool fits = consider(p, r, layout, choice, plan);
              if (recompute == Recompute::none) kept_fits = fits;
              if (recompute == Recompute::full) recomputed_fits = fits;
            }
            if (!kept_fits && recomputed_fits) consider_partial_recompute(p, r, layout, choice, plan);
          }
        }
      }
    }
  }
  std::stable_sort(plan.fitting.begin(), plan.fitting.end(),
                   [](const PlannedLayout& a, const PlannedLayout& b) {
                     if (a.cost.step_s != b.cost.step_s) return a.cost.step_s < b.cost.step_s;
                     return a.memory.total() < b.memory.total();
                   });
  return plan;
}

std::string recompute_description(const PlannedLayout& planned) {
  if (planned.offload_blocks) return "full, block swap";
  if (planned.recompute_blocks > 0 && planned.recompute != Recompute::none)
    return cat(to_string(planned.recompute), ", first ", planned.recompute_blocks, " blocks of each stage");
  return to_string(planned.recompute);
}

std::string no_fit_message(const ModelPreset& p, const PlanRequest& r, const Plan& plan) {
  const std::string where =
      cat("no layout of ", p.name, " fits in ", gb(r.cluster.gpu_memory_bytes), " per GPU");
  if (!plan.smallest && (r.tp || r.cp || r.pp)) {
    std::string fixed;
    for (const auto& [name, value] : {std::pair<const char*, int>{"tp", r.tp}, {"cp", r.cp}, {"pp", r.pp}})
      if (value) fixed += cat(fixed.empty() ? "" : ", ", name, " ", value);
    return cat(where, ": no layout of ", r.cluster.gpus, " GPUs (", r.cluster.gpus_per_node,
               " per node) has ", fixed, " (tp divides a node's GPUs and tp x cp the ", p.dit.heads,
               " heads; cp divides the video tokens; pp divides gpus / (tp x cp) and is at most the depth ",
               p.dit.depth, ")");
  }
  if (!plan.smallest)
    return cat(where, ": the global batch ", plan.global_batch,
               " cannot be split over any data-parallel size of ", r.cluster.gpus,
               " GPUs; use a multiple of the GPU count");
  const auto& s = *plan.smallest;
  const std::string pipeline =
      s.layout.pp > 1 ? cat(", ", to_string(s.schedule), " over ", s.grad_accumulation, " micro-batches")
                      : "";
  const std::string stage = s.layout.pp > 1 ? cat(" on stage ", s.memory.stage) : "";
  return cat(where, ": the smallest needs ", gb(double(s.memory.total())), " (", to_string(s.layout),
             pipeline, ", ZeRO-", s.zero, ", ", recompute_description(s), " recompute, micro-batch ",
             s.micro_batch, "; activations ", gb(double(s.memory.activations)), stage,
             "); use more GPUs, GPUs with more memory, or a shorter or smaller video");
}

}  // namespace mugv
