#pragma once
// The MUG-V diffusion transformer (docs/MUGV.md §3) as LibTorch modules, with the released model's
// conventions and tensor names (the `MUGDiT` of the public reference code, whose `dit.pt` loads here by
// name):
//
//   latent [B,C,T,H,W] --zero-pad T/H/W to the patch, Conv3d patchify (1,2,2)--> tokens [B, T'·H'·W', d],
//   framed by a learned start and end token; conditioning c = t_embedder(timestep) + fps_embedder(fps) with
//   timestep in [0, 1000] (1000 = pure noise, t·kDiTTimesteps for flow time t); adaLN-single: one shared
//   SiLU → Linear(d, 6d) on c ("t_block"), plus a learned (6, d) table per block.
//   Block: AdaLN → 3D self-attention (QKV bias, per-head RMSNorm on q and k, 3D RoPE) → gated residual;
//   affine LayerNorm → cross-attention to the projected text (each sample attends only to its own
//   unpadded caption tokens, as the release's packed captions do) → plain residual; AdaLN → MLP
//   (GELU-tanh) → gated residual. Final AdaLN (table (2, d) + c, no SiLU) → Linear to 2·C·patch volume →
//   unpatchify → crop to the input size. forward_full() returns all 2·C channels as released; forward()
//   returns the velocity, the first C (the sampler's `pred.chunk(2, dim=1)[0]`).
//
// Clean frames (cond_mask[b, f] true; the release's x_mask is its negation) are modulated with the
// embedding of timestep 0, and so are the start and end tokens, always (the release frames x_mask with
// false at both ends). Modulation is computed per group (start token, each frame, end token) and
// broadcast over that group's tokens (never a [B, N, 6d] tensor). The caller keeps the clean latent in
// those frames and excludes them from the loss.
//
// 3D RoPE: head_dim / 6 complex pairs per axis, in the order (h, w, t), frequencies
// 1 / theta^(6j / head_dim), interleaved pairs. Time positions come from frame_indices [B, T'+2] (start
// token, frames, end token; default 0 … T'+1, clamped to [0, kRopeTimePositions)); the start token sits at
// (0, 0, fi[0]) and the end token at (H'-1, W'-1, fi[T'+1]). When head_dim is not a multiple of 6 the
// trailing dimensions pass through unrotated (the `small` benchmark shape has head_dim 64).
//
// Initialisation ("adaLN-zero"): linears and the patchify conv ~ N(0, 0.014²) (docs/MUGV.md §5) with
// zero bias, but the adaLN-single linear, every adaLN table, the cross-attention output projection
// and the final linear are zero, so a fresh block is exactly the identity and a fresh model
// predicts zero. Released weights replace all of it.
//
// Not thread-safe (a torch module); one forward at a time per instance.

#include "model/block_offload.h"
#include "model/config.h"
#include "model/dit_parallel.h"
#include "model/fused_ops.h"
#include "model/rope_table.h"

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace mugv {

class LoraSet;  // model/lora.h

// Sinusoidal embedding [N, dim] of the values `t` [N]: cat(cos(t·f), sin(t·f)) with
// f_i = max_period^(-i / (dim/2)), as in DiT / GLIDE.
[[nodiscard]] torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim,
                                               double max_period = 10000.0);

// RoPE angles [..., N, 3·(head_dim/6)] for token positions [..., N, 3] (h, w, t), float.
[[nodiscard]] torch::Tensor rope_angles(const torch::Tensor& positions, int64_t head_dim, double theta);
// Rotates x [B, H, N, head_dim] by the angles [N, P] or [B, N, P] (their tables: model/rope_table.h) (pairs
// 2i, 2i+1 by angle i; pairs beyond P unchanged): in one pass (model/fused_ops.h fused_rope) where that
// covers the inputs, else as apply_rope_reference, the composition of LibTorch operations the fused form is
// checked against.
[[nodiscard]] torch::Tensor apply_rope(const torch::Tensor& x, const RopeTable& rope);
[[nodiscard]] torch::Tensor apply_rope_reference(const torch::Tensor& x, const RopeTable& rope);
// A block's adaLN input, LayerNorm(x) (no affine, eps) · (1 + scale_g) + shift_g for x [B, n, d] and scale,
// shift [B, G, d] by the tokens' groups (`layout`, model/fused_ops.h): the composition of LibTorch operations
// that model/fused_ops.h fused_norm_modulate replaces where it applies, and is checked against.
[[nodiscard]] torch::Tensor norm_modulate_reference(const torch::Tensor& x, const torch::Tensor& scale,
                                                    const torch::Tensor& shift, double eps,
                                                    const TokenLayout& layout);
