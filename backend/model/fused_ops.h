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

#include <torch/torch.h>

namespace mugv {

[[nodiscard]] bool fused_kernels_enabled();
void set_fused_kernels(bool enabled);
// Whether this build can run the fused operations on CUDA tensors.
[[nodiscard]] bool cuda_kernels_built();

// Whether fused_rope covers x and angles: fused operations on, x [B, H, N, head_dim] (even head_dim, any
// strides) of float32 / bfloat16 / float16 (float64 on the CPU), angles float32 [N, P] or
// [B, N, P] with P <= head_dim / 2 on x's device and needing no gradient, and for CUDA the kernels built.
[[nodiscard]] bool fused_rope_applies(const torch::Tensor& x, const torch::Tensor& angles);
// apply_rope (model/dit.h) in one pass, with a backward that is the rotation by the opposite angles; the
// result is contiguous [B, H, N, head_dim]. Requires fused_rope_applies(x, angles).
[[nodiscard]] torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& angles);
// How many times fused_rope has run in this process (forward passes; tests and benchmarks read it to know
// the fused form was taken).
[[nodiscard]] int64_t fused_rope_calls();

// Whether fused_norm_rope covers these: fused_rope_applies(x, angles), and weight float32 [head_dim] on x's
// device.
[[nodiscard]] bool fused_norm_rope_applies(const torch::Tensor& x, const torch::Tensor& weight,
                                           const torch::Tensor& angles);
// The attention's query / key path (model/dit.h SelfAttention) in one pass: apply_rope(RMSNorm(x)·multiplier,
// angles) with the RMSNorm's weight and eps, and a backward for x and the weight (the weight's as one
// deterministic sum of per-row shares). The result is contiguous [B, H, N, head_dim] in x's dtype (the
// unfused path promotes a bf16 x to the float32 weight's type; the attention casts back under autocast).
// Requires fused_norm_rope_applies(x, weight, angles).
[[nodiscard]] torch::Tensor fused_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                                            double multiplier, const torch::Tensor& angles);
[[nodiscard]] int64_t fused_norm_rope_calls();

}  // namespace mugv
