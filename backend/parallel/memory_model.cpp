#include "parallel/memory_model.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/info.h"

#include <algorithm>
#include <cmath>

namespace mugv {

namespace {

constexpr int64_t kMiB = int64_t(1) << 20;
constexpr int64_t kGiB = int64_t(1) << 30;

[[noreturn]] void bad(const std::string& subject, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, subject, message);
}

double term_bytes(const ActivationTerm& t, int activation_bytes) {
  return t.elements * activation_bytes + t.fp32_elements * 4.0;
}

bool kept_under(ActivationKind kind, Recompute recompute) {
  switch (recompute) {
    case Recompute::none:
      return true;
    case Recompute::selective:
      return kind != ActivationKind::attention_scores;  // the attention core only (model/config.h)
    case Recompute::full:
      return kind == ActivationKind::block_input;
    case Recompute::unknown:
      break;
  }
  return false;
}

// RMSNorm computes in fp32. When activations are narrower, it keeps fp32 copies of self-attention q, k (the
// bf16 qkv output is counted as a term) and of cross-attention q (whose bf16 q_linear output is counted as a
// term but then freed: only the difference is added). In fp32 the copies are the inputs themselves. The fused
// q/k norm (fused_norms) reads the bf16 qkv output directly and keeps no copy of q, k.
double upcast_bytes_per_token(const DiTConfig& c, const MemoryOptions& o) {
  const int a = o.precision.activation_bytes;
  if (a >= 4) return 0;
  const double self_attention = o.fused_norms ? 0.0 : 2.0 * c.hidden * 4.0;
  return self_attention + double(c.hidden) * (4 - a);
}

// Bytes per token alive only while one block runs backward: the gradients flowing through it, the
// materialised score gradients of the math attention path, and whatever recompute re-creates for that block.
double working_bytes_per_token(const DiTConfig& c, int64_t sequence, int64_t text_tokens,
                               const MemoryOptions& o) {
  const double d = c.hidden, f = double(c.hidden) * c.mlp_ratio;
  const int a = o.precision.activation_bytes;
  double bytes = (2.0 * d + f) * a;  // gradient of the residual stream and of the widest tensor inside
  if (o.attention == AttentionKernel::math) bytes += 2.0 * c.heads * double(sequence + text_tokens) * a;
  if (o.recompute != Recompute::none) {
    for (const auto& t : block_activation_terms(c, sequence, text_tokens, o))
      if (!kept_under(t.kind, o.recompute)) bytes += term_bytes(t, a);
  }
  if (o.recompute == Recompute::full) bytes += upcast_bytes_per_token(c, o);
  return bytes;
}

// Per-sample bytes of one block that do not scale with video tokens: the text keys and values of the
// cross-attention (kv_linear output, k's fp32 RMSNorm input and normalised copies) and the adaLN modulation
// of every frame group.
double block_bytes_per_sample(const DiTConfig& c, int64_t text_tokens, int64_t groups, int tp,
                              int activation_bytes) {
  const double d = c.hidden, t = double(text_tokens);
  const double kv = (4.0 * t * d * activation_bytes + t * d * 4.0) / tp;
  const double modulation = 6.0 * double(groups) * d * activation_bytes;
  return kv + modulation;
}

// Latent values per token (one patch of the latent's channels).
double patch_values(const DiTConfig& c) {
  return double(c.patch_t) * c.patch_h * c.patch_w * c.in_channels;
}

// Per-token bytes before the blocks (chunk 0): the fp32 latent input.
double input_bytes_per_token(const DiTConfig& c) {
  return patch_values(c) * 4.0;
}

// Per-token bytes after the blocks (the last chunk): the final adaLN + linear, the prediction, and the fp32
// target and loss.
double output_bytes_per_token(const DiTConfig& c, int activation_bytes) {
  const double out = patch_values(c);
  return 3.0 * c.hidden * activation_bytes + out * activation_bytes + 2.0 * out * 4.0;
}

// Tensor-parallel parameters of one block: column-parallel (weight + bias split) qkv, cross q, cross kv and
// fc1; row-parallel (weight split, bias replicated) attention proj, cross proj and fc2.
int64_t block_tensor_parallel_parameters(const DiTConfig& c) {
  const int64_t d = c.hidden;
  const int64_t ff = d * c.mlp_ratio;
  const int64_t column = (d * 3 * d + 3 * d) + (d * d + d) + (d * 2 * d + 2 * d) + (d * ff + ff);
  const int64_t row = d * d + d * d + ff * d;
  return column + row;
}

void check_stage(const PipelineShape& shape, int stage) {
  if (stage < 0 || stage >= shape.stages)
    bad(cat("stage ", stage), cat("the pipeline has stages 0 to ", shape.stages - 1));
}

// The pipeline of `layout` under the options (one stage of one chunk when pp = 1) and its micro-batches.
PipelineShape pipeline_shape(const DiTConfig& c, const ParallelLayout& layout, const MemoryOptions& o) {
  return {c.depth, layout.pp, layout.pp > 1 ? o.pp_virtual_stages : 1};
}

int pipeline_micro_batches(const ParallelLayout& layout, const MemoryOptions& o) {
  if (layout.pp == 1) return 1;  // no pipeline: one micro-batch in flight whatever the accumulation
  return o.pp_micro_batches > 0 ? o.pp_micro_batches : 2 * layout.pp;
}

// Boundaries stage `stage` sends or receives across: each of its chunks has one before it (but chunk 0) and
// one after it (but the last chunk).
int boundaries_of_stage(const PipelineShape& shape, int stage) {
  int boundaries = 0;
  for (int chunk : chunks_of_stage(shape, stage))
    boundaries += (chunk > 0 ? 1 : 0) + (chunk < shape.chunks() - 1 ? 1 : 0);
  return boundaries;
}

// Per-sample bytes of the text path: the caption projection (LN → MLP → LN) and, when trained with the DiT,
// the text encoder's own layers.
double text_bytes_per_sample(const ModelPreset& p, const MemoryOptions& o) {
  const int a = o.precision.activation_bytes;
  const double t = p.dit.text_tokens;
  double bytes = t * (2.0 * p.dit.text_dim + 4.0 * p.dit.hidden) * a;
  // A frozen text encoder (LoRA runs) keeps nothing for backward.
  if (o.text_encoder == TextEncoderUse::trained && o.adapter_parameters < 0) {
    const auto& e = p.text;
    const double ff_tensors = e.kind == TextEncoderKind::t5 ? 3.0 : 2.0;  // T5's gated GELU keeps one more
    double per_layer_token = 10.0 * e.dim + ff_tensors * e.ff_dim;
    if (o.attention == AttentionKernel::math) per_layer_token += double(e.heads) * e.max_tokens;
    bytes += t * (per_layer_token * e.layers + e.dim) * a;
  }
  return bytes;
}

}  // namespace

