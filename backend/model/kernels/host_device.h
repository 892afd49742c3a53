// MUGV_HOST_DEVICE marks the inline arithmetic that both the CPU loops (g++) and the CUDA kernels (nvcc) of
// the fused operations run, so that one definition serves both and the CPU tests cover the kernels' math.
#pragma once

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif
#include <type_traits>

#if defined(__CUDACC__)
#define MUGV_HOST_DEVICE __host__ __device__
#else
#define MUGV_HOST_DEVICE
#endif

namespace mugv::kernels {

// How the fused operations read and write an element type: arithmetic in `acc` (float, or double for
// double elements), one rounding on the store. The CPU's element types (float, double, c10's BFloat16 and
// Half) convert with static_cast; the CUDA file specialises it for __half and __nv_bfloat16 with the
// conversion intrinsics, which stay available where a LibTorch build defines __CUDA_NO_HALF_CONVERSIONS__
// and __CUDA_NO_BFLOAT16_CONVERSIONS__.
template <class T>
struct Element {
  using acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  MUGV_HOST_DEVICE static acc load(T v) { return static_cast<acc>(v); }
  MUGV_HOST_DEVICE static T store(acc v) { return static_cast<T>(v); }
};

// 1 / sqrt(v) as the same division on both sides (CUDA's sqrt overloads on the device, std::sqrt here).
template <class T>
MUGV_HOST_DEVICE inline T inverse_sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return T(1) / sqrt(v);
#else
  return T(1) / std::sqrt(v);
#endif
}

// Σ term(i) for 0 <= i < n, in kSumLanes partial sums added together in a fixed order at the end: the same
// result on every run, and independent chains of adds that a CPU overlaps and a compiler vectorises (one
// chain of dependent float adds, which strict IEEE order demands of a plain loop, waits on every add's
// latency).
constexpr int kSumLanes = 8;
template <class Acc, class Term>
MUGV_HOST_DEVICE inline Acc lane_sum(int64_t n, Term term) {
  Acc lanes[kSumLanes] = {};
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int lane = 0; lane < kSumLanes; ++lane) lanes[lane] += term(i + lane);
  for (int lane = 0; i < n; ++i, ++lane) lanes[lane] += term(i);
  Acc total = 0;
  for (int lane = 0; lane < kSumLanes; ++lane) total += lanes[lane];
  return total;
}

}  // namespace mugv::kernels
