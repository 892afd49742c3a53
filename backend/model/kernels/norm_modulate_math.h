// The arithmetic of the fused adaLN input of the DiT blocks (model/fused_ops.h fused_norm_modulate),
// shared by its CPU loop and its CUDA kernels:
//
//   y = LayerNorm(x)·(1 + scale_g) + shift_g
//
// with the LayerNorm without affine (biased variance, eps inside the root, as at::layer_norm) over the last
// dimension, and scale and shift the rows of the token's modulation group g (model/dit.h BlockContext: one
// group for every token, or the start token, one group per patched frame, the end token).
//
// x and y are contiguous [B, n, d] (y in x's type or, from a float32 x under autocast, in bf16 / fp16): the
// tokens [offset, offset + n) of a sequence of `total` (all of it in one process, a slice under sequence /
// context parallel); a row is one token of one sample. scale and shift are float [B, G, d], contiguous.
// Backward, from g = dL/dy: with s = 1 + scale, x̂ = (x − mean)·rstd and u = g·s, dL/dx = rstd·(u − mean(u) −
// x̂·mean(u·x̂)); dL/dshift_g and dL/dscale_g sum g and g·x̂ over the group's tokens: each row's g·x̂ goes to its
// own row of a buffer that the caller sums (in a fixed order, so the result is deterministic). Arithmetic in
// Element<T>::acc (host_device.h), rounded once on the store.
#pragma once

#include "model/kernels/host_device.h"

#include <cstdint>

namespace mugv::kernels {

struct ModulationShape {
  int64_t batch = 0, tokens = 0, dim = 0;  // x [B, n, d]
  int64_t groups = 1;                      // G: 1, or frames + 2
  int64_t frames = 0;                      // patched frames of the whole sequence
  int64_t offset = 0, total = 0;           // x's first token in the whole sequence, and its length

  MUGV_HOST_DEVICE int64_t rows() const { return batch * tokens; }
  MUGV_HOST_DEVICE int64_t tokens_per_frame() const { return frames > 0 ? (total - 2) / frames : 0; }
};

// The modulation group of token `position` of the whole sequence.
MUGV_HOST_DEVICE inline int64_t modulation_group(const ModulationShape& s, int64_t position) {
  if (s.groups == 1 || position == 0) return 0;
  if (position == s.total - 1) return s.frames + 1;
  return 1 + (position - 1) / s.tokens_per_frame();
}

// Where row r = b·n + t finds its scale and shift rows.
MUGV_HOST_DEVICE inline int64_t modulation_offset(const ModulationShape& s, int64_t row) {
  const int64_t b = row / s.tokens, t = row % s.tokens;
  return (b * s.groups + modulation_group(s, s.offset + t)) * s.dim;
}

// One element of y from its row's statistics.
template <class Acc>
MUGV_HOST_DEVICE inline Acc norm_modulate_value(Acc x, Acc mean, Acc rstd, Acc scale, Acc shift) {
  return (x - mean) * rstd * (Acc(1) + scale) + shift;
}

// One element of dL/dx from x̂, u = g·(1 + scale) and the row means of u and u·x̂.
template <class Acc>
MUGV_HOST_DEVICE inline Acc norm_modulate_input_grad(Acc normed, Acc u, Acc rstd, Acc mean_u,
                                                     Acc mean_u_normed) {
  return rstd * (u - mean_u - normed * mean_u_normed);
}

// Mean and 1/sqrt(variance + eps) of one row, in two passes (the deviations summed about the mean).
template <class T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void row_moments(const T* x, int64_t dim, Acc eps, Acc& mean, Acc& rstd) {
  mean = lane_sum<Acc>(dim, [&](int64_t i) { return Element<T>::load(x[i]); }) / static_cast<Acc>(dim);
  const Acc squares = lane_sum<Acc>(dim, [&](int64_t i) {
    const Acc deviation = Element<T>::load(x[i]) - mean;
    return deviation * deviation;
  });
  rstd = inverse_sqrt(squares / static_cast<Acc>(dim) + eps);
}

// y of one row (in U: x's type, or the narrower type the next matrix product reads under autocast), and its
// mean and rstd for the backward.
template <class T, class U = T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void norm_modulate_forward_row(const T* x, U* y, const float* scale,
                                                       const float* shift, int64_t dim, Acc eps, Acc& mean,
                                                       Acc& rstd) {
  row_moments<T, Acc>(x, dim, eps, mean, rstd);
  for (int64_t i = 0; i < dim; ++i)
    y[i] = Element<U>::store(norm_modulate_value<Acc>(
        Element<T>::load(x[i]), mean, rstd, static_cast<Acc>(scale[i]), static_cast<Acc>(shift[i])));
}

// dL/dx of one row into grad_x, and the row's g·x̂ into scale_share (float [d]; nullptr: not wanted). grad
// is in y's type U.
template <class T, class U = T, class Acc = typename Element<T>::acc>
MUGV_HOST_DEVICE inline void norm_modulate_backward_row(const T* x, const U* grad, T* grad_x,
                                                        float* scale_share, const float* scale, int64_t dim,
                                                        Acc mean, Acc rstd) {
  auto normed = [&](int64_t i) { return (Element<T>::load(x[i]) - mean) * rstd; };
  auto u = [&](int64_t i) { return Element<U>::load(grad[i]) * (Acc(1) + static_cast<Acc>(scale[i])); };
  const Acc mean_u = lane_sum<Acc>(dim, u) / static_cast<Acc>(dim);
  const Acc mean_u_normed =
      lane_sum<Acc>(dim, [&](int64_t i) { return u(i) * normed(i); }) / static_cast<Acc>(dim);
  for (int64_t i = 0; i < dim; ++i) {
    const Acc n = normed(i);
    grad_x[i] = Element<T>::store(norm_modulate_input_grad<Acc>(n, u(i), rstd, mean_u, mean_u_normed));
    if (scale_share) scale_share[i] = static_cast<float>(Element<U>::load(grad[i]) * n);
  }
}

// The runs of x's tokens that share modulation rows, in order, as visit(first, length, group, whole_frames):
// tokens [first, first + length) of x, either all of modulation group `group` (whole_frames == 0) or
// `whole_frames` whole frames, groups group … group + whole_frames − 1 (tokens_per_frame() tokens each).
// One group: one run. A whole sequence: the start token, every frame in one run, the end token.
template <class Visit>
inline void for_each_modulation_run(const ModulationShape& s, Visit&& visit) {
  if (s.groups == 1) {
    visit(int64_t(0), s.tokens, int64_t(0), int64_t(0));
    return;
  }
  const int64_t per_frame = s.tokens_per_frame(), end = s.offset + s.tokens, frames_end = s.total - 1;
  for (int64_t position = s.offset; position < end;) {
    const int64_t first = position - s.offset;
    if (position == 0 || position == frames_end) {
      visit(first, int64_t(1), modulation_group(s, position), int64_t(0));
      position += 1;
      continue;
    }
    const int64_t frame = (position - 1) / per_frame, frame_begin = 1 + frame * per_frame;
    const int64_t limit = end < frames_end ? end : frames_end;
    if (position == frame_begin && limit - position >= per_frame) {
      const int64_t k = (limit - position) / per_frame;
      visit(first, k * per_frame, 1 + frame, k);
      position += k * per_frame;
    } else {
      const int64_t next = frame_begin + per_frame < limit ? frame_begin + per_frame : limit;
      visit(first, next - position, 1 + frame, int64_t(0));
      position = next;
    }
  }
}

}  // namespace mugv::kernels
