#pragma once
// Memory one training rank needs for a MUG-V DiT under a parallel layout, computed from the preset's shapes
// alone (torch-free, nothing allocated): parameters, gradients, optimizer state, activations and a fixed
// runtime overhead, in bytes. The trainer calls estimate_memory() as its preflight; the planner (planner.h)
// calls it for every candidate layout. The formula, term by term, is in docs/PARALLEL.md.
//
// What is counted:
//   - The DiT is trained; the VAE never is (latents are pre-computed, docs/MUGV.md §6). The text encoder is
//     either pre-computed (T5 at scale) or trained with the DiT (the small presets, as `mugv train` does).
//   - Tensor parallel splits the blocks' weight matrices (and column-parallel biases) over tp; embedders,
//     norms and tables stay replicated. Context parallel replicates parameters. ZeRO-1 shards the optimizer
//     state (master weights, Adam moments, EMA) over the dp ranks (layout.h).
//   - Activations follow the block's forward (backend/model/dit.cpp) tensor by tensor; with sequence
//     parallel they are split over tp, and Ulysses context parallel splits them over cp, so a rank holds
//     1/(tp·cp) of every per-token activation. Recompute decides which of them stay alive until backward.
//   - Pipeline stages (layout.pp > 1, parallel/pipeline.h) split the blocks: a rank holds its stage's blocks
//     (stage 0 also everything before the blocks and the text encoder, the last chunk's stage the final
//     layer) with their gradients and optimizer state, the activations of as many micro-batches as its
//     schedule keeps in flight, and the buffers of the boundaries it sends and receives across. Stages
//     differ, so estimate_stage_memory gives one stage and estimate_memory the stage needing most.
// Pure functions; thread-safe.

#include "model/config.h"
#include "parallel/layout.h"
#include "parallel/pipeline.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// Where training runs: decides dtypes, the attention kernel and the runtime overhead
// (MemoryOptions::for_device).
enum class TrainDevice { unknown = 0, gpu, cpu };
const char* to_string(TrainDevice device);
std::optional<TrainDevice> train_device_from_string(std::string_view name);

// Which activations a block keeps for backward.
//   none       every saved tensor of the forward
//   selective  drops the attention scores/probabilities and the MLP intermediates (fc1 output, GELU output);
//              backward re-runs the attention core and fc1 + GELU
//   full       keeps only each block's input; backward re-runs the whole block forward

// fused: a flash-style kernel keeps only the output and the softmax statistics (CUDA SDPA);
// math: scores and probabilities are materialised and saved (the reference path, and the safe CPU
// assumption).
enum class AttentionKernel { unknown = 0, fused, math };
const char* to_string(AttentionKernel kernel);
std::optional<AttentionKernel> attention_kernel_from_string(std::string_view name);

enum class TextEncoderUse { unknown = 0, precomputed, trained };
const char* to_string(TextEncoderUse use);

// Bytes per element of each kind of training state. 0 means "not kept".
struct Precision {
  int param_bytes = 2;       // the weights the forward reads
  int grad_bytes = 2;        // gradients
  int master_bytes = 4;      // fp32 master weights when param_bytes < 4; 0 when the weights are fp32
  int moment_bytes = 4;      // each of Adam's m and v
  int ema_bytes = 4;         // the EMA copy of the weights (`mugv train` keeps one); 0 = none
  int activation_bytes = 2;  // saved activations (bf16 autocast on GPU); a few tensors are fp32 regardless
  int optimizer_bytes() const { return master_bytes + 2 * moment_bytes + ema_bytes; }
};
// bf16 weights, gradients and activations; fp32 master weights, Adam moments and EMA.
Precision bf16_mixed_precision();
// fp32 everything (CPU training): weights, gradients, Adam moments and EMA; no master copy.
Precision fp32_precision();