const char* to_string(TrainDevice device) {
  switch (device) {
    case TrainDevice::gpu:
      return "gpu";
    case TrainDevice::cpu:
      return "cpu";
    case TrainDevice::unknown:
      break;
  }
  return "unknown";
}

std::optional<TrainDevice> train_device_from_string(std::string_view name) {
  if (name == "gpu" || name == "cuda") return TrainDevice::gpu;
  if (name == "cpu") return TrainDevice::cpu;
  if (name == "unknown") return TrainDevice::unknown;
  return std::nullopt;
}

const char* to_string(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::fused:
      return "fused";
    case AttentionKernel::math:
      return "math";
    case AttentionKernel::unknown:
      break;
  }
  return "unknown";
}

std::optional<AttentionKernel> attention_kernel_from_string(std::string_view name) {
  if (name == "fused") return AttentionKernel::fused;
  if (name == "math") return AttentionKernel::math;
  if (name == "unknown") return AttentionKernel::unknown;
  return std::nullopt;
}

const char* to_string(TextEncoderUse use) {
  switch (use) {
    case TextEncoderUse::precomputed:
      return "precomputed";
    case TextEncoderUse::trained:
      return "trained";
    case TextEncoderUse::unknown:
      break;
  }
  return "unknown";
}

Precision bf16_mixed_precision() {
  return Precision{2, 2, 4, 4, 4, 2};
}

