#include "model/dit.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/compute.h"
#include "model/fused_ops.h"
#include "model/lora.h"

#include <torch/version.h>

#include <cmath>
#include <string>

namespace mugv {

namespace F = torch::nn::functional;

namespace {

void init_linear(torch::nn::Linear& linear, double std) {
  torch::NoGradGuard no_grad;
  if (std > 0) {
    linear->weight.normal_(0.0, std);
  } else {
    linear->weight.zero_();
  }
  if (linear->bias.defined()) linear->bias.zero_();
}

[[noreturn]] void bad_input(const std::string& name, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, name, message);
}

// x·(1 + scale) + shift, or x·gate when shift is undefined, where scale/shift are per group [B, G, d].
// G == 1 broadcasts over every token. Otherwise group 0 is the start token, groups 1..T the frames and group
// T+1 the end token, for x holding the tokens `layout` says (model/kernels/norm_modulate_math.h). Runs of
// whole frames are modulated as one broadcast view, so the whole sequence costs three pieces, never a [B, N,
// d] table of per-token values.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& shift,
                       const TokenLayout& layout, bool gate) {
  auto apply = [&](const torch::Tensor& part, const torch::Tensor& s, const torch::Tensor& b) {
    if (gate) return part * s;
    return torch::addcmul(b, part, 1 + s);
  };
  if (scale.size(1) == 1) return apply(x, scale, shift);
  const auto shape = modulation_shape(x, scale.size(1), layout);
  auto group = [&](const torch::Tensor& v, int64_t begin, int64_t length) {
    return v.defined() ? v.narrow(1, begin, length) : v;
  };
  std::vector<torch::Tensor> pieces;
  kernels::for_each_modulation_run(
      shape, [&](int64_t first, int64_t length, int64_t g, int64_t whole_frames) {
        const auto part = x.narrow(1, first, length);
        if (whole_frames == 0) {
          pieces.push_back(apply(part, group(scale, g, 1), group(shift, g, 1)));
          return;
        }
        auto frames = part.view({shape.batch, whole_frames, shape.tokens_per_frame(), shape.dim});
        auto b = shift.defined() ? group(shift, g, whole_frames).unsqueeze(2) : shift;
        pieces.push_back(apply(frames, group(scale, g, whole_frames).unsqueeze(2), b)
                             .reshape({shape.batch, length, shape.dim}));
      });
  return pieces.size() == 1 ? pieces[0] : torch::cat(pieces, 1);
}

// LayerNorm (no affine) and the adaLN modulation of a block's input: in one pass where fused_norm_modulate
// covers it (model/fused_ops.h), else as the two steps.
torch::Tensor norm_and_modulate(const torch::Tensor& x, const torch::Tensor& scale,
                                const torch::Tensor& shift, const TokenLayout& layout) {
  constexpr double eps = 1e-6;
  // Under autocast the fused form writes the type the attention's qkv / the MLP's fc1 reads: no cast there.
  std::optional<torch::ScalarType> out_type;
  if (x.scalar_type() == torch::kFloat32) out_type = autocast_matmul_type(x.device().type());
  if (fused_norm_modulate_applies(x, scale, shift, layout, out_type))
    return fused_norm_modulate(x, scale, shift, eps, layout, out_type);
  return norm_modulate_reference(x, scale, shift, eps, layout);
}

// A block's gated residual update x + h·gate: in one pass where fused_gated_residual covers it
// (model/fused_ops.h), else as the product and the sum.
torch::Tensor add_gated(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& gate,
                        const TokenLayout& layout) {
  if (fused_gated_residual_applies(x, h, gate, layout)) return fused_gated_residual(x, h, gate, layout);
  return gated_residual_reference(x, h, gate, layout);
}

// A query's or key's per-head RMSNorm, multiplier and 3D RoPE: in one pass where fused_norm_rope covers
// it (model/fused_ops.h), else as the three steps.
torch::Tensor norm_and_rotate(const torch::Tensor& x, RMSNormImpl& norm, double multiplier,
                              const RopeTable& rope) {
  if (fused_norm_rope_applies(x, norm.weight, rope))
    return fused_norm_rope(x, norm.weight, norm.eps(), multiplier, rope);
  auto normed = norm.forward(x);
  if (multiplier != 1.0) normed = normed * multiplier;
  return apply_rope(normed, rope);
}

// The attention core recomputed in backward (selective recomputation): only q, k, v are kept, not the
// [B, H, N, N] scores and probabilities.
struct AttentionRecompute : public torch::autograd::Function<AttentionRecompute> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor q, torch::Tensor k,
                               torch::Tensor v) {
    ctx->save_for_backward({q, k, v});
    return attention(q, k, v);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> inputs;
    for (auto& t : saved) inputs.push_back(t.detach().requires_grad_(true));
    torch::Tensor out;
    {
      torch::AutoGradMode enable_grad(true);
      out = attention(inputs[0], inputs[1], inputs[2]);
    }
    return torch::autograd::grad({out}, inputs, {grads[0]});
  }
};

torch::Tensor attention_core(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const BlockRuntime& runtime) {
  if (runtime.recompute_attention && torch::GradMode::is_enabled()) return AttentionRecompute::apply(q, k, v);
  return attention(q, k, v);
}

// y plus the adapters' output on `linear` for its input x (model/lora.h); y itself when there are none.
torch::Tensor with_lora(const torch::nn::Linear& linear, const torch::Tensor& x, torch::Tensor y,
                        const LoraSet* lora) {
  return lora ? lora->add_to(linear, x, std::move(y)) : y;
}

torch::Tensor apply_linear(torch::nn::Linear linear, const torch::Tensor& x, const BlockRuntime& runtime) {
  return with_lora(linear, x, linear(x), runtime.lora);
}