struct MemoryOptions {
  Precision precision;
  // The video each sample is; frames must suit the VAE (frames mod compress_t == 0 or 1) and height / width
  // must be multiples of the VAE compression times the DiT patch (whole tokens on every rank).
  int64_t frames = 0;
  int64_t height = 0;
  int64_t width = 0;
  int micro_batch = 1;  // samples per forward/backward on one rank
  int zero = 0;         // 0: replicated optimizer state; 1: sharded over dp (ZeRO-1)
  Recompute recompute = Recompute::none;
  // Partial recomputation: `recompute` applies to the first recompute_blocks blocks of each pipeline stage
  // (Megatron's block method) and the others keep their activations; 0 = every block.
  int recompute_blocks = 0;
  AttentionKernel attention = AttentionKernel::fused;
  // The fused norm operations (model/fused_ops.h: LayerNorm + adaLN modulation, q/k RMSNorm + RoPE) run, so
  // autograd keeps no normalised copies of the blocks' inputs, queries and keys; false: the unfused ops
  // (MUGV_FUSED_KERNELS=0, or a CUDA build without the kernels).
  bool fused_norms = true;
  TextEncoderUse text_encoder = TextEncoderUse::precomputed;
  int64_t overhead_bytes = 0;  // runtime: CUDA context, communicator buffers, allocator slack / libraries
  // LoRA (model/lora_spec.h): the adapters' parameter count when only they train on a frozen base (whose
  // weights, text encoder included, are kept at frozen_param_bytes each and get no gradients or optimizer
  // state); -1 = every parameter trains. Adapters need tp = 1.
  int64_t adapter_parameters = -1;
  int frozen_param_bytes = 0;  // 0: param_bytes
  // LoRA only: the frozen base's blocks wait in host memory and the device holds two of them at a time
  // (model/block_offload.h); every block is then recomputed in backward, whatever `recompute` says. The
  // whole DiT runs in each process: tp = cp = pp = 1.
  bool offload_blocks = false;
  // Pipeline stages (used only when layout.pp > 1): the schedule's model chunks per stage (1: 1F1B; v > 1:
  // the interleaved schedule with v chunks per stage) and the micro-batches of one step on each data-parallel
  // replica (the pipeline's m, gradient accumulation; 0: 2·pp, the trainer's default for --micro-batches).
  int pp_virtual_stages = 1;
  int pp_micro_batches = 0;

  // Defaults for a device: gpu = bf16 mixed, fused attention, 3 GiB overhead; cpu = fp32, math attention,
  // 300 MiB overhead (the trainer's own allowance). The text encoder is trained for small_transformer presets
  // and pre-computed for T5 (set it after this call to override). Video shape, micro-batch, ZeRO and
  // recompute are left for the caller.
  static MemoryOptions for_device(TrainDevice device, const ModelPreset& preset);
};

struct MemoryBreakdown {
  int64_t parameters = 0;
  int64_t gradients = 0;
  int64_t optimizer = 0;  // master weights + Adam m, v + EMA (after ZeRO sharding)
  int64_t activations = 0;
  int64_t overhead = 0;
  int stage = 0;  // the pipeline stage these bytes are for (estimate_memory: the stage needing most)
  int64_t total() const { return parameters + gradients + optimizer + activations + overhead; }
};

// Trainable parameters one rank holds (before ZeRO): the DiT's replicated part plus its tensor-parallel part
// divided by tp, plus the text encoder when it is trained. The whole model: one pipeline stage.
[[nodiscard]] int64_t parameters_per_rank(const ModelPreset& preset, int tp, TextEncoderUse text_encoder);
// Trainable parameters a rank of pipeline stage `stage` holds (before ZeRO): its blocks (their
// tensor-parallel part divided by tp); on stage 0 everything before the blocks and the text encoder when it
// is trained; on the stage of the last chunk the final layer. Throws Error(invalid_argument) naming the value
// for tp < 1, a shape validate_pipeline refuses, or a stage outside 0 … stages − 1.
[[nodiscard]] int64_t parameters_per_stage(const ModelPreset& preset, int tp, TextEncoderUse text_encoder,
                                           const PipelineShape& shape, int stage);