Precision fp32_precision() {
  return Precision{4, 4, 0, 4, 4, 4};
}

MemoryOptions MemoryOptions::for_device(TrainDevice device, const ModelPreset& preset) {
  MemoryOptions o;
  if (device == TrainDevice::cpu) {
    o.precision = fp32_precision();
    // Debian's LibTorch 1.13 has no fused CPU attention: the model's math path saves the probabilities.
    o.attention = AttentionKernel::math;
    o.overhead_bytes = 300 * kMiB;
  } else if (device == TrainDevice::gpu) {
    o.precision = bf16_mixed_precision();
    o.attention = AttentionKernel::fused;
    // CUDA context and kernels (~0.5 GiB), NCCL buffers (~1 GiB), cuBLAS workspaces and allocator slack.
    o.overhead_bytes = 3 * kGiB;
  } else {
    bad("device", "unknown training device");
  }
  o.text_encoder =
      preset.text.kind == TextEncoderKind::t5 ? TextEncoderUse::precomputed : TextEncoderUse::trained;
  return o;
}

int64_t dit_tensor_parallel_parameters(const DiTConfig& c) {
  return block_tensor_parallel_parameters(c) * c.depth;
}

int64_t parameters_per_stage(const ModelPreset& preset, int tp, TextEncoderUse text_encoder,
                             const PipelineShape& shape, int stage) {
  if (tp < 1) bad("tp", cat("tp must be at least 1, got ", tp));
  validate_pipeline(shape);
  check_stage(shape, stage);
  const DiTConfig& c = preset.dit;
  const int64_t blocks = stage_block_count(shape, stage);
  const int64_t block = dit_block_parameter_count(c), split = block_tensor_parallel_parameters(c);
  const int64_t final_layer = dit_final_layer_parameter_count(c);
  int64_t n = blocks * (block - split) + (blocks * split + tp - 1) / tp;
  if (stage == 0) {
    n += dit_parameter_count(c) - c.depth * block - final_layer;  // patchify, embedders, caption projection
    if (text_encoder == TextEncoderUse::trained) n += text_encoder_parameter_count(preset.text);
  }
  if (stage == stage_of_chunk(shape, shape.chunks() - 1)) n += final_layer;
  return n;
}

int64_t parameters_per_rank(const ModelPreset& preset, int tp, TextEncoderUse text_encoder) {
  return parameters_per_stage(preset, tp, text_encoder, PipelineShape{preset.dit.depth, 1, 1}, 0);
}

double pipeline_boundary_bytes_per_sample(const DiTConfig& c, int64_t video_tokens, int64_t latent_frames,
                                          const ParallelLayout& layout, int activation_bytes) {
  const double d = c.hidden, groups = double(latent_frames / c.patch_t);
  const double tokens = double(video_tokens + 2) / double(layout.tp * layout.cp) * d;
  const double modulation = (groups + 2) * 6.0 * d, caption = double(c.text_tokens) * d;
  const double final_conditioning = groups * d;
  return (tokens + modulation + caption + final_conditioning) * activation_bytes;
}

