// The rotation tables of 3D RoPE: cos and sin of the angles (model/dit.h rope_angles). A forward pass builds
// them once (DiTImpl::set_block_context) and every block's queries and keys read them, forward and backward,
// instead of taking cos and sin of the same angles twice per block.
#pragma once

#include <torch/torch.h>

namespace mugv {

struct RopeTable {
  RopeTable() = default;
  // Implicit on purpose: wherever a table is expected, the angles [N, P] or [B, N, P] build one.
  RopeTable(const torch::Tensor& angles)  // NOLINT(google-explicit-constructor)
      : cos(angles.cos().contiguous()), sin(angles.sin().contiguous()) {}

  [[nodiscard]] bool defined() const { return cos.defined() && sin.defined(); }
  [[nodiscard]] int64_t tokens() const { return cos.size(-2); }  // N
  [[nodiscard]] int64_t pairs() const { return cos.size(-1); }   // P: rotated pairs of a head

  torch::Tensor cos, sin;  // [N, P] or [B, N, P], the angles' dtype and device, contiguous
};

}  // namespace mugv
