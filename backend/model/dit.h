#pragma once
// The MUG-V diffusion transformer (docs/MUGV.md §3) as LibTorch modules.
//
//   latent [B,C,T,H,W] --Conv3d patchify (1,2,2)--> tokens [B, T'·H'·W', d], framed by a learned
//   start and end token; conditioning c = timestep_embedder(1000·t) + fps_embedder(fps), and
//   adaLN-single: one shared SiLU → Linear(d, 6d) on c, plus a learned (6, d) table per block.
//   Block: AdaLN → 3D self-attention (QKV bias, per-head RMSNorm on q and k, 3D RoPE) → gated
//   residual; affine LayerNorm → cross-attention to the projected text (key padding mask) → plain
//   residual; AdaLN → MLP (GELU-tanh) → gated residual. Final AdaLN (table (2, d) + c) → Linear to
//   C·patch volume → unpatchify. Output: velocity [B,C,T,H,W] in the input's dtype.
//
// Conditioning frames (cond_mask[b, f] true) are modulated with the t = 0 embedding; modulation
// is computed per frame and broadcast over that frame's tokens (never a [B, N, 6d] tensor). The
// start and end tokens always use the sample's own t, so an all-false cond_mask gives exactly the
// output without one. The caller keeps the clean latent in those frames and excludes them from
// the loss.
//
// 3D RoPE: head_dim / 6 frequency pairs per axis, in the order (h, w, t), base rope_theta,
// interleaved pairs; frames are indexed from 1, the start token sits at (0, 0, 0) and the end
// token at (H'-1, W'-1, T'+1). When head_dim is not a multiple of 6 the trailing dimensions pass
// through unrotated (the `small` benchmark shape has head_dim 64).
//
// Initialisation ("adaLN-zero"): linears and the patchify conv ~ N(0, 0.014²) (docs/MUGV.md §5) with
// zero bias, but the adaLN-single linear, every adaLN table, the cross-attention output projection
// and the final linear are zero, so a fresh block is exactly the identity and a fresh model
// predicts zero velocity.
//
// Not thread-safe (a torch module); one forward at a time per instance.

#include "model/config.h"
#include "model/dit_parallel.h"

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace mugv {

// Sinusoidal embedding [N, dim] of the values `t` [N]: cat(cos(t·f), sin(t·f)) with
// f_i = max_period^(-i / (dim/2)), as in DiT / GLIDE.
[[nodiscard]] torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0);

// RoPE angles [N, 3·(head_dim/6)] for token positions [N, 3] (h, w, t), float.
[[nodiscard]] torch::Tensor rope_angles(const torch::Tensor& positions, int64_t head_dim, double theta);
// Rotates x [..., N, head_dim] by the angles [N, P] (pairs 2i, 2i+1 by angle i; pairs beyond P unchanged).
[[nodiscard]] torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& angles);
// Token positions [2 + T·H·W, 3] of a patched latent: start token, frames 1..T in (t, h, w) order, end token.
[[nodiscard]] torch::Tensor dit_token_positions(int64_t frames, int64_t height, int64_t width);

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
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Sinusoidal (256) → Linear → SiLU → Linear. Used for both the timestep and the fps.
class ScalarEmbedderImpl : public torch::nn::Module {
 public:
  ScalarEmbedderImpl(int64_t hidden, int64_t frequency_dim);
  torch::Tensor forward(const torch::Tensor& values);  // [B] -> [B, hidden]
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int64_t frequency_dim_;
};
TORCH_MODULE(ScalarEmbedder);

// How a block runs: in one process (parallel == nullptr) or split across ranks (dit_parallel.h), and
// whether the attention core is recomputed in backward.
struct BlockRuntime {
  DiTParallelOps* parallel = nullptr;
  bool recompute_attention = false;
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t hidden, int64_t heads);
  // x [B,n,d]: the whole sequence, or this rank's sequence slice under sequence/context parallel;
  // rope angles [N,P] for the whole sequence. The heads this rank holds follow from qkv's (sharded) rows.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& angles, const BlockRuntime& runtime = {});
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t head_dim_;
};
TORCH_MODULE(SelfAttention);