std::vector<ActivationTerm> block_activation_terms(const DiTConfig& c, int64_t sequence, int64_t text_tokens,
                                                   const MemoryOptions& o) {
  const double d = c.hidden, f = double(c.hidden) * c.mlp_ratio, h = c.heads;
  const bool fused = o.attention == AttentionKernel::fused;
  using K = ActivationKind;
  std::vector<ActivationTerm> t;
  // Self-attention: AdaLN → attention (QK RMSNorm, RoPE) → gated residual.
  t.push_back({"block input (adaLN-1 LayerNorm input)", K::block_input, d, 2});
  // The fused forms keep their inputs (and a LayerNorm's two row statistics, counted with its input) only.
  if (!o.fused_norms) t.push_back({"adaLN-1 normalised x (modulate input)", K::kept, d, 0});
  t.push_back({"qkv input (modulated x)", K::kept, d, 0});
  t.push_back({"qkv output (kept alive by v and the RMSNorm inputs)", K::kept, 3 * d, 0});
  if (!o.fused_norms) t.push_back({"q, k normalised (RMSNorm weight input)", K::kept, 2 * d, 0});
  t.push_back({"q, k after RoPE (attention inputs)", K::kept, 2 * d, 0});
  if (fused) {
    t.push_back({"self-attention output and softmax statistics", K::kept, d, h});
  } else {
    t.push_back({"self-attention probabilities", K::attention_scores, h * double(sequence), 0});
  }
  t.push_back({"attention proj input", K::kept, d, 0});
  t.push_back({"attention proj output (gate input)", K::kept, d, 0});
  // Cross-attention: affine LayerNorm → attention to the text → plain residual.
  t.push_back({"cross-attention LayerNorm input", K::kept, d, 2});
  t.push_back({"cross q_linear input", K::kept, d, 0});
  t.push_back({"cross q_linear output (RMSNorm input)", K::kept, d, 0});
  t.push_back({"cross q normalised, and q (attention input)", K::kept, 2 * d, 0});
  if (fused) {
    t.push_back({"cross-attention output and softmax statistics", K::kept, d, h});
  } else {
    // Kept even under selective recompute: it grows with the text, not the video (model/dit.cpp recomputes
    // the self-attention core only).
    t.push_back({"cross-attention probabilities", K::kept, h * double(text_tokens), 0});
  }
  t.push_back({"cross proj input", K::kept, d, 0});
  // MLP: AdaLN → fc1 → GELU(tanh) → fc2 → gated residual.
  t.push_back({"adaLN-2 LayerNorm input", K::kept, d, 2});
  if (!o.fused_norms) t.push_back({"adaLN-2 normalised x", K::kept, d, 0});
  t.push_back({"fc1 input (modulated x)", K::kept, d, 0});
  t.push_back({"fc1 output (GELU input)", K::mlp_intermediate, f, 0});
  t.push_back({"GELU output (fc2 input)", K::mlp_intermediate, f, 0});
  t.push_back({"fc2 output (gate input)", K::kept, d, 0});
  t.push_back({"RoPE cos, sin", K::kept, double(c.head_dim), 0});
  return t;
}

int recomputed_blocks(const MemoryOptions& o, int blocks) {
  if (o.offload_blocks) return blocks;
  if (o.recompute == Recompute::none) return 0;
  return o.recompute_blocks > 0 ? std::min(o.recompute_blocks, blocks) : blocks;
}

double block_activation_bytes_per_token(const DiTConfig& c, int64_t sequence, int64_t text_tokens,
                                        const MemoryOptions& o) {
  double bytes = 0;
  for (const auto& t : block_activation_terms(c, sequence, text_tokens, o))
    if (kept_under(t.kind, o.recompute)) bytes += term_bytes(t, o.precision.activation_bytes);
  if (o.recompute != Recompute::full) bytes += upcast_bytes_per_token(c, o);
  return bytes;
}

void validate_video_shape(const ModelPreset& preset, int64_t frames, int64_t height, int64_t width) {
  const int64_t step_h = int64_t(preset.vae.compress_h) * preset.dit.patch_h;
  const int64_t step_w = int64_t(preset.vae.compress_w) * preset.dit.patch_w;
  // Whole patches only: the model would pad, but the planner's token split over cp ranks assumes none.
  if (height <= 0 || height % step_h != 0)
    bad("height", cat("height ", height, " is not a multiple of ", step_h, " (VAE ", preset.vae.compress_h,
                      " x patch ", preset.dit.patch_h, ")"));
  if (width <= 0 || width % step_w != 0)
    bad("width", cat("width ", width, " is not a multiple of ", step_w, " (VAE ", preset.vae.compress_w,
                     " x patch ", preset.dit.patch_w, ")"));
  (void)vae_latent_frames(preset.vae, frames);  // throws naming the frame count
}

