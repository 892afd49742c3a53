#pragma once
// The AdamW update of one contiguous fp32 range in a single pass over its four arrays, without LibTorch (the
// op sequence reads or writes them fourteen times). AdamW::update (train/optim.h) splits a tensor into ranges
// across threads and calls this on each.
//
// Bit-reproducible by construction: the file is compiled with -ffp-contract=off, so every element goes
// through the same correctly rounded IEEE operations (no fused multiply-add) whether the vector body, the
// scalar tail, the AVX2 clone or the baseline one computes it. How the range is split therefore never
// changes a bit of the result, and a run gives the same weights at any thread count on any x86-64 CPU.

#include <cstdint>

namespace mugv {

// The update's constants, in fp32 as the arithmetic uses them.
struct AdamWScalars {
  float decay;  // 1 − lr·weight_decay
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float sqrt_bias_correction2;
  float eps;
  float step_size;  // lr / (1 − β1^k)
};

// param ← param·decay − step_size · m / (sqrt(v)/sqrt_bc2 + eps) after m ← β1·m + (1−β1)·g and
// v ← β2·v + (1−β2)·g², for the n elements of each array. The arrays must not overlap.
void adamw_update_range(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                        const AdamWScalars& s);

}  // namespace mugv
