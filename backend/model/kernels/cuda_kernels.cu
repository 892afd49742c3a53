// The fused CUDA kernels (cuda_kernels.h). Arithmetic in float whatever the element type, rounded once
// on the store, as the CPU loops of model/fused_ops.cpp do.
#include "model/kernels/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace mugv::kernels {
namespace {

__device__ inline float load(const float* p) { return *p; }
__device__ inline float load(const __half* p) { return __half2float(*p); }
__device__ inline float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ inline void store(float* p, float v) { *p = v; }
__device__ inline void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ inline void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// One thread per pair (row, i), grid-striding: neighbouring threads touch neighbouring pairs of a row.
template <class T>
__global__ void rope_rotate_kernel(const T* __restrict__ x, T* __restrict__ out, const float* __restrict__ cos,
                                   const float* __restrict__ sin, RopeShape shape, float sign) {
  const int64_t half = shape.head_dim / 2;
  const int64_t total = shape.rows() * half;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = index / half, pair = index % half;
    const T* in = x + rope_input_offset(shape, row) + 2 * pair;
    T* o = out + row * shape.head_dim + 2 * pair;
    const float a = load(in), b = load(in + 1);
    if (pair < shape.pairs) {
      const int64_t t = rope_table_offset(shape, row) + pair;
      float out_a, out_b;
      rope_rotate(a, b, cos[t], sign * sin[t], out_a, out_b);
      store(o, out_a);
      store(o + 1, out_b);
    } else {
      store(o, a);
      store(o + 1, b);
    }
  }
}

template <class T>
const char* launch_rope(const void* x, void* out, const float* cos, const float* sin, const RopeShape& shape,
                        bool inverse, void* stream) {
  const int64_t total = shape.rows() * (shape.head_dim / 2);
  if (total == 0) return nullptr;
  constexpr int threads = 256;
  // Enough blocks to fill any current GPU several times over; the kernel strides over the rest.
  const int64_t wanted = (total + threads - 1) / threads;
  const unsigned blocks = static_cast<unsigned>(wanted < 65536 ? wanted : 65536);
  rope_rotate_kernel<T><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<T*>(out), cos, sin, shape, inverse ? -1.0f : 1.0f);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? nullptr : cudaGetErrorString(status);
}

}  // namespace

int cuda_device_count(const char** error) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (error) *error = cudaGetErrorString(status);
    cudaGetLastError();  // clear it: later runtime calls must not report this one
    return 0;
  }
  return count;
}

const char* rope_rotate_cuda(const void* x, void* out, const float* cos, const float* sin, const RopeShape& shape,
                             ElementType type, bool inverse, void* stream) {
  switch (type) {
    case ElementType::float32: return launch_rope<float>(x, out, cos, sin, shape, inverse, stream);
    case ElementType::float16: return launch_rope<__half>(x, out, cos, sin, shape, inverse, stream);
    case ElementType::bfloat16: return launch_rope<__nv_bfloat16>(x, out, cos, sin, shape, inverse, stream);
  }
  return "rope_rotate_cuda: unknown element type";
}

}  // namespace mugv::kernels