namespace {

void validate_options(const ModelPreset& preset, const ParallelLayout& layout, const MemoryOptions& o) {
  const DiTConfig& c = preset.dit;
  validate_video_shape(preset, o.frames, o.height, o.width);
  if (o.micro_batch < 1) bad("micro-batch", cat("micro-batch must be at least 1, got ", o.micro_batch));
  if (o.zero != 0 && o.zero != 1) bad("zero", cat("ZeRO stage must be 0 or 1, got ", o.zero));
  if (o.recompute == Recompute::unknown) bad("recompute", "recompute must be none, selective or full");
  if (o.attention == AttentionKernel::unknown) bad("attention", "attention kernel must be fused or math");
  if (o.text_encoder == TextEncoderUse::unknown)
    bad("text encoder", "text encoder must be precomputed or trained");
  const auto& p = o.precision;
  if (p.param_bytes <= 0 || p.grad_bytes <= 0 || p.activation_bytes <= 0 || p.master_bytes < 0 ||
      p.moment_bytes < 0 || p.ema_bytes < 0)
    bad("precision", "byte sizes must be positive (master, moments and EMA may be 0)");
  if (layout.pp < 1) bad("pp", cat("pipeline stages must be at least 1, got ", layout.pp));
  if (layout.tp < 1 || layout.cp < 1 || layout.dp < 1)
    bad(to_string(layout), "every parallel size must be at least 1");
  if (c.heads % (layout.tp * layout.cp) != 0)
    bad(to_string(layout),
        cat(c.heads, " attention heads cannot be split over tp × cp = ", layout.tp * layout.cp, " ranks"));
  if (o.recompute_blocks < 0)
    bad("recompute-blocks", cat("recomputed blocks must be 0 (all) or more, got ", o.recompute_blocks));
  if (o.offload_blocks && o.adapter_parameters < 0)
    bad("offload", "block swap keeps a frozen base in host memory: it needs LoRA adapters");
  if (o.offload_blocks && layout.tp * layout.cp * layout.pp > 1)
    bad(to_string(layout), "block swap runs the whole DiT in each process (tp = cp = pp = 1)");
  if (o.pp_micro_batches < 0)
    bad("micro-batches", cat("pipeline micro-batches must be 0 (2 x pp) or more, got ", o.pp_micro_batches));
  validate_pipeline(pipeline_shape(c, layout, o), pipeline_micro_batches(layout, o));
}

}  // namespace

