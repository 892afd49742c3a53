// The arithmetic of the fused per-head RMSNorm + 3D RoPE of the attention's queries and keys
// (model/fused_ops.h fused_norm_rope), one row (one head of one token) at a time, shared by the CPU loop and
// the CUDA kernel (one thread per row).
//
// Forward, for a row x of head_dim values: r = 1/sqrt(mean(x²) + eps), z_i = (w_i·(x_i·r))·m (the order of
// model/dit.h RMSNorm then the query multiplier m), y = z with pairs (2i, 2i+1), i < pairs, rotated as in
// rope_math.h. Backward, from g = dL/dy: u = g rotated back (the opposite angles), a_i = u_i·m·w_i (dL/dn
// for n = x·r), dL/dx = r·(a − n·mean(a·n)), and each row's share of dL/dw, (u_i·m)·n_i, written to its
// own row of a [rows, head_dim] buffer that the caller sums over rows (in a fixed order: deterministic).
// Arithmetic in Element<T>::acc (host_device.h), rounded once on the store.
#pragma once

#include "model/kernels/rope_math.h"

namespace mugv::kernels {

template <class T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline Acc rms_inverse(const T* x, int64_t head_dim, Acc eps) {
  const Acc squares = lane_sum<Acc>(head_dim, [&](int64_t i) {
    const Acc v = Element<T>::load(x[i]);
    return v * v;
  });
  return inverse_sqrt(squares / static_cast<Acc>(head_dim) + eps);
}

// y = rope(m·w ⊙ rmsnorm(x)) for one row; cos/sin point at the row's angles.
template <class T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void norm_rope_forward_row(const T* x, T* y, const float* weight, Acc eps,
                                                   Acc multiplier, const float* cos, const float* sin,
                                                   int64_t head_dim, int64_t pairs) {
  const Acc r = rms_inverse<T, Acc>(x, head_dim, eps);
  auto z = [&](int64_t i) { return static_cast<Acc>(weight[i]) * (Element<T>::load(x[i]) * r) * multiplier; };
  for (int64_t p = 0; p < pairs; ++p) {
    Acc a, b;
    rope_rotate(z(2 * p), z(2 * p + 1), static_cast<Acc>(cos[p]), static_cast<Acc>(sin[p]), a, b);
    y[2 * p] = Element<T>::store(a);
    y[2 * p + 1] = Element<T>::store(b);
  }
  for (int64_t i = 2 * pairs; i < head_dim; ++i) y[i] = Element<T>::store(z(i));
}

// dL/dx of one row into grad_x, and the row's share of dL/dw into grad_weight_row (nullptr: not wanted).
template <class T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void norm_rope_backward_row(const T* x, const T* grad, T* grad_x,
                                                    float* grad_weight_row, const float* weight, Acc eps,
                                                    Acc multiplier, const float* cos, const float* sin,
                                                    int64_t head_dim, int64_t pairs) {
  const Acc r = rms_inverse<T, Acc>(x, head_dim, eps);
  // u_i: the upstream gradient rotated back, one element (its pair's rotation) at a time.
  auto u = [&](int64_t i) {
    const int64_t p = i / 2;
    if (p >= pairs) return Element<T>::load(grad[i]);
    Acc a, b;
    rope_rotate(Element<T>::load(grad[2 * p]), Element<T>::load(grad[2 * p + 1]), static_cast<Acc>(cos[p]),
                -static_cast<Acc>(sin[p]), a, b);
    return i % 2 == 0 ? a : b;
  };
  // Σ a_i·n_i
  const Acc dot = lane_sum<Acc>(head_dim, [&](int64_t i) {
    return u(i) * multiplier * static_cast<Acc>(weight[i]) * (Element<T>::load(x[i]) * r);
  });
  const Acc mean_dot = dot / static_cast<Acc>(head_dim);
  for (int64_t i = 0; i < head_dim; ++i) {
    const Acc n = Element<T>::load(x[i]) * r, scaled = u(i) * multiplier;
    grad_x[i] = Element<T>::store(r * (scaled * static_cast<Acc>(weight[i]) - n * mean_dot));
    if (grad_weight_row) grad_weight_row[i] = static_cast<float>(scaled * n);
  }
}

}  // namespace mugv::kernels
