// The fused CUDA kernels (cuda_kernels.h). Arithmetic in float whatever the element type, rounded once
// on the store, as the CPU loops of model/fused_ops.cpp do.
#include "model/kernels/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace mugv::kernels {

// The GPU's 16-bit types through the conversion intrinsics (see Element in host_device.h).
template <>
struct Element<__half> {
  using acc = float;
  __host__ __device__ static float load(__half v) { return __half2float(v); }
  __host__ __device__ static __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Element<__nv_bfloat16> {
  using acc = float;
  __host__ __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __host__ __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

namespace {

// Enough blocks to fill any current GPU several times over; the kernels grid-stride over the rest.
unsigned blocks_for(int64_t items, int threads) {
  const int64_t wanted = (items + threads - 1) / threads;
  return static_cast<unsigned>(wanted < 65536 ? wanted : 65536);
}

// nullptr when the launch was accepted, else the runtime's message.
const char* launched() {
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? nullptr : cudaGetErrorString(status);
}


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
    const float a = Element<T>::load(in[0]), b = Element<T>::load(in[1]);
    if (pair < shape.pairs) {
      const int64_t t = rope_table_offset(shape, row) + pair;
      float out_a, out_b;
      rope_rotate(a, b, cos[t], sign * sin[t], out_a, out_b);
      o[0] = Element<T>::store(out_a);
      o[1] = Element<T>::store(out_b);
    } else {
      o[0] = in[0];
      o[1] = in[1];
    }
  }
}

template <class T>
const char* launch_rope(const void* x, void* out, const float* cos, const float* sin, const RopeShape& shape,
                        bool inverse, void* stream) {
  const int64_t total = shape.rows() * (shape.head_dim / 2);
  if (total == 0) return nullptr;
  constexpr int threads = 256;
  rope_rotate_kernel<T><<<blocks_for(total, threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<T*>(out), cos, sin, shape, inverse ? -1.0f : 1.0f);
  return launched();
}

// One thread per row (a head of a token): the row functions of norm_rope_math.h as the CPU loop runs them.
// A row is at most a few hundred values, read from the cache after the first touch.
template <class T>
__global__ void norm_rope_forward_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ weight,
                                         float eps, float multiplier, const float* __restrict__ cos,
                                         const float* __restrict__ sin, RopeShape shape) {
  for (int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; row < shape.rows();
       row += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = rope_table_offset(shape, row);
    norm_rope_forward_row<T>(x + rope_input_offset(shape, row), y + row * shape.head_dim, weight, eps,
                                    multiplier, cos + t, sin + t, shape.head_dim, shape.pairs);
  }
}

template <class T>
__global__ void norm_rope_backward_kernel(const T* __restrict__ x, const T* __restrict__ grad, T* __restrict__ grad_x,
                                          float* __restrict__ grad_weight_rows, const float* __restrict__ weight,
                                          float eps, float multiplier, const float* __restrict__ cos,
                                          const float* __restrict__ sin, RopeShape shape) {
  for (int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; row < shape.rows();
       row += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = rope_table_offset(shape, row), offset = row * shape.head_dim;
    norm_rope_backward_row<T>(x + rope_input_offset(shape, row), grad + offset, grad_x + offset,
                                     grad_weight_rows ? grad_weight_rows + offset : nullptr, weight, eps,
                                     multiplier, cos + t, sin + t, shape.head_dim, shape.pairs);
  }
}

template <class T>
const char* launch_norm_rope_forward(const void* x, void* y, const float* weight, float eps, float multiplier,
                                     const float* cos, const float* sin, const RopeShape& shape, void* stream) {
  if (shape.rows() == 0) return nullptr;
  constexpr int threads = 128;
  norm_rope_forward_kernel<T><<<blocks_for(shape.rows(), threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<T*>(y), weight, eps, multiplier, cos, sin, shape);
  return launched();
}