// Column-parallel input: the sequence slice is gathered over tensor parallel (identity in one process).
torch::Tensor enter_tensor_parallel(const torch::Tensor& x, const BlockRuntime& runtime) {
  return runtime.parallel ? runtime.parallel->gather_tensor_parallel(x) : x;
}

// Row-parallel output: the partial products are summed over tensor parallel and cut back to this rank's
// sequence slice; the bias is added once, after the sum.
torch::Tensor leave_tensor_parallel(const torch::Tensor& x, const torch::nn::Linear& linear,
                                    const BlockRuntime& runtime) {
  auto partial = torch::nn::functional::linear(x, linear->weight);
  if (runtime.parallel) partial = runtime.parallel->reduce_scatter_tensor_parallel(partial);
  // Adapters are refused on split models (DiTImpl::set_lora), so here x is the whole input.
  return with_lora(linear, x, linear->bias.defined() ? partial + linear->bias : partial, runtime.lora);
}

// Recomputes a block's forward during backward instead of keeping its activations
// (reentrant checkpointing, as torch.utils.checkpoint does). With a training block swap
// (model/block_offload.h) backward also brings the block's frozen weights back to the device first, with the
// previous block's copy ahead (backward runs the blocks in reverse), and drops them after; block 0 stays for
// the next step's forward, which starts there.
struct BlockCheckpoint : public torch::autograd::Function<BlockCheckpoint> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor modulation, torch::Tensor text, torch::Tensor rope_cos,
                               torch::Tensor rope_sin, torch::Tensor text_bias, int64_t frames,
                               int64_t token_offset, int64_t block_address, int64_t parallel_address,
                               int64_t lora_address, int64_t offload_address, int64_t block_index) {
    ctx->saved_data["block"] = block_address;
    ctx->saved_data["offload"] = offload_address;
    ctx->saved_data["index"] = block_index;
    ctx->saved_data["lora"] = lora_address;
    ctx->saved_data["frames"] = frames;
    ctx->saved_data["offset"] = token_offset;
    ctx->saved_data["parallel"] = parallel_address;
    ctx->save_for_backward({x, modulation, text, rope_cos, rope_sin, text_bias});
    auto* block = reinterpret_cast<DiTBlockImpl*>(block_address);
    return block->forward(x, context_of(ctx, modulation, text, rope_cos, rope_sin, text_bias));
  }

  static BlockContext context_of(torch::autograd::AutogradContext* ctx, const torch::Tensor& modulation,
                                 const torch::Tensor& text, const torch::Tensor& rope_cos,
                                 const torch::Tensor& rope_sin, const torch::Tensor& text_bias) {
    RopeTable rope;
    rope.cos = rope_cos;
    rope.sin = rope_sin;
    BlockContext c{modulation,
                   std::move(rope),
                   text,
                   text_bias,
                   ctx->saved_data["frames"].toInt(),
                   ctx->saved_data["offset"].toInt(),
                   {}};
    c.runtime.parallel = reinterpret_cast<DiTParallelOps*>(ctx->saved_data["parallel"].toInt());
    c.runtime.lora = reinterpret_cast<const LoraSet*>(ctx->saved_data["lora"].toInt());
    return c;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto* block = reinterpret_cast<DiTBlockImpl*>(ctx->saved_data["block"].toInt());
    auto leaf = [](const torch::Tensor& t) { return t.detach().requires_grad_(t.requires_grad()); };
    torch::Tensor x = saved[0].detach().requires_grad_(true);
    torch::Tensor modulation = leaf(saved[1]);
    torch::Tensor text = leaf(saved[2]);
    auto* offload = reinterpret_cast<BlockOffload*>(ctx->saved_data["offload"].toInt());
    const auto index = static_cast<size_t>(ctx->saved_data["index"].toInt());
    if (offload) offload->before_block(index, index > 0 ? std::optional<size_t>(index - 1) : std::nullopt);
    {
      torch::AutoGradMode enable_grad(true);
      torch::Tensor out = block->forward(x, context_of(ctx, modulation, text, saved[3], saved[4], saved[5]));
      torch::autograd::backward({out}, {grads[0]});
    }
    if (offload && index > 0) offload->after_block(index);
    torch::autograd::variable_list grads_in(13);  // one per forward input; the rest need none
    grads_in[0] = x.grad();
    grads_in[1] = modulation.grad();
    grads_in[2] = text.grad();
    return grads_in;
  }
};

}  // namespace

torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  auto freqs =
      torch::exp(-std::log(max_period) *
                 torch::arange(half, torch::TensorOptions().dtype(torch::kFloat32).device(t.device())) /
                 static_cast<double>(half));
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  auto embedding = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) embedding = torch::cat({embedding, torch::zeros_like(embedding.narrow(1, 0, 1))}, -1);
  return embedding;
}

torch::Tensor rope_angles(const torch::Tensor& positions, int64_t head_dim, double theta) {
  const int64_t pairs = head_dim / 6;
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(positions.device());
  // freq_j = 1 / theta^(6j / head_dim): each axis gets every third frequency of a 1D RoPE of head_dim.
  // Written in the release's float32 operation order, so the angles match it to the bit.
  auto freqs =
      1.0 / torch::pow(theta, torch::arange(0, pairs * 6, 6, options) / static_cast<double>(head_dim));
  auto pos = positions.to(torch::kFloat32);
  return torch::cat({pos.select(-1, 0).unsqueeze(-1) * freqs, pos.select(-1, 1).unsqueeze(-1) * freqs,
                     pos.select(-1, 2).unsqueeze(-1) * freqs},
                    -1);
}

torch::Tensor apply_rope(const torch::Tensor& x, const RopeTable& rope) {
  return fused_rope_applies(x, rope) ? fused_rope(x, rope) : apply_rope_reference(x, rope);
}

