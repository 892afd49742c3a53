// The arithmetic of the fused 3D RoPE (model/fused_ops.h), shared by its CPU loop and its CUDA kernel.
//
// x is [B, H, N, head_dim] with any strides but a contiguous last dimension; it is read as rows
// (b, h, n) of head_dim values, pairs (2i, 2i + 1) rotated by angle i for i < pairs, the rest copied. The
// angle tables (cos and sin, float) are [N, pairs] shared by the batch or [B, N, pairs] per sample,
// contiguous. The output is contiguous [B, H, N, head_dim].
#pragma once

#include "model/kernels/host_device.h"

#include <cstdint>

namespace mugv::kernels {

struct RopeShape {
  int64_t batch = 0, heads = 0, tokens = 0, head_dim = 0;
  int64_t pairs = 0;                                 // rotated pairs, at most head_dim / 2
  int64_t stride_b = 0, stride_h = 0, stride_n = 0;  // of x, in elements
  bool per_sample = false;                           // tables [B, N, pairs] rather than [N, pairs]

  MUGV_HOST_DEVICE int64_t rows() const { return batch * heads * tokens; }
};

// Where row r = (b·H + h)·N + n starts in x, and where its angles start in the tables.
MUGV_HOST_DEVICE inline int64_t rope_input_offset(const RopeShape& s, int64_t row) {
  const int64_t n = row % s.tokens, h = (row / s.tokens) % s.heads, b = row / (s.tokens * s.heads);
  return b * s.stride_b + h * s.stride_h + n * s.stride_n;
}
MUGV_HOST_DEVICE inline int64_t rope_table_offset(const RopeShape& s, int64_t row) {
  const int64_t n = row % s.tokens, b = row / (s.tokens * s.heads);
  return ((s.per_sample ? b * s.tokens : 0) + n) * s.pairs;
}

// (a, b) rotated by the angle whose cosine is c and sine is s. The backward of a rotation is the
// rotation by the opposite angle: the same call with -s.
template <class T>
MUGV_HOST_DEVICE inline void rope_rotate(T a, T b, T c, T s, T& out_a, T& out_b) {
  out_a = a * c - b * s;
  out_b = a * s + b * c;
}

}  // namespace mugv::kernels
