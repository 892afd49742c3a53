// MUGV_HOST_DEVICE marks the inline arithmetic that both the CPU loops (g++) and the CUDA kernels (nvcc) of
// the fused operations run, so that one definition serves both and the CPU tests cover the kernels' math.
#pragma once

#if defined(__CUDACC__)
#define MUGV_HOST_DEVICE __host__ __device__
#else
#define MUGV_HOST_DEVICE
#endif