torch::Tensor apply_rope_reference(const torch::Tensor& x, const RopeTable& rope) {
  const int64_t head_dim = x.size(-1);
  const int64_t rotated = rope.pairs();
  auto sizes = x.sizes().vec();
  sizes.back() = head_dim / 2;
  sizes.push_back(2);
  auto pairs = x.reshape(sizes);
  // Per-sample tables [B, N, P] broadcast over the heads of x [B, H, N, hd].
  auto per_token = [&](const torch::Tensor& table) {
    return (table.dim() == 3 ? table.unsqueeze(1) : table).to(x.dtype());
  };
  auto cos = per_token(rope.cos), sin = per_token(rope.sin);
  auto head = pairs.narrow(-2, 0, rotated);
  auto a = head.select(-1, 0), b = head.select(-1, 1);
  auto out = torch::stack({a * cos - b * sin, a * sin + b * cos}, -1);
  if (rotated < head_dim / 2) out = torch::cat({out, pairs.narrow(-2, rotated, head_dim / 2 - rotated)}, -2);
  return out.flatten(-2);
}

torch::Tensor norm_modulate_reference(const torch::Tensor& x, const torch::Tensor& scale,
                                      const torch::Tensor& shift, double eps, const TokenLayout& layout) {
  return modulate(at::layer_norm(x, {x.size(-1)}, {}, {}, eps), scale, shift, layout, /*gate=*/false);
}

torch::Tensor gated_residual_reference(const torch::Tensor& x, const torch::Tensor& h,
                                       const torch::Tensor& gate, const TokenLayout& layout) {
  return x + modulate(h, gate, {}, layout, /*gate=*/true);
}

torch::Tensor dit_token_positions(int64_t frames, int64_t height, int64_t width) {
  return dit_token_positions(torch::arange(frames + 2, torch::kLong).view({1, frames + 2}), height, width)[0];
}

torch::Tensor dit_token_positions(const torch::Tensor& frame_indices, int64_t height, int64_t width) {
  auto options = torch::TensorOptions().dtype(torch::kFloat32);
  const int64_t batch = frame_indices.size(0), frames = frame_indices.size(1) - 2;
  auto time = frame_indices.to(torch::kCPU).clamp(0, kRopeTimePositions - 1).to(torch::kFloat32);  // [B, T+2]
  auto t = time.narrow(1, 1, frames).view({batch, frames, 1, 1}).expand({batch, frames, height, width});
  auto h = torch::arange(height, options).view({1, 1, height, 1}).expand({batch, frames, height, width});
  auto w = torch::arange(width, options).view({1, 1, 1, width}).expand({batch, frames, height, width});
  auto grid = torch::stack({h.reshape({batch, -1}), w.reshape({batch, -1}), t.reshape({batch, -1})}, 2);
  auto zeros = torch::zeros({batch, 1}, options);
  auto start = torch::stack({zeros, zeros, time.narrow(1, 0, 1)}, 2);
  auto end = torch::stack({torch::full({batch, 1}, float(height - 1), options),
                           torch::full({batch, 1}, float(width - 1), options), time.narrow(1, frames + 1, 1)},
                          2);
  return torch::cat({start, grid, end}, 1);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v,
                                          bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  if (bias.defined()) scores = scores + bias;
  return torch::matmul(torch::softmax(scores, -1), v);
#endif
}

torch::Tensor key_padding_bias(const torch::Tensor& mask, torch::ScalarType dtype) {
  // A large finite negative rather than -inf, so an all-padding row stays finite (uniform) instead of NaN.
  auto bias = torch::zeros(mask.sizes(), torch::TensorOptions().dtype(dtype).device(mask.device()));
  bias.masked_fill_(mask.to(torch::kBool).logical_not(), -1e9);
  return bias.view({mask.size(0), 1, 1, mask.size(1)});
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat32);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps_);
  return weight * normed.to(x.dtype());
}

ScalarEmbedderImpl::ScalarEmbedderImpl(int64_t hidden, int64_t frequency_dim)
    : frequency_dim_(frequency_dim) {
  torch::nn::Linear fc1(frequency_dim, hidden), fc2(hidden, hidden);
  init_linear(fc1, kInitStd);
  init_linear(fc2, kInitStd);
  mlp = register_module("mlp", torch::nn::Sequential(fc1, torch::nn::SiLU(), fc2));
}

torch::Tensor ScalarEmbedderImpl::forward(const torch::Tensor& values) {
  const auto dtype = mlp[0]->as<torch::nn::Linear>()->weight.scalar_type();
  return mlp->forward(timestep_embedding(values.reshape({-1}), frequency_dim_).to(dtype));
}

PatchEmbedderImpl::PatchEmbedderImpl(int64_t in_channels, int64_t hidden, int64_t patch_t, int64_t patch_h,
                                     int64_t patch_w) {
  proj = register_module(
      "proj", torch::nn::Conv3d(torch::nn::Conv3dOptions(in_channels, hidden, {patch_t, patch_h, patch_w})
                                    .stride({patch_t, patch_h, patch_w})));
  torch::NoGradGuard no_grad;
  proj->weight.normal_(0.0, kInitStd);
  proj->bias.zero_();
}

torch::Tensor PatchEmbedderImpl::forward(const torch::Tensor& x_in) {
  const auto& kernel = proj->options.kernel_size();
  auto pad = [](int64_t size, int64_t patch) { return (patch - size % patch) % patch; };
  const int64_t pad_t = pad(x_in.size(2), kernel->at(0)), pad_h = pad(x_in.size(3), kernel->at(1)),
                pad_w = pad(x_in.size(4), kernel->at(2));
  auto x = pad_t || pad_h || pad_w ? torch::constant_pad_nd(x_in, {0, pad_w, 0, pad_h, 0, pad_t}) : x_in;
  return proj(x).flatten(2).transpose(1, 2);
}