template <class T>
const char* launch_norm_rope_backward(const void* x, const void* grad, void* grad_x, float* grad_weight_rows,
                                      const float* weight, float eps, float multiplier, const float* cos,
                                      const float* sin, const RopeShape& shape, void* stream) {
  if (shape.rows() == 0) return nullptr;
  constexpr int threads = 128;
  norm_rope_backward_kernel<T><<<blocks_for(shape.rows(), threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<const T*>(grad), static_cast<T*>(grad_x), grad_weight_rows, weight, eps,
      multiplier, cos, sin, shape);
  return launched();
}

// ---- LayerNorm + adaLN modulation: one block per row (a token's d values, thousands at the DiT's widths) ----

constexpr int kRowThreads = 256;  // a multiple of the warp size (block_sum)

// The sum of every thread's v, returned to every thread of the block. Each thread adds the warps' partial
// sums in the same order, so the result is the same on every run. scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float* scratch) {
  for (int lanes = 16; lanes > 0; lanes >>= 1) v += __shfl_xor_sync(0xffffffffu, v, lanes);
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();  // every thread has read the previous call's scratch
  if (threadIdx.x % 32 == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

template <class T, class U>
__global__ void norm_modulate_forward_kernel(const T* __restrict__ x, U* __restrict__ y, const float* __restrict__ scale,
                                             const float* __restrict__ shift, float* __restrict__ mean_out,
                                             float* __restrict__ rstd_out, float eps, ModulationShape shape) {
  __shared__ float scratch[32];
  const int64_t dim = shape.dim;
  for (int64_t row = blockIdx.x; row < shape.rows(); row += gridDim.x) {
    const T* in = x + row * dim;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += Element<T>::load(in[i]);
    const float mean = block_sum(sum, scratch) / float(dim);
    float squares = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float deviation = Element<T>::load(in[i]) - mean;
      squares += deviation * deviation;
    }
    const float rstd = inverse_sqrt(block_sum(squares, scratch) / float(dim) + eps);
    const int64_t m = modulation_offset(shape, row);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      y[row * dim + i] =
          Element<U>::store(norm_modulate_value<float>(Element<T>::load(in[i]), mean, rstd, scale[m + i], shift[m + i]));
    if (threadIdx.x == 0) {
      mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
  }
}

template <class T, class U>
__global__ void norm_modulate_backward_kernel(const T* __restrict__ x, const U* __restrict__ grad, T* __restrict__ grad_x,
                                              float* __restrict__ scale_share, const float* __restrict__ scale,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              ModulationShape shape) {
  __shared__ float scratch[32];
  const int64_t dim = shape.dim;
  for (int64_t row = blockIdx.x; row < shape.rows(); row += gridDim.x) {
    const int64_t offset = row * dim, m = modulation_offset(shape, row);
    const float mu = mean[row], r = rstd[row];
    float sum_u = 0.0f, sum_u_normed = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float g = Element<U>::load(grad[offset + i]), normed = (Element<T>::load(x[offset + i]) - mu) * r;
      const float u = g * (1.0f + scale[m + i]);
      sum_u += u;
      sum_u_normed += u * normed;
      if (scale_share) scale_share[offset + i] = g * normed;
    }
    const float mean_u = block_sum(sum_u, scratch) / float(dim);
    const float mean_u_normed = block_sum(sum_u_normed, scratch) / float(dim);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float normed = (Element<T>::load(x[offset + i]) - mu) * r;
      const float u = Element<U>::load(grad[offset + i]) * (1.0f + scale[m + i]);
      grad_x[offset + i] = Element<T>::store(norm_modulate_input_grad<float>(normed, u, r, mean_u, mean_u_normed));
    }
  }
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 65536 ? rows : 65536);
}

