// Fused operations of the DiT: one pass over memory where the reference composes several LibTorch
// operations, each with its own backward pass. They compute what the reference computes (model/dit.h) to
// the rounding of the element type (arithmetic in float, rounded once) and are used only for the inputs
// they cover; every other input takes the reference.
//
// On the CPU they are parallel loops; on CUDA, the kernels of model/kernels/ (built when CMake finds nvcc
// beside a CUDA LibTorch: cuda_kernels_built()). Both run the same row functions (kernels/rope_math.h,
// kernels/norm_rope_math.h), so the CPU tests check the kernels' arithmetic.
// MUGV_FUSED_KERNELS=0 in the environment, or set_fused_kernels(false), turns them off, for a
// comparison with the reference (mugv-device-check, bench_train_step --fused off).
#pragma once

#include "model/kernels/norm_modulate_math.h"
#include "model/rope_table.h"

#include <torch/torch.h>

#include <optional>

namespace mugv {

[[nodiscard]] bool fused_kernels_enabled();
void set_fused_kernels(bool enabled);
// Whether this build can run the fused operations on CUDA tensors.
[[nodiscard]] bool cuda_kernels_built();

// Whether fused_rope covers x and rope: fused operations on, x [B, H, N, head_dim] (even head_dim, any
// strides) of float32 / bfloat16 / float16 (float64 on the CPU), tables float32 [N, P] or [B, N, P] with
// P <= head_dim / 2 on x's device and needing no gradient, and for CUDA the kernels built.
[[nodiscard]] bool fused_rope_applies(const torch::Tensor& x, const RopeTable& rope);
// apply_rope (model/dit.h) in one pass, with a backward that is the rotation by the opposite angles; the
// result is contiguous [B, H, N, head_dim]. Requires fused_rope_applies(x, rope).
[[nodiscard]] torch::Tensor fused_rope(const torch::Tensor& x, const RopeTable& rope);
// How many times fused_rope has run in this process (forward passes; tests and benchmarks read it to know
// the fused form was taken).
[[nodiscard]] int64_t fused_rope_calls();

// Whether fused_norm_rope covers these: fused_rope_applies(x, rope), and weight float32 [head_dim] on x's
// device.
[[nodiscard]] bool fused_norm_rope_applies(const torch::Tensor& x, const torch::Tensor& weight,
                                           const RopeTable& rope);
// The attention's query / key path (model/dit.h SelfAttention) in one pass: apply_rope(RMSNorm(x)·multiplier,
// rope) with the RMSNorm's weight and eps, and a backward for x and the weight (the weight's as one
// deterministic sum of per-row shares). The result is contiguous [B, H, N, head_dim] in x's dtype (the
// unfused path promotes a bf16 x to the float32 weight's type; the attention casts back under autocast).
// Requires fused_norm_rope_applies(x, weight, rope).
[[nodiscard]] torch::Tensor fused_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                                            double multiplier, const RopeTable& rope);
[[nodiscard]] int64_t fused_norm_rope_calls();

// Where a block's tokens sit in the whole sequence, which decides their adaLN modulation group
// (model/kernels/norm_modulate_math.h): `frames` patched frames, x holding the tokens [offset, offset + n)
// of `total`.
struct TokenLayout {
  int64_t frames = 0, offset = 0, total = 0;
};
// The kernels' description of x [B, n, d] with `groups` modulation groups laid out as `layout` says.
[[nodiscard]] kernels::ModulationShape modulation_shape(const torch::Tensor& x, int64_t groups,
                                                        const TokenLayout& layout);

// Whether fused_norm_modulate covers these: fused operations on, x [B, n, d] of float32 / bfloat16 /
// float16 (float64 on the CPU; CUDA: the kernels built), out_type x's type (or none) or, for a float32 x,
// bfloat16 / float16, scale and shift floating [B, G, d] on x's device with G = 1 or G = layout.frames + 2
// (then n tokens from layout.offset within layout.total, whose total − 2 frame tokens split evenly into the
// frames).
[[nodiscard]] bool fused_norm_modulate_applies(const torch::Tensor& x, const torch::Tensor& scale,
                                               const torch::Tensor& shift, const TokenLayout& layout,
                                               std::optional<torch::ScalarType> out_type = std::nullopt);
// A block's adaLN input in one pass: LayerNorm(x) (no affine, eps) · (1 + scale_g) + shift_g with g the
// token's group (model/dit.cpp modulate), and a backward for x, scale and shift (theirs summed over each
// group's tokens in a fixed order: deterministic). The result is contiguous [B, n, d] of out_type (default
// x's): under autocast the DiT asks for the type the next matrix product reads, which then casts nothing (the
// unfused path writes float32 and the product casts it). Autograd keeps x and two floats a row rather than
// x and the normalised x. Requires fused_norm_modulate_applies(x, scale, shift, layout, out_type).
[[nodiscard]] torch::Tensor fused_norm_modulate(const torch::Tensor& x, const torch::Tensor& scale,
                                                const torch::Tensor& shift, double eps,
                                                const TokenLayout& layout,
                                                std::optional<torch::ScalarType> out_type = std::nullopt);
[[nodiscard]] int64_t fused_norm_modulate_calls();

// Whether fused_gated_residual covers these: as fused_norm_modulate_applies(x, gate, gate, layout, h's type)
// (so h of x's type, or a 16-bit type with a float32 x), and h of x's shape and device.
[[nodiscard]] bool fused_gated_residual_applies(const torch::Tensor& x, const torch::Tensor& h,
                                                const torch::Tensor& gate, const TokenLayout& layout);
// A block's residual update x + h · gate_g (the attention's and the MLP's outputs, gated per token group) in
// one pass, in x's dtype (the unfused product promotes a bf16 h against a float32 gate, then adds), with a
// backward for x (the incoming gradient itself), h and the gate (summed over each group's tokens in a fixed
// order). Autograd keeps h and the gate, as the unfused product does. Requires fused_gated_residual_applies.
[[nodiscard]] torch::Tensor fused_gated_residual(const torch::Tensor& x, const torch::Tensor& h,
                                                 const torch::Tensor& gate, const TokenLayout& layout);
[[nodiscard]] int64_t fused_gated_residual_calls();

}  // namespace mugv