TextEmbedderImpl::TextEmbedderImpl(int64_t text_dim, int64_t hidden) {
  y_proj = register_module("y_proj", Mlp(text_dim, hidden, hidden));
}

torch::Tensor TextEmbedderImpl::forward(const torch::Tensor& text, const LoraSet* lora) {
  const int64_t text_dim = text.size(-1), hidden = y_proj->fc2->weight.size(0);
  BlockRuntime runtime;
  runtime.lora = lora;
  auto projected = y_proj(at::layer_norm(text, {text_dim}, {}, {}, 1e-6), runtime);
  return at::layer_norm(projected, {hidden}, {}, {}, 1e-6);
}

FinalLayerImpl::FinalLayerImpl(int64_t hidden, int64_t outputs) {
  scale_shift_table = register_parameter("scale_shift_table", torch::zeros({2, hidden}));
  linear = register_module("linear", torch::nn::Linear(hidden, outputs));
  init_linear(linear, 0.0);
}

SelfAttentionImpl::SelfAttentionImpl(int64_t hidden, int64_t heads, double q_multiplier)
    : head_dim_(hidden / heads), q_multiplier_(q_multiplier) {
  qkv = register_module("qkv", torch::nn::Linear(hidden, 3 * hidden));
  q_norm = register_module("q_norm", RMSNorm(hidden / heads));
  k_norm = register_module("k_norm", RMSNorm(hidden / heads));
  proj = register_module("proj", torch::nn::Linear(hidden, hidden));
  init_linear(qkv, kInitStd);
  init_linear(proj, kInitStd);
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x_in, const RopeTable& rope,
                                         const BlockRuntime& runtime) {
  auto x = enter_tensor_parallel(x_in, runtime);
  const int64_t batch = x.size(0), tokens = x.size(1);
  const int64_t heads = qkv->weight.size(0) / (3 * head_dim_);  // this rank's heads
  auto qkv_heads =
      apply_linear(qkv, x, runtime).view({batch, tokens, 3, heads, head_dim_}).permute({2, 0, 3, 1, 4});
  auto q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
  const bool ulysses = runtime.parallel && runtime.parallel->cp_size() > 1;
  if (ulysses) {  // [B, h, N/cp, hd] -> [B, h/cp, N, hd]: every token, fewer heads
    // Before the norms: RMSNorm acts on each head of each token alone, so it commutes with the exchange,
    // and norm, multiplier and RoPE then run as one fused pass.
    q = runtime.parallel->heads_to_sequence(q);
    k = runtime.parallel->heads_to_sequence(k);
    v = runtime.parallel->heads_to_sequence(v);
  }
  auto out = attention_core(norm_and_rotate(q, *q_norm, q_multiplier_, rope),
                            norm_and_rotate(k, *k_norm, 1.0, rope), v, runtime);
  if (ulysses) out = runtime.parallel->sequence_to_heads(out);
  return leave_tensor_parallel(out.transpose(1, 2).reshape({batch, tokens, heads * head_dim_}), proj,
                               runtime);
}

CrossAttentionImpl::CrossAttentionImpl(int64_t hidden, int64_t heads, double q_multiplier)
    : head_dim_(hidden / heads), q_multiplier_(q_multiplier) {
  q_linear = register_module("q_linear", torch::nn::Linear(hidden, hidden));
  kv_linear = register_module("kv_linear", torch::nn::Linear(hidden, 2 * hidden));
  q_norm = register_module("q_norm", RMSNorm(hidden / heads));
  k_norm = register_module("k_norm", RMSNorm(hidden / heads));
  proj = register_module("proj", torch::nn::Linear(hidden, hidden));
  init_linear(q_linear, kInitStd);
  init_linear(kv_linear, kInitStd);
  init_linear(proj, 0.0);  // the ungated residual starts at zero, so a fresh block is the identity
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& x_in, const torch::Tensor& context,
                                          const torch::Tensor& bias, const BlockRuntime& runtime) {
  auto x = enter_tensor_parallel(x_in, runtime);
  const int64_t batch = x.size(0), tokens = x.size(1), text = context.size(1);
  const int64_t heads = q_linear->weight.size(0) / head_dim_;  // this rank's heads
  auto q = q_norm(apply_linear(q_linear, x, runtime).view({batch, tokens, heads, head_dim_}).transpose(1, 2));
  auto kv = apply_linear(kv_linear, context, runtime)
                .view({batch, text, 2, heads, head_dim_})
                .permute({2, 0, 3, 1, 4});
  auto k = k_norm(kv[0]);
  if (q_multiplier_ != 1.0) q = q * q_multiplier_;
  auto out = attention(q, k, kv[1], bias);
  return leave_tensor_parallel(out.transpose(1, 2).reshape({batch, tokens, heads * head_dim_}), proj,
                               runtime);
}

MlpImpl::MlpImpl(int64_t in, int64_t hidden, int64_t out) {
  fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, out));
  init_linear(fc1, kInitStd);
  init_linear(fc2, kInitStd);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x, const BlockRuntime& runtime) {
  auto h = gelu(apply_linear(fc1, enter_tensor_parallel(x, runtime), runtime), /*tanh_approximation=*/true);
  if (!runtime.parallel) return apply_linear(fc2, h, runtime);
  return leave_tensor_parallel(h, fc2, runtime);
}

