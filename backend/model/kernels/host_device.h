// MUGV_HOST_DEVICE marks the inline arithmetic that both the CPU loops (g++) and the CUDA kernels (nvcc) of
// the fused operations run, so that one definition serves both and the CPU tests cover the kernels' math.
#pragma once

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

#if defined(__CUDACC__)
#define MUGV_HOST_DEVICE __host__ __device__
#else
#define MUGV_HOST_DEVICE
#endif

namespace mugv::kernels {

// 1 / sqrt(v) as the same division on both sides (CUDA's sqrt overloads on the device, std::sqrt here).
template <class T>
MUGV_HOST_DEVICE inline T inverse_sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return T(1) / sqrt(v);
#else
  return T(1) / std::sqrt(v);
#endif
}

}  // namespace mugv::kernels
