#pragma once
// What this build and machine compute with, for `mugv doctor`: the LibTorch version, whether it has CUDA
// (and so NCCL), the GPUs it sees, its thread count and measured GEMM rates. A header without LibTorch, so
// commands that do not otherwise include it can report these (model/compute.cpp implements it).

#include <string>
#include <vector>

namespace mugv {

struct ComputeFacts {
  std::string torch_version;  // "1.13.1"
  bool cuda_built = false;    // this build runs CUDA kernels and NCCL collectives
  int gpus_visible = 0;       // CUDA devices this process sees
  std::vector<std::string>
      gpus;  // "NVIDIA H200, 143771 MiB" each, from nvidia-smi (empty when it does not answer)
  bool cuda_kernels_built = false;  // the fused CUDA kernels (model/fused_ops.h) are in this build
  bool fused_enabled = true;        // the fused operations are on (MUGV_FUSED_KERNELS is not 0)
  int threads = 0;                  // LibTorch's intra-op threads
  double cpu_fp32_gemm_flops = 0;   // measured, 1024³ at `threads`
  double gpu_bf16_gemm_flops = 0;   // measured on the first GPU, 4096³; 0 without one
};

// Measures the GEMM rates when `measure` (about a second on a CPU, two with a GPU); without it they stay 0
// and only what the build and driver say is read.
[[nodiscard]] ComputeFacts measure_compute_facts(bool measure = true);

}  // namespace mugv