template <class T, class U>
const char* launch_norm_modulate_forward(const void* x, void* y, const float* scale, const float* shift, float* mean,
                                         float* rstd, float eps, const ModulationShape& shape, void* stream) {
  if (shape.rows() == 0) return nullptr;
  norm_modulate_forward_kernel<T, U><<<row_blocks(shape.rows()), kRowThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<U*>(y), scale, shift, mean, rstd, eps, shape);
  return launched();
}

template <class T, class U>
const char* launch_norm_modulate_backward(const void* x, const void* grad, void* grad_x, float* scale_share,
                                          const float* scale, const float* mean, const float* rstd,
                                          const ModulationShape& shape, void* stream) {
  if (shape.rows() == 0) return nullptr;
  norm_modulate_backward_kernel<T, U><<<row_blocks(shape.rows()), kRowThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<const U*>(grad), static_cast<T*>(grad_x), scale_share, scale, mean, rstd,
      shape);
  return launched();
}

template <class T>
struct TypeTag {
  using type = T;
};

// launch(TypeTag<T>{}, TypeTag<U>{}) for a pair of element types (x and y of norm_modulate, x and h of the
// gated residual): equal, or a float32 T with a 16-bit U (what an autocast matrix product reads or writes).
template <class Launch>
const char* with_in_out_types(ElementType type, ElementType out_type, Launch launch) {
  if (type == out_type) {
    switch (type) {
      case ElementType::float32: return launch(TypeTag<float>{}, TypeTag<float>{});
      case ElementType::float16: return launch(TypeTag<__half>{}, TypeTag<__half>{});
      case ElementType::bfloat16: return launch(TypeTag<__nv_bfloat16>{}, TypeTag<__nv_bfloat16>{});
    }
  } else if (type == ElementType::float32) {
    switch (out_type) {
      case ElementType::float16: return launch(TypeTag<float>{}, TypeTag<__half>{});
      case ElementType::bfloat16: return launch(TypeTag<float>{}, TypeTag<__nv_bfloat16>{});
      case ElementType::float32: break;
    }
  }
  return "no fused kernel for this pair of element types";
}

// ---- gated residual: one thread per element, grid-striding ----

template <class T, class U>
__global__ void gated_residual_forward_kernel(const T* __restrict__ x, const U* __restrict__ h, T* __restrict__ out,
                                              const float* __restrict__ gate, ModulationShape shape) {
  const int64_t total = shape.rows() * shape.dim;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = index / shape.dim, i = index % shape.dim;
    out[index] = Element<T>::store(Element<T>::load(x[index]) +
                                   Element<U>::load(h[index]) * gate[modulation_offset(shape, row) + i]);
  }
}

template <class T, class U>
__global__ void gated_residual_backward_kernel(const T* __restrict__ grad, const U* __restrict__ h, U* __restrict__ grad_h,
                                               float* __restrict__ gate_share, const float* __restrict__ gate,
                                               ModulationShape shape) {
  const int64_t total = shape.rows() * shape.dim;
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = index / shape.dim, i = index % shape.dim;
    const float g = Element<T>::load(grad[index]);
    if (grad_h) grad_h[index] = Element<U>::store(g * gate[modulation_offset(shape, row) + i]);
    if (gate_share) gate_share[index] = g * Element<U>::load(h[index]);
  }
}

template <class T, class U>
const char* launch_gated_residual_forward(const void* x, const void* h, void* out, const float* gate,
                                          const ModulationShape& shape, void* stream) {
  const int64_t total = shape.rows() * shape.dim;
  if (total == 0) return nullptr;
  constexpr int threads = 256;
  gated_residual_forward_kernel<T, U><<<blocks_for(total, threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(x), static_cast<const U*>(h), static_cast<T*>(out), gate, shape);
  return launched();
}