DiTBlockImpl::DiTBlockImpl(int64_t hidden, int64_t heads, int64_t mlp_ratio, double attention_multiplier) {
  scale_shift_table = register_parameter("scale_shift_table", torch::zeros({6, hidden}));
  attn = register_module("attn", SelfAttention(hidden, heads, attention_multiplier));
  cross_attn_norm = register_module(
      "cross_attn_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(1e-6).elementwise_affine(true)));
  cross_attn = register_module("cross_attn", CrossAttention(hidden, heads, attention_multiplier));
  mlp = register_module("mlp", Mlp(hidden, hidden * mlp_ratio, hidden));
}

torch::Tensor DiTBlockImpl::forward(const torch::Tensor& x, const BlockContext& c) {
  auto m = c.modulation + scale_shift_table.view({1, 1, 6, -1});  // [B, G, 6, d]
  auto part = [&](int64_t i) { return m.select(2, i); };
  const TokenLayout layout{c.frames, c.token_offset, c.rope.tokens()};

  auto h = attn(norm_and_modulate(x, part(1), part(0), layout), c.rope, c.runtime);
  auto out = add_gated(x, h, part(2), layout);
  out = out + cross_attn(cross_attn_norm(out), c.text, c.text_bias, c.runtime);
  h = mlp(norm_and_modulate(out, part(4), part(3), layout), c.runtime);
  return add_gated(out, h, part(5), layout);
}

DiTImpl::DiTImpl(const DiTConfig& config) : config_(config) {
  validate(config, "dit");
  const int64_t d = config.hidden;
  x_embedder = register_module(
      "x_embedder", PatchEmbedder(config.in_channels, d, config.patch_t, config.patch_h, config.patch_w));
  t_embedder = register_module("t_embedder", ScalarEmbedder(d, config.frequency_dim));
  fps_embedder = register_module("fps_embedder", ScalarEmbedder(d, config.frequency_dim));
  torch::nn::Linear adaln(d, 6 * d);
  init_linear(adaln, 0.0);
  t_block = register_module("t_block", torch::nn::Sequential(torch::nn::SiLU(), adaln));
  y_embedder = register_module("y_embedder", TextEmbedder(config.text_dim, d));
  if (config.null_caption) {
    null_caption = register_parameter("null_caption", torch::randn({config.text_tokens, config.text_dim}) /
                                                          std::sqrt(double(config.text_dim)));
  }
  start_token = register_parameter("start_token", torch::randn({d}) * 0.02);
  end_token = register_parameter("end_token", torch::randn({d}) * 0.02);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < config.depth; ++i)
    blocks->push_back(DiTBlock(d, config.heads, config.mlp_ratio, config.attention_multiplier));
  const int64_t patch_volume = int64_t(config.patch_t) * config.patch_h * config.patch_w;
  final_layer = register_module("final_layer", FinalLayer(d, patch_volume * dit_out_channels(config)));
}

torch::Tensor DiTImpl::condition(const torch::Tensor& timestep, const torch::Tensor& fps) {
  return t_embedder(timestep) + fps_embedder(fps);
}

std::pair<torch::Tensor, torch::Tensor> DiTImpl::drop_captions(const torch::Tensor& text,
                                                               const torch::Tensor& text_mask,
                                                               const torch::Tensor& drop,
                                                               const torch::Tensor& null_text,
                                                               const torch::Tensor& null_mask) {
  if (text.dim() != 3 || text.size(2) != config_.text_dim) {
    bad_input("text", "expected [B, S, " + std::to_string(config_.text_dim) + "], got " +
                          shape_string(text.sizes().vec()));
  }
  const int64_t tokens = text.size(1);
  torch::Tensor fill, fill_mask;  // [1, S, text_dim], [1, S]
  if (null_caption.defined()) {
    if (tokens != config_.text_tokens)
      bad_input("text", "expected " + std::to_string(config_.text_tokens) +
                            " tokens (the learned null caption's), got " + shape_string(text.sizes().vec()));
    fill = null_caption.to(text.dtype()).unsqueeze(0);
    fill_mask = torch::ones({1, tokens}, text.options());
  } else if (null_text.defined()) {
    // An encoded empty prompt stands in for the learned null caption: padded with masked tokens or cut to S.
    const int64_t have = null_text.size(1), keep = std::min(have, tokens);
    fill = torch::zeros({1, tokens, config_.text_dim}, text.options());
    fill.narrow(1, 0, keep).copy_(null_text.narrow(1, 0, keep));
    fill_mask = torch::zeros({1, tokens}, text.options());
    auto given = null_mask.defined() ? null_mask.to(text.dtype()) : torch::ones({1, have}, text.options());
    fill_mask.narrow(1, 0, keep).copy_(given.narrow(1, 0, keep));
  } else {
    throw Error(ErrorCode::unsupported, "dit",
                "this DiT has no learned null caption (the release layout): give an encoded empty or "
                "negative prompt");
  }
  auto d = drop.to(torch::kBool).to(text.device()).view({-1, 1});
  auto out_text = torch::where(d.unsqueeze(2), fill, text);
  auto mask = text_mask.defined() ? text_mask : torch::ones({text.size(0), tokens}, text.options());
  auto out_mask = torch::where(d, fill_mask.to(mask.dtype()), mask);
  return {out_text, out_mask};
}

Recompute DiTImpl::recompute_of(int64_t index) const {
  if (recomputed_blocks_.empty()) return recompute_;
  const bool listed =
      std::find(recomputed_blocks_.begin(), recomputed_blocks_.end(), index) != recomputed_blocks_.end();
  return listed ? recompute_ : Recompute::none;
}