class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int64_t hidden, int64_t heads);
  // x [B,n,d] (whole sequence or this rank's slice), context [B,S,d], bias [B,1,1,S] (key padding) or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& bias,
                        const BlockRuntime& runtime = {});
  torch::nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t head_dim_;
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
  torch::Tensor angles;     // [N, P]
  torch::Tensor text;       // [B, S, d] projected caption
  torch::Tensor text_bias;  // [B, 1, 1, S] or undefined
  int64_t frames = 0;       // patched frames T'
  int64_t token_offset = 0; // index in the whole sequence of x's first token (its slice under parallel runs)
  BlockRuntime runtime;
};

class DiTBlockImpl : public torch::nn::Module {
 public:
  DiTBlockImpl(int64_t hidden, int64_t heads, int64_t mlp_ratio);
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

  // x [B,C,T,H,W]; t [B] in [0, 1] (1 = pure noise); text [B,S,text_dim]; text_mask [B,S] (1 =
  // token, 0 = padding; undefined = all tokens); fps [B]; cond_mask [B,T] bool or undefined.
  // Throws Error(invalid_argument) on shape mismatches, naming the argument.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& text,
                        const torch::Tensor& text_mask, const torch::Tensor& fps,
                        const torch::Tensor& cond_mask = {});

  // Replaces the captions of the samples where drop[b] is true by the learned null caption (all of
  // its tokens valid). Returns (text, text_mask). Used for classifier-free guidance dropout and for
  // the unconditional branch at sampling time.
  std::pair<torch::Tensor, torch::Tensor> drop_captions(const torch::Tensor& text, const torch::Tensor& text_mask,
                                                        const torch::Tensor& drop);

  // The conditioning embedding c [B, d] (timestep + fps) that adaLN-single reads.
  torch::Tensor condition(const torch::Tensor& t, const torch::Tensor& fps);

  // Activation recomputation of the blocks (model/config.h).
  void set_recompute(Recompute mode) { recompute_ = mode; }
  Recompute recompute() const { return recompute_; }

  // Splits this model across ranks (dit_parallel.h): keeps only this rank's tensor-parallel piece of every
  // split parameter (in place, so optimisers and checkpoints see the shard) and runs the blocks through
  // `ops`. Call once, on a freshly built (or fully loaded) model, before any optimiser is created. Throws
  // Error(invalid_argument) when heads are not divisible by tp·cp.
  void set_parallel(std::shared_ptr<DiTParallelOps> ops);
  DiTParallelOps* parallel() const { return parallel_.get(); }
  const DiTConfig& config() const { return config_; }

  torch::nn::Conv3d x_embedder{nullptr};
  ScalarEmbedder t_embedder{nullptr}, fps_embedder{nullptr};
  torch::nn::Linear t_block{nullptr};
  torch::nn::LayerNorm y_pre_norm{nullptr}, y_post_norm{nullptr};
  Mlp y_embedder{nullptr};
  torch::Tensor null_caption;  // [text_tokens, text_dim]
  torch::Tensor start_token, end_token;
  torch::nn::ModuleList blocks{nullptr};
  torch::Tensor final_scale_shift_table;  // [2, d]
  torch::nn::Linear final_linear{nullptr};

 private:
  torch::Tensor run_block(DiTBlock& block, const torch::Tensor& x, const BlockContext& context);
  DiTConfig config_;
  Recompute recompute_ = Recompute::none;
  std::shared_ptr<DiTParallelOps> parallel_;
};
TORCH_MODULE(DiT);

// Number of trainable parameter elements of any module (to compare with the analytic counts).
[[nodiscard]] int64_t parameter_count(const torch::nn::Module& module);

}  // namespace mugv