MemoryBreakdown estimate_stage_memory(const ModelPreset& preset, const ParallelLayout& layout,
                                      const MemoryOptions& o, int stage) {
  const DiTConfig& c = preset.dit;
  validate_options(preset, layout, o);
  const PipelineShape shape = pipeline_shape(c, layout, o);
  const int micro_batches = pipeline_micro_batches(layout, o);
  check_stage(shape, stage);

  const ModelInfo info = describe(preset, o.frames, o.height, o.width);
  if (info.video_tokens % layout.cp != 0)
    bad(to_string(layout),
        cat(info.video_tokens, " video tokens cannot be split evenly over cp = ", layout.cp, " ranks"));

  MemoryBreakdown m;
  m.stage = stage;
  const auto& p = o.precision;
  const bool adapters = o.adapter_parameters >= 0;
  if (adapters && layout.tp > 1) bad(to_string(layout), "LoRA adapters train with tp = 1");
  const int blocks = stage_block_count(shape, stage);
  // What trains: every parameter of the stage, or only the adapters beside the frozen base's weights (the
  // adapters sit in the blocks, so a stage holds its blocks' share of them).
  const int64_t n = adapters ? o.adapter_parameters * blocks / c.depth
                             : parameters_per_stage(preset, layout.tp, o.text_encoder, shape, stage);
  m.parameters = n * p.param_bytes;
  if (adapters) {
    int64_t frozen = parameters_per_stage(preset, 1, o.text_encoder, shape, stage);
    // Block swap: the device holds two blocks of the base (one computing, the next being copied).
    if (o.offload_blocks) frozen -= int64_t(blocks - std::min(blocks, 2)) * dit_block_parameter_count(c);
    m.parameters += frozen * (o.frozen_param_bytes > 0 ? o.frozen_param_bytes : p.param_bytes);
  }
  // Data parallel: the gradients are also copied into the reduction buckets (train/gradient_sync.h).
  m.gradients = n * p.grad_bytes * (layout.dp > 1 ? 2 : 1);
  const int64_t shards = o.zero == 1 ? layout.dp : 1;
  m.optimizer = (n * p.optimizer_bytes() + shards - 1) / shards;
  // ZeRO-1 gathers the updated weights into a buffer of the whole flat parameter vector
  // (train/zero_optimizer.h), and c10d's list-form all-gather stages the same amount in a flat buffer of its
  // own (Gloo and NCCL alike).
  if (o.zero == 1 && layout.dp > 1) m.optimizer += 2 * n * p.param_bytes;

  const int64_t sequence = info.video_tokens + 2;
  const int64_t text_tokens = c.text_tokens;
  const int a = p.activation_bytes;
  // Sequence parallel splits every per-token tensor over tp, Ulysses over cp (the two start/end tokens ride
  // along on every rank; counting them once per rank is within rounding).
  const double tokens_per_rank = double(sequence) / double(layout.tp * layout.cp);
  // Micro-batches whose activations stay alive until their backward: the stage's blocks keep as many as its
  // schedule has in flight (1 without a pipeline), and what lives before the blocks (chunk 0, on stage 0) or
  // after them (the last chunk) as many as that chunk has; the one block running backward needs its working
  // set once.
  // The counts stop growing at 3·pp micro-batches (the warm-up is under (v + 1)·pp virtual micro-batches and
  // the steady state repeats every pp·v), so a long accumulation is counted at 3·pp, which costs no time.
  const int counted = std::min(micro_batches, 3 * layout.pp);
  const int last_chunk = shape.chunks() - 1;
  const double in_flight = pipeline_in_flight(shape, stage, counted);
  const double first_in_flight = stage == 0 ? pipeline_chunk_in_flight(shape, 0, counted) : 0;
  const double last_in_flight =
      stage == stage_of_chunk(shape, last_chunk) ? pipeline_chunk_in_flight(shape, last_chunk, counted) : 0;
  // The first `recomputed` blocks keep what `recompute` keeps, the others everything; the block running
  // backward needs the working set of the mode it ran under (the recompute's is the larger).
  MemoryOptions recomputing = o, keeping = o;
  if (o.offload_blocks) recomputing.recompute = Recompute::full;
  keeping.recompute = Recompute::none;
  const int recomputed = recomputed_blocks(o, blocks);
  const double per_token =
      in_flight *
          (recomputed * block_activation_bytes_per_token(c, sequence, text_tokens, recomputing) +
           (blocks - recomputed) * block_activation_bytes_per_token(c, sequence, text_tokens, keeping)) +
      working_bytes_per_token(c, sequence, text_tokens, recomputed > 0 ? recomputing : keeping) +
      first_in_flight * input_bytes_per_token(c) + last_in_flight * output_bytes_per_token(c, a);
  const int64_t groups = info.latent_frames / c.patch_t + 2;
  // Fully recomputed blocks rebuild their text keys and values in backward, one block at a time.
  const double blocks_with_text_kv = recomputing.recompute == Recompute::full
                                         ? in_flight * (blocks - recomputed) + (recomputed > 0 ? 1.0 : 0.0)
                                         : in_flight * blocks;
  double per_sample = tokens_per_rank * per_token +
                      blocks_with_text_kv * block_bytes_per_sample(c, text_tokens, groups, layout.tp, a) +
                      first_in_flight * text_bytes_per_sample(preset, o);
  // Each boundary holds one micro-batch's tensors sent or received forward and one of their gradients.
  if (layout.pp > 1)
    per_sample += 2.0 * boundaries_of_stage(shape, stage) *
                  pipeline_boundary_bytes_per_sample(c, info.video_tokens, info.latent_frames, layout, a);
  m.activations = static_cast<int64_t>(std::ceil(per_sample * o.micro_batch));
  m.overhead = o.overhead_bytes;
  return m;
}

MemoryBreakdown estimate_memory(const ModelPreset& preset, const ParallelLayout& layout,
                                const MemoryOptions& o) {
  MemoryBreakdown most = estimate_stage_memory(preset, layout, o, 0);
  for (int stage = 1; stage < layout.pp; ++stage) {
    const MemoryBreakdown m = estimate_stage_memory(preset, layout, o, stage);
    if (m.total() > most.total()) most = m;
  }
  return most;
}

}  // namespace mugv
