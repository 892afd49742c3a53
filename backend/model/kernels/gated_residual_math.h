// The arithmetic of the fused gated residual of the DiT blocks (model/fused_ops.h fused_gated_residual),
// shared by its CPU loop and its CUDA kernels:
//
//   out = x + h·gate_g
//
// with gate the row of the token's modulation group g (norm_modulate_math.h: the same groups and shapes). x
// and out are contiguous [B, n, d] of one type, h the same shape of h's type (x's, or a 16-bit type under
// autocast with a float32 x); gate float [B, G, d]. Backward, from g = dL/dout: dL/dx = g, dL/dh = g·gate_g,
// and dL/dgate_g sums g·h over the group's tokens: each row's g·h goes to its own row of a buffer that the
// caller sums in a fixed order. Arithmetic in float (double for double elements), rounded once on the store.
#pragma once

#include "model/kernels/norm_modulate_math.h"

namespace mugv::kernels {

template <class T, class U, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void gated_residual_forward_row(const T* x, const U* h, T* out, const float* gate,
                                                        int64_t dim) {
  for (int64_t i = 0; i < dim; ++i)
    out[i] = Element<T>::store(Element<T>::load(x[i]) +
                               static_cast<Acc>(Element<U>::load(h[i])) * static_cast<Acc>(gate[i]));
}

// dL/dh of one row into grad_h (h's type U), and the row's g·h into gate_share (float [d]; nullptr: not
// wanted).
template <class T, class U, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void gated_residual_backward_row(const T* grad, const U* h, U* grad_h,
                                                         float* gate_share, const float* gate, int64_t dim) {
  for (int64_t i = 0; i < dim; ++i) {
    const Acc g = Element<T>::load(grad[i]);
    if (grad_h)
      grad_h[i] = Element<U>::store(static_cast<typename Element<U>::acc>(g * static_cast<Acc>(gate[i])));
    if (gate_share) gate_share[i] = static_cast<float>(g * static_cast<Acc>(Element<U>::load(h[i])));
  }
}

}  // namespace mugv::kernels
