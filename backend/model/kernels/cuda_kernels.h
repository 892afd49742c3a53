// The fused CUDA kernels, behind a header that needs neither LibTorch nor the CUDA toolkit: the library
// (cuda_kernels.cu) is built wherever CMake finds nvcc, also on machines without a GPU (so CI compiles
// and links it), and model/fused_ops.cpp calls it when LibTorch was built with CUDA.
//
// Every launcher returns nullptr on success, or the CUDA runtime's message for the failure (no device, no
// driver, a bad launch); nothing here throws, and nothing here synchronises the device.
#pragma once

#include "model/kernels/gated_residual_math.h"
#include "model/kernels/norm_modulate_math.h"
#include "model/kernels/norm_rope_math.h"
#include "model/kernels/rope_math.h"

namespace mugv::kernels {

enum class ElementType { float32, float16, bfloat16 };

// The CUDA devices the runtime sees; 0 with *error set (when error is given) where it cannot be used.
int cuda_device_count(const char** error);

// out = x rotated by the tables (inverse: by the opposite angles), as rope_math.h describes; x, out, cos
// and sin are device pointers, stream a cudaStream_t (nullptr: the legacy default stream).
const char* rope_rotate_cuda(const void* x, void* out, const float* cos, const float* sin,
                             const RopeShape& shape, ElementType type, bool inverse, void* stream);

// y = rope(m·w ⊙ rmsnorm(x)) (norm_rope_math.h): x as `shape` describes (strided), y contiguous
// [B, H, N, head_dim], weight float [head_dim], cos/sin as for rope_rotate_cuda.
const char* norm_rope_forward_cuda(const void* x, void* y, const float* weight, float eps, float multiplier,
                                   const float* cos, const float* sin, const RopeShape& shape,
                                   ElementType type, void* stream);
// Its backward: grad (contiguous [B, H, N, head_dim]) into grad_x (the same) and, unless nullptr, each row's
// share of the weight's gradient into grad_weight_rows (float [rows, head_dim]).
const char* norm_rope_backward_cuda(const void* x, const void* grad, void* grad_x, float* grad_weight_rows,
                                    const float* weight, float eps, float multiplier, const float* cos,
                                    const float* sin, const RopeShape& shape, ElementType type, void* stream);

// y = LayerNorm(x)·(1 + scale_g) + shift_g (norm_modulate_math.h): x and y contiguous [B, n, d] (x of `type`,
// y of `out_type`: the same, or bfloat16 / float16 from a float32 x), scale and shift float [B, G, d], and
// each row's mean and rstd into mean / rstd (float [rows]). One block per row.
const char* norm_modulate_forward_cuda(const void* x, void* y, const float* scale, const float* shift,
                                       float* mean, float* rstd, float eps, const ModulationShape& shape,
                                       ElementType type, ElementType out_type, void* stream);
// Its backward: grad (contiguous [B, n, d], of out_type) into grad_x (x's shape and type) and, unless
// nullptr, each row's g·x̂ into scale_share (float [rows, d]), from the forward's mean and rstd.
const char* norm_modulate_backward_cuda(const void* x, const void* grad, void* grad_x, float* scale_share,
                                        const float* scale, const float* mean, const float* rstd,
                                        const ModulationShape& shape, ElementType type, ElementType out_type,
                                        void* stream);

// out = x + h·gate_g (gated_residual_math.h): x and out contiguous [B, n, d] of `type`, h the same of
// `h_type` (type, or bfloat16 / float16 with a float32 x), gate float [B, G, d]. One thread per element.
const char* gated_residual_forward_cuda(const void* x, const void* h, void* out, const float* gate,
                                        const ModulationShape& shape, ElementType type, ElementType h_type,
                                        void* stream);
// Its backward: grad (contiguous [B, n, d], x's type) into grad_h (h's shape and type; nullptr: not wanted)
// and, unless nullptr, each row's g·h into gate_share (float [rows, d]).
const char* gated_residual_backward_cuda(const void* grad, const void* h, void* grad_h, float* gate_share,
                                         const float* gate, const ModulationShape& shape, ElementType type,
                                         ElementType h_type, void* stream);

}  // namespace mugv::kernels