// A block's gated residual update x + h · gate_g (gate [B, G, d] by the tokens' groups): the composition of
// LibTorch operations that model/fused_ops.h fused_gated_residual replaces where it applies.
[[nodiscard]] torch::Tensor gated_residual_reference(const torch::Tensor& x, const torch::Tensor& h,
                                                     const torch::Tensor& gate, const TokenLayout& layout);
// Flow time t in [0, 1] is the DiT's timestep t·kDiTTimesteps, as in the release.
constexpr double kDiTTimesteps = 1000.0;
// Time positions of the release's RoPE table: frame indices are clamped to [0, kRopeTimePositions).
constexpr int64_t kRopeTimePositions = 480;

// Token positions [2 + T·H·W, 3] (h, w, t) of a patched latent: start token, frames 1..T in (t, h, w)
// order, end token.
[[nodiscard]] torch::Tensor dit_token_positions(int64_t frames, int64_t height, int64_t width);
// The same per sample [B, 2 + T·H·W, 3] with time positions from frame_indices [B, T+2] (int).
[[nodiscard]] torch::Tensor dit_token_positions(const torch::Tensor& frame_indices, int64_t height,
                                                int64_t width);

// softmax(q·kᵀ/sqrt(head_dim) + bias)·v for q [B,H,N,hd], k/v [B,H,M,hd]; bias broadcastable to
// [B,H,N,M] or undefined. The fused kernel is used when built against LibTorch >= 2.0.
[[nodiscard]] torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const torch::Tensor& bias = {});
// Additive attention bias [B,1,1,S] from a key mask [B,S] (1 = real token, 0 = padding).
[[nodiscard]] torch::Tensor key_padding_bias(const torch::Tensor& mask, torch::ScalarType dtype);

class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(int64_t dim, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  double eps() const { return eps_; }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Sinusoidal (256) → Linear → SiLU → Linear, as "mlp.0" and "mlp.2". Used for the timestep and the fps.
class ScalarEmbedderImpl : public torch::nn::Module {
 public:
  ScalarEmbedderImpl(int64_t hidden, int64_t frequency_dim);
  torch::Tensor forward(const torch::Tensor& values);  // [B] -> [B, hidden]
  torch::nn::Sequential mlp{nullptr};

 private:
  int64_t frequency_dim_;
};
TORCH_MODULE(ScalarEmbedder);

// Zero-pads T/H/W up to multiples of the patch (at the end, as the release does) and patchifies with a
// Conv3d ("proj") of kernel = stride = patch: [B,C,T,H,W] -> tokens [B, T'·H'·W', d] in (t, h, w) order.
class PatchEmbedderImpl : public torch::nn::Module {
 public:
  PatchEmbedderImpl(int64_t in_channels, int64_t hidden, int64_t patch_t, int64_t patch_h, int64_t patch_w);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv3d proj{nullptr};
};
TORCH_MODULE(PatchEmbedder);

// How a block runs: in one process (parallel == nullptr) or split across ranks (dit_parallel.h), and
// whether the attention core is recomputed in backward.
struct BlockRuntime {
  DiTParallelOps* parallel = nullptr;
  bool recompute_attention = false;
  const LoraSet* lora = nullptr;  // adapters on the block's linears (model/lora.h); null: none
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  // `q_multiplier` scales the queries: the attention logits (model/config.h DiTConfig::attention_multiplier).
  SelfAttentionImpl(int64_t hidden, int64_t heads, double q_multiplier = 1.0);
  // x [B,n,d]: the whole sequence, or this rank's sequence slice under sequence/context parallel;
  // the RoPE tables of the whole sequence. The heads this rank holds follow from qkv's (sharded) rows.
  torch::Tensor forward(const torch::Tensor& x, const RopeTable& rope, const BlockRuntime& runtime = {});
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t head_dim_;
  double q_multiplier_ = 1.0;
};
TORCH_MODULE(SelfAttention);

class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int64_t hidden, int64_t heads, double q_multiplier = 1.0);
  // x [B,n,d] (whole sequence or this rank's slice), context [B,S,d], bias [B,1,1,S] (key padding) or
  // undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& bias,
                        const BlockRuntime& runtime = {});
  torch::nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t head_dim_;
  double q_multiplier_ = 1.0;
};
TORCH_MODULE(CrossAttention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t in, int64_t hidden, int64_t out);
  // Under tensor parallel fc1 is column- and fc2 row-parallel (only inside blocks; runtime.parallel set).
  torch::Tensor forward(const torch::Tensor& x, const BlockRuntime& runtime = {});
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// Per-group adaLN inputs shared by all blocks of one forward: `modulation` is [B, G, 6, d] where
// G = 1 (every token alike) or G = frames + 2 (start token, one group per frame, end token).
struct BlockContext {
  torch::Tensor modulation;
  RopeTable rope;            // [N, P], or [B, N, P] when samples have their own frame indices
  torch::Tensor text;        // [B, S, d] projected caption
  torch::Tensor text_bias;   // [B, 1, 1, S] or undefined
  int64_t frames = 0;        // patched frames T'
  int64_t token_offset = 0;  // index in the whole sequence of x's first token (its slice under parallel runs)
  BlockRuntime runtime;
};