torch::Tensor DiTImpl::run_block(DiTBlock& block, int64_t index, const torch::Tensor& x,
                                 const BlockContext& context) {
  if (!torch::GradMode::is_enabled()) return block->forward(x, context);
  // A training block swap keeps nothing of a block until backward (its weights leave the device).
  const bool swapped = offload_ && offload_->use() == OffloadUse::training;
  if (recompute_of(index) == Recompute::full || swapped) {
    // The checkpoint reaches the block's parameters only through its inputs' gradients. When no input
    // requires grad (a frozen base's embedders feed the first block) but the block trains (LoRA adapters),
    // its input becomes a leaf that does, or backward would never enter the block.
    torch::Tensor input = x;
    if (!x.requires_grad() && !context.modulation.requires_grad() && !context.text.requires_grad()) {
      const auto params = block->parameters();
      if (std::any_of(params.begin(), params.end(), [](const torch::Tensor& p) { return p.requires_grad(); }))
        input = x.detach().requires_grad_(true);
    }
    return BlockCheckpoint::apply(
        input, context.modulation, context.text, context.rope.cos, context.rope.sin, context.text_bias,
        context.frames, context.token_offset, reinterpret_cast<int64_t>(block.get()),
        reinterpret_cast<int64_t>(context.runtime.parallel), reinterpret_cast<int64_t>(context.runtime.lora),
        reinterpret_cast<int64_t>(swapped ? offload_.get() : nullptr), index);
  }
  return block->forward(x, context);
}

torch::Tensor DiTImpl::forward(const torch::Tensor& x, const torch::Tensor& timestep,
                               const torch::Tensor& text, const torch::Tensor& text_mask,
                               const torch::Tensor& fps, const torch::Tensor& cond_mask,
                               const torch::Tensor& frame_indices) {
  return forward_full(x, timestep, text, text_mask, fps, cond_mask, frame_indices)
      .narrow(1, 0, config_.in_channels);
}

torch::Tensor DiTImpl::forward_full(const torch::Tensor& x, const torch::Tensor& timestep,
                                    const torch::Tensor& text, const torch::Tensor& text_mask,
                                    const torch::Tensor& fps, const torch::Tensor& cond_mask,
                                    const torch::Tensor& frame_indices) {
  DiTPass pass = begin_pass(x, timestep, text, text_mask, fps, cond_mask, frame_indices);
  run_blocks(pass, 0, static_cast<int64_t>(blocks->size()));
  return finish_pass(pass);
}

void DiTImpl::set_pass_geometry(DiTPass& pass, const torch::Tensor& x) const {
  if (x.dim() != 5 || x.size(1) != config_.in_channels) {
    bad_input("x", "expected a latent [B, " + std::to_string(config_.in_channels) + ", T, H, W], got " +
                       shape_string(x.sizes().vec()));
  }
  auto ceil_div = [](int64_t size, int64_t patch) { return (size + patch - 1) / patch; };
  pass.batch = x.size(0);
  pass.frames_in = x.size(2);
  pass.height_in = x.size(3);
  pass.width_in = x.size(4);
  pass.frames = ceil_div(pass.frames_in, config_.patch_t);
  pass.height = ceil_div(pass.height_in, config_.patch_h);
  pass.width = ceil_div(pass.width_in, config_.patch_w);
  pass.out_dtype = x.scalar_type();
}

// The blocks' context from the pass's tensors: RoPE tables of the whole sequence, the caption's key bias and,
// under tensor / context parallel, the modulation and caption marked to sum their gradients over the ranks of
// the sequence (each rank's blocks use them with its tokens only).
void DiTImpl::set_block_context(DiTPass& pass, const torch::Tensor& frame_indices) const {
  const auto dtype = x_embedder->proj->weight.scalar_type();
  auto positions = frame_indices.defined() ? dit_token_positions(frame_indices, pass.height, pass.width)
                                           : dit_token_positions(pass.frames, pass.height, pass.width);
  auto angles =
      rope_angles(positions.to(pass.boundary.tokens.device()), config_.head_dim, config_.rope_theta);
  BlockContext context{
      pass.boundary.modulation,
      RopeTable(angles),  // cos and sin once for every block
      pass.boundary.text,       key_padding_bias(pass.boundary.text_mask, dtype), pass.frames, 0, {}};
  context.runtime.recompute_attention = recompute_ == Recompute::selective;  // run_blocks: per block
  context.runtime.lora = lora_ && !lora_->empty() ? lora_.get() : nullptr;
  if (parallel_) {
    context.token_offset = parallel_->sequence_shard() * pass.boundary.tokens.size(1);
    context.modulation = parallel_->sum_gradient_over_sequence(pass.boundary.modulation);
    context.text = parallel_->sum_gradient_over_sequence(pass.boundary.text);
    context.runtime.parallel = parallel_.get();
  }
  pass.context = std::move(context);
}

