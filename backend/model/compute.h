#pragma once
// Where and in which arithmetic the models run.
//
// Device: "cpu", "cuda" or "auto" (a GPU when one is visible). Each rank of a multi-process run takes
// the GPU of its node-local rank (modulo the visible GPUs).
//
// Precision: fp32, or bf16 mixed precision. In bf16, LibTorch's
// autocast runs matrix products and convolutions in bf16 and keeps reductions, normalisations and
// softmax in fp32; parameters, gradients, optimizer state and EMA stay fp32 (the master weights).
// MUG-V trains this way on GPUs; on CPUs with native bf16 instructions a tiny DiT step runs ~1.5x as fast.
//
// "auto" picks:
//   - CUDA: bf16 (the MUG-V training precision; GPUs before Ampere emulate it, use fp32 there);
//   - CPU: fp32. A CPU with AVX512-BF16 or AMX-BF16 and LibTorch with oneDNN runs bf16 GEMMs at ~2.3x the
//     fp32 rate and a tiny DiT step 1.5x as fast, but on the starter set the bf16 DiT learned the held-out
//     motion directions ~25 % more steps later (docs/BENCHMARKS.md). Whether bf16 pays depends on the run,
//     so ask for it explicitly (`make demo` does where it is native).
// The choice depends only on the device (no timing), so a resumed run computes as it did before.
//
// Thread safety: autocast state is thread-local; an AutocastScope affects only the thread that made it.

#include <torch/torch.h>

#include <optional>
#include <string>
#include <string_view>

namespace mugv {

// Resolves "auto", "cpu" or "cuda" for the process with node-local rank `local_rank`. Throws
// Error(ErrorCode::unsupported) for "cuda" when no GPU is visible (a CPU-only LibTorch, no driver), and
// Error(ErrorCode::usage) naming `flag` for any other value. Choosing the CPU also has the process keep freed
// heap memory for reuse (core/heap_reuse.h): its steps allocate and free the same large tensors each time.
[[nodiscard]] torch::Device choose_compute_device(std::string_view requested, int local_rank = 0,
                                                  std::string_view flag = "--device");
// The GPU of node-local rank `local_rank`: local_rank modulo the visible GPUs. Throws Error(unsupported)
// when there is none.
[[nodiscard]] torch::Device cuda_device_of_local_rank(int local_rank);

// Modules built while a DefaultDtypeScope lives allocate their floating-point parameters in `dtype`, so a
// bf16 model is never materialised in fp32 first (loading a 20 GB bf16 checkpoint needs 20 GB, not 60). The
// default dtype is process-wide: build models from one thread at a time while a scope is open.
class DefaultDtypeScope {
 public:
  explicit DefaultDtypeScope(torch::ScalarType dtype);
  ~DefaultDtypeScope();
  DefaultDtypeScope(const DefaultDtypeScope&) = delete;
  DefaultDtypeScope& operator=(const DefaultDtypeScope&) = delete;

 private:
  caffe2::TypeMeta previous_;
};

// Memory new allocations on `device` can take now: MemAvailable of /proc/meminfo for the CPU; for a GPU the
// free memory nvidia-smi reports for it (the visible index mapped through CUDA_VISIBLE_DEVICES; what
// LibTorch's caching allocator holds in reserve counts as used). nullopt when it cannot be read.
[[nodiscard]] std::optional<int64_t> device_memory_available_bytes(torch::Device device);

// Measured GEMM rate in FLOP/s of `dtype` on `device` (on the CPU at the current torch thread count; a few
// n×n matmuls, ~0.2 s): the peak an MFU is measured against, so a bf16 run's MFU is against the bf16 rate.
[[nodiscard]] double measure_gemm_flops(int64_t n = 512, int repeats = 6,
                                        torch::ScalarType dtype = torch::kFloat32,
                                        const torch::Device& device = torch::kCPU);
// Peak resident set size of this process (VmHWM), bytes; 0 when unknown.
[[nodiscard]] int64_t peak_rss_bytes();
// Waits until the work queued on `device` has finished (nothing to wait for on the CPU), so a wall-clock
// timing measures the work and not its launch.
void synchronize_device(torch::Device device);
// The most bytes the CUDA caching allocator has held in tensors on `device` since the last
// reset_peak_device_memory (or the start); nullopt for the CPU (use peak_rss_bytes) or a build without CUDA.
[[nodiscard]] std::optional<int64_t> peak_device_memory_bytes(torch::Device device);
void reset_peak_device_memory(torch::Device device);

enum class ComputePrecision { fp32 = 0, bf16 };
const char* to_string(ComputePrecision precision);
// "fp32" or "bf16"; nullopt for anything else.
std::optional<ComputePrecision> compute_precision_from_string(std::string_view name);

struct PrecisionChoice {
  ComputePrecision precision = ComputePrecision::fp32;
  std::string reason;  // why, for the run's log: "requested", "auto: ..."
};

// Resolves "auto", "fp32" or "bf16" for forward passes on `device`. An explicit "bf16" is honoured on
// any machine (it is correct everywhere, only slow without native support). Throws
// Error(ErrorCode::usage) naming `flag` for any other value.
[[nodiscard]] PrecisionChoice choose_compute_precision(std::string_view requested, torch::DeviceType device,
                                                       std::string_view flag = "--precision");

// True when this CPU executes bf16 dot products natively (AVX512-BF16 or AMX-BF16) and LibTorch can
// use them (built with oneDNN).
[[nodiscard]] bool cpu_has_native_bf16();

// The type autocast runs matrix products in on `device` for this thread now (bf16 inside an AutocastScope),
// or none when autocast is off there: what an operation feeding a linear may write to spare it a cast.
[[nodiscard]] std::optional<torch::ScalarType> autocast_matmul_type(torch::DeviceType device);

// While alive, forward passes on `device` run in `precision` (nothing changes for fp32). On
// destruction the previous autocast state returns and, when the outermost scope closes, the cache of
// bf16 weight copies is dropped: the optimizer changes the weights between steps, so each step must
// cast them afresh. Make one scope per forward pass, never one for a whole run.
class AutocastScope {
 public:
  AutocastScope(ComputePrecision precision, torch::DeviceType device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  torch::DeviceType device_ = torch::kCPU;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

// GELU (tanh approximation when `tanh_approximation`). A bf16 input on the CPU is computed in fp32 and
// returned in bf16: LibTorch 1.13's CPU bf16 GELU kernels (forward and backward) take ~1.7x as long as
// the fp32 ones, more than the two casts cost. Other inputs go to F::gelu unchanged.
[[nodiscard]] torch::Tensor gelu(const torch::Tensor& x, bool tanh_approximation);

}  // namespace mugv