// What one pipeline stage hands the next in the middle of a forward (DiTImpl::begin_pass / resume_pass): the
// sequence after the blocks run so far ([B, n, d]: whole, or this rank's slice under tensor / context
// parallel), the per-group adaLN modulation [B, T'+2, 6, d], the projected caption [B, S, d], the final
// layer's per-frame conditioning [B, T', d] and the caption's key mask [B, S] (1 = token; no gradient).
struct DiTPassTensors {
  torch::Tensor tokens, modulation, text, final_condition, text_mask;
};

// One forward pass, between its pieces.
struct DiTPass {
  int64_t batch = 0, frames_in = 0, height_in = 0, width_in = 0;  // the input latent
  int64_t frames = 0, height = 0, width = 0;                      // its patch grid T', H', W'
  torch::ScalarType out_dtype = torch::kFloat32;                  // the input's: the output's dtype
  DiTPassTensors boundary;  // the sequence so far and its conditioning: what a later stage receives
  BlockContext context;     // what the blocks read, derived from `boundary`
};

// Caption projection: LayerNorm (no affine) → MLP ("y_proj": fc1 text_dim → d, GELU-tanh, fc2) → LayerNorm.
class TextEmbedderImpl : public torch::nn::Module {
 public:
  TextEmbedderImpl(int64_t text_dim, int64_t hidden);
  // [B, S, text_dim] -> [B, S, d], with the adapters of `lora` on y_proj's linears.
  torch::Tensor forward(const torch::Tensor& text, const LoraSet* lora = nullptr);
  Mlp y_proj{nullptr};
};
TORCH_MODULE(TextEmbedder);

// Final adaLN (a (2, d) table "scale_shift_table" + c: shift, scale) and the output linear ("linear").
class FinalLayerImpl : public torch::nn::Module {
 public:
  FinalLayerImpl(int64_t hidden, int64_t outputs);
  torch::Tensor scale_shift_table;
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(FinalLayer);

class DiTBlockImpl : public torch::nn::Module {
 public:
  DiTBlockImpl(int64_t hidden, int64_t heads, int64_t mlp_ratio, double attention_multiplier = 1.0);
  torch::Tensor forward(const torch::Tensor& x, const BlockContext& context);
  torch::Tensor scale_shift_table;  // [6, d]: shift/scale/gate (attention), shift/scale/gate (MLP)
  SelfAttention attn{nullptr};
  torch::nn::LayerNorm cross_attn_norm{nullptr};
  CrossAttention cross_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DiTBlock);

class DiTImpl : public torch::nn::Module {
 public:
  explicit DiTImpl(const DiTConfig& config);

  // x [B,C,T,H,W]; timestep [B] in [0, kDiTTimesteps] (1000 = pure noise); text [B,S,text_dim];
  // text_mask [B,S] (1 = token, 0 = padding; undefined = all tokens); fps [B]; cond_mask [B,T] bool (true =
  // clean conditioning frame) or undefined (none); frame_indices [B, T'+2] integer RoPE time positions or
  // undefined (0 … T'+1). Returns the velocity [B,C,T,H,W] (the first C of the 2·C output channels) in x's
  // dtype. Throws Error(invalid_argument) on shape mismatches, naming the argument.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timestep, const torch::Tensor& text,
                        const torch::Tensor& text_mask, const torch::Tensor& fps,
                        const torch::Tensor& cond_mask = {}, const torch::Tensor& frame_indices = {});
  // The same, returning all 2·C output channels [B,2C,T,H,W], as the release's forward does.
  torch::Tensor forward_full(const torch::Tensor& x, const torch::Tensor& timestep, const torch::Tensor& text,
                             const torch::Tensor& text_mask, const torch::Tensor& fps,
                             const torch::Tensor& cond_mask = {}, const torch::Tensor& frame_indices = {});