DiTPass DiTImpl::begin_pass(const torch::Tensor& x_in, const torch::Tensor& timestep,
                            const torch::Tensor& text, const torch::Tensor& text_mask,
                            const torch::Tensor& fps, const torch::Tensor& cond_mask,
                            const torch::Tensor& frame_indices) {
  DiTPass pass;
  set_pass_geometry(pass, x_in);
  const int64_t batch = pass.batch, frames_in = pass.frames_in;
  if (timestep.numel() != batch)
    bad_input("timestep", "expected " + std::to_string(batch) + " timesteps, got " +
                              shape_string(timestep.sizes().vec()));
  if (fps.numel() != batch)
    bad_input("fps", "expected " + std::to_string(batch) + " values, got " + shape_string(fps.sizes().vec()));
  if (text.dim() != 3 || text.size(0) != batch || text.size(2) != config_.text_dim) {
    bad_input("text", "expected [" + std::to_string(batch) + ", S, " + std::to_string(config_.text_dim) +
                          "], got " + shape_string(text.sizes().vec()));
  }
  if (text_mask.defined() &&
      (text_mask.dim() != 2 || text_mask.size(0) != batch || text_mask.size(1) != text.size(1))) {
    bad_input("text_mask", "expected [" + std::to_string(batch) + ", " + std::to_string(text.size(1)) +
                               "], got " + shape_string(text_mask.sizes().vec()));
  }
  if (cond_mask.defined() &&
      (cond_mask.dim() != 2 || cond_mask.size(0) != batch || cond_mask.size(1) != frames_in)) {
    bad_input("cond_mask", "expected [" + std::to_string(batch) + ", " + std::to_string(frames_in) +
                               "], got " + shape_string(cond_mask.sizes().vec()));
  }

  const auto dtype = x_embedder->proj->weight.scalar_type();
  const int64_t pt = config_.patch_t;
  const int64_t frames = pass.frames, height = pass.height, width = pass.width;
  const int64_t d = config_.hidden;
  if (frame_indices.defined() &&
      (frame_indices.dim() != 2 || frame_indices.size(0) != batch || frame_indices.size(1) != frames + 2)) {
    bad_input("frame_indices", "expected [" + std::to_string(batch) + ", " + std::to_string(frames + 2) +
                                   "] (start token, " + std::to_string(frames) + " frames, end token), got " +
                                   shape_string(frame_indices.sizes().vec()));
  }

  // adaLN-single for the noisy tokens (c) and for clean frames and the start and end tokens (c0, timestep 0).
  auto c = condition(timestep.to(dtype), fps.to(dtype));  // [B, d]
  auto c0 = condition(torch::zeros({batch}, c.options()), fps.to(dtype));
  auto noisy = torch::ones({batch, frames}, c.options().dtype(torch::kBool));
  if (cond_mask.defined()) {
    auto frame_cond = cond_mask.to(torch::kBool);
    if (frames * pt != frames_in)
      frame_cond =
          torch::constant_pad_nd(frame_cond.to(torch::kUInt8), {0, frames * pt - frames_in}).to(torch::kBool);
    // A patch of several frames is conditioning only when all of its frames are.
    noisy = frame_cond.view({batch, frames, pt}).all(2).logical_not();
  }
  auto edge = torch::zeros({batch, 1}, noisy.options());
  auto groups = torch::cat({edge, noisy, edge}, 1);  // [B, T+2]: start token, frames, end token
  const LoraSet* lora = lora_ && !lora_->empty() ? lora_.get() : nullptr;
  auto adaln_single = [&](const torch::Tensor& v) {
    if (!lora) return t_block->forward(v);
    torch::nn::Linear linear(t_block->ptr<torch::nn::LinearImpl>(1));
    const auto h = torch::silu(v);
    return with_lora(linear, h, linear(h), lora);
  };
  pass.boundary.modulation =
      torch::where(groups.view({batch, frames + 2, 1, 1}), adaln_single(c).view({batch, 1, 6, d}),
                   adaln_single(c0).view({batch, 1, 6, d}));
  pass.boundary.final_condition =
      torch::where(noisy.view({batch, frames, 1}), c.unsqueeze(1), c0.unsqueeze(1));  // [B, T, d]

  pass.boundary.text = y_embedder(text.to(dtype), lora);
  pass.boundary.text_mask =
      text_mask.defined() ? text_mask : torch::ones({batch, text.size(1)}, text.options());

  auto tokens = x_embedder(x_in.to(dtype));  // [B, N, d]
  tokens = torch::cat({start_token.to(dtype).view({1, 1, d}).expand({batch, 1, d}), tokens,
                       end_token.to(dtype).view({1, 1, d}).expand({batch, 1, d})},
                      1);
  if (parallel_) {
    const int64_t total = tokens.size(1), shards = parallel_->sequence_shards();
    if (total % shards != 0)
      bad_input("x", cat("the sequence has ", total, " tokens (", frames, "x", height, "x", width,
                         " patches + start and end), not divisible by tp x cp = ", shards));
    tokens = parallel_->scatter_sequence(tokens);
  }
  pass.boundary.tokens = tokens;
  set_block_context(pass, frame_indices);
  return pass;
}

DiTPass DiTImpl::resume_pass(const torch::Tensor& x, const DiTPassTensors& sent,
                             const torch::Tensor& frame_indices) const {
  DiTPass pass;
  set_pass_geometry(pass, x);
  pass.boundary = sent;
  set_block_context(pass, frame_indices);
  return pass;
}

void DiTImpl::run_blocks(DiTPass& pass, int64_t first, int64_t last) {
  if (first < 0 || last > static_cast<int64_t>(blocks->size()) || first > last)
    bad_input("blocks", cat("[", first, ", ", last, ") is not a range of the ", blocks->size(), " blocks"));
  // Under grad mode with a training block swap, backward comes next and starts at the last block: its
  // weights stay on the device and no copy wraps around to the first block.
  const bool backward_next =
      offload_ && offload_->use() == OffloadUse::training && torch::GradMode::is_enabled();
  for (int64_t i = first; i < last; ++i) {
    DiTBlock holder(blocks->ptr<DiTBlockImpl>(size_t(i)));
    if (offload_) {
      if (!backward_next)
        offload_->before_block(size_t(i));
      else
        offload_->before_block(size_t(i), i + 1 < last ? std::optional<size_t>(i + 1) : std::nullopt);
    }
    pass.context.runtime.recompute_attention = recompute_of(i) == Recompute::selective;
    pass.boundary.tokens = run_block(holder, i, pass.boundary.tokens, pass.context);
    if (offload_ && !(backward_next && i + 1 == last)) offload_->after_block(size_t(i));
  }
}