// The DiT parameters that tensor parallel splits (block weight matrices and column-parallel biases).
[[nodiscard]] int64_t dit_tensor_parallel_parameters(const DiTConfig& config);

// One saved tensor of a block's forward, per video token. `elements` counts values of the activation dtype,
// `fp32_elements` values kept in fp32 whatever the autocast dtype (RMSNorm upcasts, softmax statistics).
enum class ActivationKind { unknown = 0, block_input, kept, attention_scores, mlp_intermediate };
struct ActivationTerm {
  std::string name;
  ActivationKind kind = ActivationKind::unknown;
  double elements = 0;
  double fp32_elements = 0;
};
// The per-token terms of one block for a sequence of `sequence` tokens (video + start/end) attending to
// `text_tokens` text tokens, with `options`' attention kernel and fused norms; no parallelism applied. Sums
// of these give the numbers in docs/PARALLEL.md.
[[nodiscard]] std::vector<ActivationTerm> block_activation_terms(const DiTConfig& config, int64_t sequence,
                                                                 int64_t text_tokens,
                                                                 const MemoryOptions& options);
// The blocks of a stage of `blocks` that `options` recomputes (0 … blocks): none without recompute, all
// with a block swap, else recompute_blocks (0: all) capped at `blocks`.
[[nodiscard]] int recomputed_blocks(const MemoryOptions& options, int blocks);
// Bytes one block keeps per token until backward under `recompute` (no parallelism applied).
[[nodiscard]] double block_activation_bytes_per_token(const DiTConfig& config, int64_t sequence,
                                                      int64_t text_tokens, const MemoryOptions& options);

// Bytes one rank sends (or receives) across a pipeline stage boundary per sample of a micro-batch, and again
// for their gradients in backward: its share of the tokens [N / (tp·cp), d] and the conditioning that travels
// with them whole — the blocks' adaLN modulation [T' + 2, 6, d], the projected caption [text tokens, d] and
// the final layer's conditioning [T', d] (T' = latent frames / patch_t, N = video tokens + 2).
[[nodiscard]] double pipeline_boundary_bytes_per_sample(const DiTConfig& config, int64_t video_tokens,
                                                        int64_t latent_frames, const ParallelLayout& layout,
                                                        int activation_bytes);

// Checks the video shape against the preset (frames for the VAE, height / width for the VAE and the patch).
// Throws Error(invalid_argument) naming the value: "height 712 is not a multiple of 16 (VAE 8 x patch 2)".
void validate_video_shape(const ModelPreset& preset, int64_t frames, int64_t height, int64_t width);

// The memory one rank of pipeline stage `stage` of `layout` needs (stage 0 when pp = 1). Throws
// Error(invalid_argument) naming the value for a bad video shape, micro-batch < 1, zero not 0 or 1, recompute
// / attention / text encoder unknown, a layout whose tp·cp does not divide the heads or whose cp does not
// divide the video tokens, adapters with tp > 1, a block swap without adapters or with tp, cp or pp > 1,
// recompute_blocks < 0, pipeline micro-batches < 0, a pipeline validate_pipeline
// refuses (more chunks than blocks; interleaved micro-batches not a multiple of pp), or a stage outside
// 0 … pp − 1.
[[nodiscard]] MemoryBreakdown estimate_stage_memory(const ModelPreset& preset, const ParallelLayout& layout,
                                                    const MemoryOptions& options, int stage);
// The memory of the rank needing most: the largest estimate_stage_memory over the stages (the first such
// stage on a tie), with `stage` saying which. Throws like estimate_stage_memory.
[[nodiscard]] MemoryBreakdown estimate_memory(const ModelPreset& preset, const ParallelLayout& layout,
                                              const MemoryOptions& options);

}  // namespace mugv