  // The forward cut into pieces, so that pipeline stages can each run part of it (train/pipeline_step.h):
  // begin_pass (checks the inputs like forward(); embedders, adaLN-single, caption projection and, under
  // tensor / context parallel, the sequence split) → run_blocks over any contiguous blocks → finish_pass
  // (final layer, unpatchify; all 2·C channels in x's dtype). forward_full() is the three in a row.
  // resume_pass continues a pass on a later stage from the tensors the previous stage sent; `x` is the
  // micro-batch's latent input (only its shape and dtype are read) and `frame_indices` as for forward().
  DiTPass begin_pass(const torch::Tensor& x, const torch::Tensor& timestep, const torch::Tensor& text,
                     const torch::Tensor& text_mask, const torch::Tensor& fps,
                     const torch::Tensor& cond_mask = {}, const torch::Tensor& frame_indices = {});
  DiTPass resume_pass(const torch::Tensor& x, const DiTPassTensors& sent,
                      const torch::Tensor& frame_indices = {}) const;
  // Blocks [first, last). Throws Error(invalid_argument) for a range outside the model.
  void run_blocks(DiTPass& pass, int64_t first, int64_t last);
  torch::Tensor finish_pass(DiTPass& pass);

  // Replaces the captions of the samples where drop[b] is true by the null caption: the learned one when
  // the model has it (all of its tokens valid), else `null_text` [1, S', text_dim] with `null_mask` [1, S']
  // (an encoded empty prompt; padded or cut to S). Returns (text, text_mask). Used for classifier-free
  // guidance dropout. Throws Error(unsupported) when the model has no learned null caption and none is given.
  std::pair<torch::Tensor, torch::Tensor> drop_captions(const torch::Tensor& text,
                                                        const torch::Tensor& text_mask,
                                                        const torch::Tensor& drop,
                                                        const torch::Tensor& null_text = {},
                                                        const torch::Tensor& null_mask = {});
  bool has_null_caption() const { return null_caption.defined(); }

  // The conditioning embedding c [B, d] (timestep in [0, kDiTTimesteps] + fps) that adaLN-single reads.
  torch::Tensor condition(const torch::Tensor& timestep, const torch::Tensor& fps);

  // Activation recomputation of the blocks (model/config.h): `mode` on the blocks of `blocks` (indices;
  // empty: every block), the others keep their activations (partial recomputation).
  void set_recompute(Recompute mode, std::vector<int64_t> blocks = {}) {
    recompute_ = mode;
    recomputed_blocks_ = std::move(blocks);
  }
  Recompute recompute() const { return recompute_; }
  // The recompute mode block `index` runs under.
  Recompute recompute_of(int64_t index) const;

  // Splits this model across ranks (dit_parallel.h): keeps only this rank's tensor-parallel piece of every
  // split parameter (in place, so optimisers and checkpoints see the shard) and runs the blocks through
  // `ops`. Call once, on a freshly built (or fully loaded) model, before any optimiser is created. Throws
  // Error(invalid_argument) when heads are not divisible by tp·cp.
  void set_parallel(std::shared_ptr<DiTParallelOps> ops);
  DiTParallelOps* parallel() const { return parallel_.get(); }

  // Runs the blocks through `offload` (model/block_offload.h: block swap on a device that cannot hold every
  // block); empty = all weights where they are. Build it over this model first, and do not move the model
  // with to() afterwards: the offload owns where each block's weights are. A training offload recomputes
  // every block in backward, whatever set_recompute says.
  void set_block_offload(std::shared_ptr<BlockOffload> offload) { offload_ = std::move(offload); }
  // Low-rank adapters consulted at every adaptable linear (model/lora.h); empty = none. Throws
  // Error(unsupported) on a model split by tensor parallel.
  void set_lora(std::shared_ptr<LoraSet> lora);
  LoraSet* lora() const { return lora_.get(); }
  BlockOffload* block_offload() const { return offload_.get(); }
  const DiTConfig& config() const { return config_; }

  PatchEmbedder x_embedder{nullptr};
  ScalarEmbedder t_embedder{nullptr}, fps_embedder{nullptr};
  torch::nn::Sequential t_block{nullptr};  // SiLU, Linear(d, 6d): adaLN-single
  TextEmbedder y_embedder{nullptr};
  torch::Tensor null_caption;  // [text_tokens, text_dim]; undefined when config.null_caption is false
  torch::Tensor start_token, end_token;
  torch::nn::ModuleList blocks{nullptr};
  FinalLayer final_layer{nullptr};

 private:
  torch::Tensor run_block(DiTBlock& block, int64_t index, const torch::Tensor& x,
                          const BlockContext& context);
  void set_pass_geometry(DiTPass& pass, const torch::Tensor& x) const;
  void set_block_context(DiTPass& pass, const torch::Tensor& frame_indices) const;
  DiTConfig config_;
  Recompute recompute_ = Recompute::none;
  std::vector<int64_t> recomputed_blocks_;  // empty: every block
  std::shared_ptr<DiTParallelOps> parallel_;
  std::shared_ptr<BlockOffload> offload_;
  std::shared_ptr<LoraSet> lora_;
};
TORCH_MODULE(DiT);

// Number of trainable parameter elements of any module (to compare with the analytic counts).
[[nodiscard]] int64_t parameter_count(const torch::nn::Module& module);

}  // namespace mugv
