#include "train/adamw_kernel.h"

#include <cmath>

namespace mugv {

// An AVX2 build beside the baseline, chosen once at load time by the CPU (GCC's function multi-versioning):
// the baseline x86-64 has 4-wide SSE only, and the binary must still run on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void adamw_update_range(float* __restrict param, const float* __restrict grad, float* __restrict exp_avg,
                        float* __restrict exp_avg_sq, int64_t n, const AdamWScalars& s) {
  const AdamWScalars c = s;  // by value: the loop must not reload the constants through a possible alias
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float m = exp_avg[i] * c.beta1 + g * c.one_minus_beta1;
    const float v = exp_avg_sq[i] * c.beta2 + g * g * c.one_minus_beta2;
    const float denom = std::sqrt(v) / c.sqrt_bias_correction2 + c.eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = param[i] * c.decay - c.step_size * m / denom;
  }
}

}  // namespace mugv