template <class T, class U>
const char* launch_gated_residual_backward(const void* grad, const void* h, void* grad_h, float* gate_share,
                                           const float* gate, const ModulationShape& shape, void* stream) {
  const int64_t total = shape.rows() * shape.dim;
  if (total == 0) return nullptr;
  constexpr int threads = 256;
  gated_residual_backward_kernel<T, U><<<blocks_for(total, threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(grad), static_cast<const U*>(h), static_cast<U*>(grad_h), gate_share, gate, shape);
  return launched();
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

namespace mugv::kernels {

const char* norm_rope_forward_cuda(const void* x, void* y, const float* weight, float eps, float multiplier,
                                   const float* cos, const float* sin, const RopeShape& shape, ElementType type,
                                   void* stream) {
  switch (type) {
    case ElementType::float32:
      return launch_norm_rope_forward<float>(x, y, weight, eps, multiplier, cos, sin, shape, stream);
    case ElementType::float16:
      return launch_norm_rope_forward<__half>(x, y, weight, eps, multiplier, cos, sin, shape, stream);
    case ElementType::bfloat16:
      return launch_norm_rope_forward<__nv_bfloat16>(x, y, weight, eps, multiplier, cos, sin, shape, stream);
  }
  return "norm_rope_forward_cuda: unknown element type";
}

const char* norm_rope_backward_cuda(const void* x, const void* grad, void* grad_x, float* grad_weight_rows,
                                    const float* weight, float eps, float multiplier, const float* cos,
                                    const float* sin, const RopeShape& shape, ElementType type, void* stream) {
  switch (type) {
    case ElementType::float32:
      return launch_norm_rope_backward<float>(x, grad, grad_x, grad_weight_rows, weight, eps, multiplier, cos, sin,
                                              shape, stream);
    case ElementType::float16:
      return launch_norm_rope_backward<__half>(x, grad, grad_x, grad_weight_rows, weight, eps, multiplier, cos, sin,
                                               shape, stream);
    case ElementType::bfloat16:
      return launch_norm_rope_backward<__nv_bfloat16>(x, grad, grad_x, grad_weight_rows, weight, eps, multiplier,
                                                      cos, sin, shape, stream);
  }
  return "norm_rope_backward_cuda: unknown element type";
}

const char* norm_modulate_forward_cuda(const void* x, void* y, const float* scale, const float* shift, float* mean,
                                       float* rstd, float eps, const ModulationShape& shape, ElementType type,
                                       ElementType out_type, void* stream) {
  return with_in_out_types(type, out_type, [&](auto in, auto out) {
    return launch_norm_modulate_forward<typename decltype(in)::type, typename decltype(out)::type>(
        x, y, scale, shift, mean, rstd, eps, shape, stream);
  });
}

const char* norm_modulate_backward_cuda(const void* x, const void* grad, void* grad_x, float* scale_share,
                                        const float* scale, const float* mean, const float* rstd,
                                        const ModulationShape& shape, ElementType type, ElementType out_type,
                                        void* stream) {
  return with_in_out_types(type, out_type, [&](auto in, auto out) {
    return launch_norm_modulate_backward<typename decltype(in)::type, typename decltype(out)::type>(
        x, grad, grad_x, scale_share, scale, mean, rstd, shape, stream);
  });
}

const char* gated_residual_forward_cuda(const void* x, const void* h, void* out, const float* gate,
                                        const ModulationShape& shape, ElementType type, ElementType h_type,
                                        void* stream) {
  return with_in_out_types(type, h_type, [&](auto in, auto other) {
    return launch_gated_residual_forward<typename decltype(in)::type, typename decltype(other)::type>(
        x, h, out, gate, shape, stream);
  });
}

const char* gated_residual_backward_cuda(const void* grad, const void* h, void* grad_h, float* gate_share,
                                         const float* gate, const ModulationShape& shape, ElementType type,
                                         ElementType h_type, void* stream) {
  return with_in_out_types(type, h_type, [&](auto in, auto other) {
    return launch_gated_residual_backward<typename decltype(in)::type, typename decltype(other)::type>(
        grad, h, grad_h, gate_share, gate, shape, stream);
  });
}

}  // namespace mugv::kernels
