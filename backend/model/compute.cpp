#include "model/compute.h"

#include "model/compute_facts.h"
#include "model/fused_ops.h"

#include "core/error.h"
#include "core/heap_reuse.h"
#include "core/process.h"
#include "core/strings.h"

#include <ATen/autocast_mode.h>
#include <c10/core/DefaultDtype.h>
#include <torch/version.h>
#ifdef MUGV_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace mugv {
namespace F = torch::nn::functional;

namespace {

// The autocast API took a device argument in LibTorch 2.4 and deprecated the per-device functions.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(torch::DeviceType d) {
  return at::autocast::is_autocast_enabled(d);
}
void set_autocast_enabled(torch::DeviceType d, bool on) {
  at::autocast::set_autocast_enabled(d, on);
}
at::ScalarType autocast_dtype(torch::DeviceType d) {
  return at::autocast::get_autocast_dtype(d);
}
void set_autocast_dtype(torch::DeviceType d, at::ScalarType t) {
  at::autocast::set_autocast_dtype(d, t);
}
#else
bool autocast_enabled(torch::DeviceType d) {
  return d == torch::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_autocast_enabled(torch::DeviceType d, bool on) {
  if (d == torch::kCUDA)
    at::autocast::set_enabled(on);
  else
    at::autocast::set_cpu_enabled(on);
}
at::ScalarType autocast_dtype(torch::DeviceType d) {
  return d == torch::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(torch::DeviceType d, at::ScalarType t) {
  if (d == torch::kCUDA)
    at::autocast::set_autocast_gpu_dtype(t);
  else
    at::autocast::set_autocast_cpu_dtype(t);
}
#endif

// A "Key: N kB" line of a /proc file, in bytes.
std::optional<int64_t> proc_kib(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (starts_with(line, key + ":")) {
      try {
        return std::stoll(line.substr(key.size() + 1)) * 1024;
      } catch (...) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

torch::Device cuda_device_of_local_rank(int local_rank) {
  const int64_t devices = static_cast<int64_t>(torch::cuda::device_count());
  if (devices < 1)
    throw Error(ErrorCode::unsupported, "cuda",
                "no CUDA device is visible (a CPU-only LibTorch, no driver or CUDA_VISIBLE_DEVICES empty)");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(std::max(0, local_rank) % devices));
}

torch::Device choose_compute_device(std::string_view requested, int local_rank, std::string_view flag) {
  if (requested == "cuda") return cuda_device_of_local_rank(local_rank);
  if (requested != "auto" && requested != "cpu")
    throw Error(ErrorCode::usage, std::string(flag), cat("'", requested, "' is not auto, cpu or cuda"));
  if (requested == "auto" && torch::cuda::is_available()) return cuda_device_of_local_rank(local_rank);
  keep_freed_heap_memory();  // each step reuses the pages the last one freed (core/heap_reuse.h)
  return torch::kCPU;
}

const char* to_string(ComputePrecision precision) {
  switch (precision) {
    case ComputePrecision::fp32:
      return "fp32";
    case ComputePrecision::bf16:
      return "bf16";
  }
  return "unknown";
}

std::optional<ComputePrecision> compute_precision_from_string(std::string_view name) {
  if (name == "fp32") return ComputePrecision::fp32;
  if (name == "bf16") return ComputePrecision::bf16;
  return std::nullopt;
}

std::optional<torch::ScalarType> autocast_matmul_type(torch::DeviceType device) {
  if (!autocast_enabled(device)) return std::nullopt;
  return autocast_dtype(device);
}

bool cpu_has_native_bf16() {
  if (!at::hasMKLDNN()) return false;  // without oneDNN, LibTorch's CPU bf16 GEMM is a slow fallback
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

PrecisionChoice choose_compute_precision(std::string_view requested, torch::DeviceType device,
                                         std::string_view flag) {
  if (auto explicit_choice = compute_precision_from_string(requested)) return {*explicit_choice, "requested"};
  if (requested != "auto")
    throw Error(ErrorCode::usage, std::string(flag), cat("'", requested, "' is not auto, fp32 or bf16"));
  if (device == torch::kCUDA) return {ComputePrecision::bf16, "auto: CUDA device"};
  if (cpu_has_native_bf16())
    return {ComputePrecision::fp32,
            "auto: fp32 on CPUs; this one computes bf16 natively, --precision bf16 is faster"};
  return {ComputePrecision::fp32, "auto: fp32 on CPUs; this one has no native bf16"};
}

AutocastScope::AutocastScope(ComputePrecision precision, torch::DeviceType device)
    : active_(precision == ComputePrecision::bf16), device_(device) {
  if (!active_) return;
  previous_enabled_ = autocast_enabled(device_);
  previous_dtype_ = autocast_dtype(device_);
  set_autocast_enabled(device_, true);
  set_autocast_dtype(device_, at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast_enabled(device_, previous_enabled_);
  set_autocast_dtype(device_, previous_dtype_);
}

torch::Tensor gelu(const torch::Tensor& x, bool tanh_approximation) {
  auto options = F::GELUFuncOptions().approximate(tanh_approximation ? "tanh" : "none");
  if (x.scalar_type() != at::kBFloat16 || !x.device().is_cpu()) return F::gelu(x, options);
  return F::gelu(x.to(at::kFloat), options).to(at::kBFloat16);
}

std::optional<int64_t> device_memory_available_bytes(torch::Device device) {
  if (device.is_cpu()) return proc_kib("/proc/meminfo", "MemAvailable");
  if (!device.is_cuda()) return std::nullopt;
  // CUDA_VISIBLE_DEVICES renumbers the GPUs this process sees; nvidia-smi speaks of the physical ones.
  std::string physical = std::to_string(device.has_index() ? device.index() : 0);
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible && *visible) {
    const auto ids = split(visible, ',');
    const size_t index = device.has_index() ? static_cast<size_t>(device.index()) : 0;
    if (index < ids.size()) physical = trim(ids[index]);
  }
  try {
    const ProcessResult r = run_process(
        {"nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", physical},
        std::chrono::seconds(10));
    if (r.exit_code != 0) return std::nullopt;
    return static_cast<int64_t>(std::stoll(trim(r.out))) * 1024 * 1024;  // MiB
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void synchronize_device(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

std::optional<int64_t> peak_device_memory_bytes(torch::Device device) {
#ifdef MUGV_HAVE_CUDA
  if (device.is_cuda()) {
    const auto index = device.has_index() ? device.index() : c10::DeviceIndex(0);
    // allocated_bytes[0] is the aggregate over the small and large pools (StatType::AGGREGATE == 0; the
    // enum moved namespaces between LibTorch releases, the index did not).
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].peak;
  }
#endif
  (void)device;
  return std::nullopt;
}

void reset_peak_device_memory(torch::Device device) {
#ifdef MUGV_HAVE_CUDA
  if (device.is_cuda())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index()
                                                                       : c10::DeviceIndex(0));
#endif
  (void)device;
}

double measure_gemm_flops(int64_t n, int repeats, torch::ScalarType dtype, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  auto a = torch::randn({n, n}).to(options), b = torch::randn({n, n}).to(options);
  // GPU kernels run asynchronously: time from an idle device to a finished product.
  auto finish = [&] { synchronize_device(device); };
  auto c = torch::mm(a, b);  // warm-up: thread pool, BLAS init
  finish();
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    c = torch::mm(a, b);
    finish();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s);
  }
  return best;
}

ComputeFacts measure_compute_facts(bool measure) {
  ComputeFacts facts;
  facts.torch_version = TORCH_VERSION;
#ifdef MUGV_HAVE_CUDA
  facts.cuda_built = true;
#endif
  facts.cuda_kernels_built = cuda_kernels_built();
  facts.fused_enabled = fused_kernels_enabled();
  facts.gpus_visible = facts.cuda_built ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (facts.gpus_visible > 0) {
    try {
      const ProcessResult r = run_process(
          {"nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"}, std::chrono::seconds(10));
      if (r.exit_code == 0)
        for (const std::string& line : split(r.out, '\n'))
          if (!trim(line).empty()) facts.gpus.push_back(trim(line));
    } catch (const std::exception&) {
      // no nvidia-smi: the count stands alone
    }
  }
  // At the thread count training takes by default (train --threads 0: every core), not LibTorch's default
  // (physical cores: one on a two-vCPU machine with SMT).
  facts.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (!measure) return facts;
  const int previous = torch::get_num_threads();
  torch::set_num_threads(facts.threads);
  facts.cpu_fp32_gemm_flops = measure_gemm_flops(1024, 4);
  torch::set_num_threads(previous);
  if (facts.gpus_visible > 0)
    facts.gpu_bf16_gemm_flops =
        measure_gemm_flops(4096, 10, torch::kBFloat16, torch::Device(torch::kCUDA, 0));
  return facts;
}

int64_t peak_rss_bytes() {
  return proc_kib("/proc/self/status", "VmHWM").value_or(0);
}

DefaultDtypeScope::DefaultDtypeScope(torch::ScalarType dtype) : previous_(c10::get_default_dtype()) {
  c10::set_default_dtype(caffe2::TypeMeta::fromScalarType(dtype));
}

DefaultDtypeScope::~DefaultDtypeScope() {
  c10::set_default_dtype(previous_);
}

}  // namespace mugv