torch::Tensor DiTImpl::finish_pass(DiTPass& pass) {
  const int64_t batch = pass.batch, frames = pass.frames, height = pass.height, width = pass.width;
  const int64_t d = config_.hidden;
  const int64_t pt = config_.patch_t, ph = config_.patch_h, pw = config_.patch_w;
  auto tokens = parallel_ ? parallel_->gather_sequence(pass.boundary.tokens) : pass.boundary.tokens;
  const LoraSet* lora = pass.context.runtime.lora;

  auto video = tokens.narrow(1, 1, tokens.size(1) - 2);  // [B, T·H·W, d]
  auto final_m = pass.boundary.final_condition.unsqueeze(2) +
                 final_layer->scale_shift_table.view({1, 1, 2, d});  // [B, T, 2, d]
  auto per_frame = at::layer_norm(video, {d}, {}, {}, 1e-6).view({batch, frames, height * width, d});
  auto modulated =
      torch::addcmul(final_m.select(2, 0).unsqueeze(2), per_frame, 1 + final_m.select(2, 1).unsqueeze(2))
          .view({batch, frames * height * width, d});
  auto out =
      with_lora(final_layer->linear, modulated, final_layer->linear(modulated), lora);  // [B, N, pt·ph·pw·2C]
  const int64_t channels = dit_out_channels(config_);
  out = out.view({batch, frames, height, width, pt, ph, pw, channels})
            .permute({0, 7, 1, 4, 2, 5, 3, 6})
            .reshape({batch, channels, frames * pt, height * ph, width * pw});
  out = out.narrow(2, 0, pass.frames_in).narrow(3, 0, pass.height_in).narrow(4, 0, pass.width_in);
  return out.to(pass.out_dtype);
}

void DiTImpl::set_lora(std::shared_ptr<LoraSet> lora) {
  if (lora && parallel_)
    throw Error(ErrorCode::unsupported, "dit",
                "adapters on a model split by tensor parallel are not supported");
  lora_ = std::move(lora);
}

void DiTImpl::set_parallel(std::shared_ptr<DiTParallelOps> ops) {
  if (!ops) return;
  if (lora_ && !lora_->empty())
    throw Error(ErrorCode::unsupported, "dit", "a model with adapters cannot be split by tensor parallel");
  if (parallel_) throw Error(ErrorCode::invalid_argument, "dit", "the model is already split across ranks");
  const int shards = ops->tp_size() * ops->cp_size();
  if (config_.heads % shards != 0)
    bad_input("parallel layout",
              cat(config_.heads, " heads cannot be split over tp x cp = ", shards, " ranks"));
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters(true)) {
    auto role = tensor_parallel_role(item.key());
    if (role.split == TensorSplit::replicated) continue;
    item.value().set_data(shard_tensor(item.value(), role, ops->tp_rank(), ops->tp_size()));
  }
  parallel_ = std::move(ops);
}

TensorParallelRole tensor_parallel_role(const std::string& name) {
  std::string_view n = name;
  if (n.rfind("dit.", 0) == 0) n.remove_prefix(4);
  TensorParallelRole role;
  if (n.rfind("blocks.", 0) != 0) return role;  // embedders, final layer, text encoder: whole on every rank
  role.in_blocks = true;
  const auto dot = n.find('.', 7);
  if (dot == std::string_view::npos) return role;
  const std::string_view local = n.substr(dot + 1);
  auto column = [&](int parts) {
    role.split = TensorSplit::column;
    role.parts = parts;
  };
  if (local == "attn.qkv.weight" || local == "attn.qkv.bias")
    column(3);
  else if (local == "cross_attn.kv_linear.weight" || local == "cross_attn.kv_linear.bias")
    column(2);
  else if (local == "cross_attn.q_linear.weight" || local == "cross_attn.q_linear.bias" ||
           local == "mlp.fc1.weight" || local == "mlp.fc1.bias")
    column(1);
  else if (local == "attn.proj.weight" || local == "cross_attn.proj.weight" || local == "mlp.fc2.weight")
    role.split = TensorSplit::row;
  return role;
}

torch::Tensor shard_tensor(const torch::Tensor& full, const TensorParallelRole& role, int rank, int size) {
  if (role.split == TensorSplit::replicated || size == 1) return full;
  const int64_t dim = role.split == TensorSplit::column ? 0 : 1;
  const int64_t parts = role.split == TensorSplit::column ? role.parts : 1;
  if (full.size(dim) % (parts * size) != 0)
    throw Error(ErrorCode::invalid_argument, "tensor parallel",
                cat("size ", full.size(dim), " of a ", shape_string(full.sizes().vec()),
                    " tensor does not split into ", parts, " x ", size, " pieces"));
  std::vector<torch::Tensor> mine;
  for (const auto& part : full.chunk(parts, dim)) mine.push_back(part.chunk(size, dim)[rank]);
  return torch::cat(mine, dim).contiguous();
}

torch::Tensor unshard_tensor(const std::vector<torch::Tensor>& pieces, const TensorParallelRole& role) {
  if (pieces.empty()) throw Error(ErrorCode::invalid_argument, "tensor parallel", "no pieces to join");
  if (role.split == TensorSplit::replicated || pieces.size() == 1) return pieces[0];
  const int64_t dim = role.split == TensorSplit::column ? 0 : 1;
  const int64_t parts = role.split == TensorSplit::column ? role.parts : 1;
  std::vector<std::vector<torch::Tensor>> by_part(static_cast<size_t>(parts));
  for (const auto& piece : pieces) {
    auto chunks = piece.chunk(parts, dim);
    for (int64_t p = 0; p < parts; ++p)
      by_part[static_cast<size_t>(p)].push_back(chunks[static_cast<size_t>(p)]);
  }
  std::vector<torch::Tensor> joined;
  for (auto& part : by_part) joined.push_back(torch::cat(part, dim));
  return torch::cat(joined, dim);
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(true)) n += p.numel();
  return n;
}

}  // namespace mugv
