#include "model/fused_ops.h"

#include "core/error.h"
#include "model/kernels/norm_rope_math.h"
#include "model/kernels/rope_math.h"

#include <ATen/Parallel.h>

#ifdef MUGV_HAVE_CUDA_KERNELS
#include "model/kernels/cuda_kernels.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mugv {
namespace {

std::atomic<int64_t> rope_calls{0}, norm_rope_calls{0};

std::atomic<bool>& fused_switch() {
  static std::atomic<bool> enabled = [] {
    const char* env = std::getenv("MUGV_FUSED_KERNELS");
    return !(env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "off") == 0));
  }();
  return enabled;
}

kernels::RopeShape rope_shape(const torch::Tensor& x, const torch::Tensor& tables) {
  kernels::RopeShape s;
  s.batch = x.size(0);
  s.heads = x.size(1);
  s.tokens = x.size(2);
  s.head_dim = x.size(3);
  s.pairs = tables.size(-1);
  s.stride_b = x.stride(0);
  s.stride_h = x.stride(1);
  s.stride_n = x.stride(2);
  s.per_sample = tables.dim() == 3;
  return s;
}

int64_t rows_grain(int64_t head_dim) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, head_dim));
}

#ifdef MUGV_HAVE_CUDA_KERNELS
kernels::ElementType element_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return kernels::ElementType::float32;
    case torch::kFloat16:
      return kernels::ElementType::float16;
    case torch::kBFloat16:
      return kernels::ElementType::bfloat16;
    default:
      throw Error(ErrorCode::unsupported, "fused kernels", "no CUDA kernel for this element type");
  }
}

void check_launch(const char* what, const char* error) {
  if (error) throw Error(ErrorCode::internal, what, std::string("CUDA kernel launch failed: ") + error);
}
#else
[[noreturn]] void no_cuda_kernels(const char* what) {
  throw Error(ErrorCode::unsupported, what, "this build has no CUDA kernels");
}
#endif

// The CPU loop: rows of x in parallel, a row's pairs in order.
template <class T>
void rope_rotate_cpu(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& cos_table,
                     const torch::Tensor& sin_table, const kernels::RopeShape& shape, bool inverse) {
  using Acc = typename kernels::Element<T>::acc;
  const T* in = x.data_ptr<T>();
  T* result = out.data_ptr<T>();
  const float* cos = cos_table.data_ptr<float>();
  const float* sin = sin_table.data_ptr<float>();
  const Acc sign = inverse ? Acc(-1) : Acc(1);
  at::parallel_for(0, shape.rows(), rows_grain(shape.head_dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* r = in + kernels::rope_input_offset(shape, row);
      T* w = result + row * shape.head_dim;
      const int64_t t = kernels::rope_table_offset(shape, row);
      for (int64_t i = 0; i < shape.pairs; ++i) {
        Acc a, b;
        kernels::rope_rotate(kernels::Element<T>::load(r[2 * i]), kernels::Element<T>::load(r[2 * i + 1]),
                             static_cast<Acc>(cos[t + i]), sign * static_cast<Acc>(sin[t + i]), a, b);
        w[2 * i] = kernels::Element<T>::store(a);
        w[2 * i + 1] = kernels::Element<T>::store(b);
      }
      for (int64_t i = 2 * shape.pairs; i < shape.head_dim; ++i) w[i] = r[i];
    }
  });
}

// out = x rotated by the tables (cos, sin: float32, contiguous, on x's device).
torch::Tensor rope_rotate(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin, bool inverse) {
  if (x.stride(-1) != 1) x = x.contiguous();
  const auto shape = rope_shape(x, cos);
  auto out = torch::empty({shape.batch, shape.heads, shape.tokens, shape.head_dim}, x.options());
  if (x.is_cuda()) {
#ifdef MUGV_HAVE_CUDA_KERNELS
    const c10::cuda::CUDAGuard guard(x.device());
    check_launch("fused_rope",
                 kernels::rope_rotate_cuda(x.data_ptr(), out.data_ptr(), cos.data_ptr<float>(),
                                           sin.data_ptr<float>(), shape, element_type(x.scalar_type()),
                                           inverse, c10::cuda::getCurrentCUDAStream().stream()));
    return out;
#else
    no_cuda_kernels("fused_rope");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_rope",
                                  [&] { rope_rotate_cpu<scalar_t>(x, out, cos, sin, shape, inverse); });
  return out;
}

template <class T>
void norm_rope_forward_cpu(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& weight,
                           const torch::Tensor& cos, const torch::Tensor& sin,
                           const kernels::RopeShape& shape, double eps, double multiplier) {
  using Acc = typename kernels::Element<T>::acc;
  const T* in = x.data_ptr<T>();
  T* out = y.data_ptr<T>();
  const float *w = weight.data_ptr<float>(), *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  at::parallel_for(0, shape.rows(), rows_grain(shape.head_dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = kernels::rope_table_offset(shape, row);
      kernels::norm_rope_forward_row<T, Acc>(in + kernels::rope_input_offset(shape, row),
                                             out + row * shape.head_dim, w, Acc(eps), Acc(multiplier), c + t,
                                             s + t, shape.head_dim, shape.pairs);
    }
  });
}

template <class T>
void norm_rope_backward_cpu(const torch::Tensor& x, const torch::Tensor& grad, torch::Tensor& grad_x,
                            float* grad_weight_rows, const torch::Tensor& weight, const torch::Tensor& cos,
                            const torch::Tensor& sin, const kernels::RopeShape& shape, double eps,
                            double multiplier) {
  using Acc = typename kernels::Element<T>::acc;
  const T *in = x.data_ptr<T>(), *g = grad.data_ptr<T>();
  T* gx = grad_x.data_ptr<T>();
  const float *w = weight.data_ptr<float>(), *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  at::parallel_for(0, shape.rows(), rows_grain(shape.head_dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = kernels::rope_table_offset(shape, row), offset = row * shape.head_dim;
      kernels::norm_rope_backward_row<T, Acc>(
          in + kernels::rope_input_offset(shape, row), g + offset, gx + offset,
          grad_weight_rows ? grad_weight_rows + offset : nullptr, w, Acc(eps), Acc(multiplier), c + t, s + t,
          shape.head_dim, shape.pairs);
    }
  });
}

torch::Tensor norm_rope_forward(torch::Tensor x, const torch::Tensor& weight, const torch::Tensor& cos,
                                const torch::Tensor& sin, double eps, double multiplier) {
  if (x.stride(-1) != 1) x = x.contiguous();
  const auto shape = rope_shape(x, cos);
  auto y = torch::empty({shape.batch, shape.heads, shape.tokens, shape.head_dim}, x.options());
  if (x.is_cuda()) {
#ifdef MUGV_HAVE_CUDA_KERNELS
    const c10::cuda::CUDAGuard guard(x.device());
    check_launch("fused_norm_rope",
                 kernels::norm_rope_forward_cuda(x.data_ptr(), y.data_ptr(), weight.data_ptr<float>(),
                                                 float(eps), float(multiplier), cos.data_ptr<float>(),
                                                 sin.data_ptr<float>(), shape, element_type(x.scalar_type()),
                                                 c10::cuda::getCurrentCUDAStream().stream()));
    return y;
#else
    no_cuda_kernels("fused_norm_rope");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_norm_rope", [&] {
    norm_rope_forward_cpu<scalar_t>(x, y, weight, cos, sin, shape, eps, multiplier);
  });
  return y;
}

// (dL/dx, dL/dweight or undefined) from grad = dL/dy.
std::pair<torch::Tensor, torch::Tensor> norm_rope_backward(torch::Tensor x, const torch::Tensor& grad_in,
                                                           const torch::Tensor& weight,
                                                           const torch::Tensor& cos, const torch::Tensor& sin,
                                                           double eps, double multiplier,
                                                           bool weight_gradient) {
  if (x.stride(-1) != 1) x = x.contiguous();
  const auto shape = rope_shape(x, cos);
  const auto grad = grad_in.to(x.scalar_type()).contiguous();
  auto grad_x = torch::empty({shape.batch, shape.heads, shape.tokens, shape.head_dim}, x.options());
  torch::Tensor rows;  // each row's share of dL/dweight, summed below in a fixed order
  if (weight_gradient)
    rows = torch::empty({shape.rows(), shape.head_dim}, x.options().dtype(torch::kFloat32));
  float* rows_data = rows.defined() ? rows.data_ptr<float>() : nullptr;
  if (x.is_cuda()) {
#ifdef MUGV_HAVE_CUDA_KERNELS
    const c10::cuda::CUDAGuard guard(x.device());
    check_launch("fused_norm_rope",
                 kernels::norm_rope_backward_cuda(
                     x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), rows_data, weight.data_ptr<float>(),
                     float(eps), float(multiplier), cos.data_ptr<float>(), sin.data_ptr<float>(), shape,
                     element_type(x.scalar_type()), c10::cuda::getCurrentCUDAStream().stream()));
#else
    no_cuda_kernels("fused_norm_rope");
#endif
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_norm_rope", [&] {
      norm_rope_backward_cpu<scalar_t>(x, grad, grad_x, rows_data, weight, cos, sin, shape, eps, multiplier);
    });
  }
  return {grad_x, rows.defined() ? rows.sum(0) : torch::Tensor()};
}

class FusedNormRope : public torch::autograd::Function<FusedNormRope> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               torch::Tensor cos, torch::Tensor sin, double eps, double multiplier) {
    ctx->save_for_backward({x, weight, cos, sin});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["multiplier"] = multiplier;
    return norm_rope_forward(x, weight, cos, sin, eps, multiplier);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad_x, grad_weight;
    if (grads[0].defined())
      std::tie(grad_x, grad_weight) = norm_rope_backward(
          saved[0], grads[0], saved[1], saved[2], saved[3], ctx->saved_data["eps"].toDouble(),
          ctx->saved_data["multiplier"].toDouble(), ctx->needs_input_grad(1));
    return {grad_x, grad_weight, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class FusedRope : public torch::autograd::Function<FusedRope> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor cos,
                               torch::Tensor sin) {
    ctx->save_for_backward({cos, sin});
    return rope_rotate(x, cos, sin, /*inverse=*/false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad_x;
    if (grads[0].defined()) grad_x = rope_rotate(grads[0], saved[0], saved[1], /*inverse=*/true);
    return {grad_x, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_kernels_enabled() {
  return fused_switch().load();
}
void set_fused_kernels(bool enabled) {
  fused_switch().store(enabled);
}

bool cuda_kernels_built() {
#ifdef MUGV_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool fused_rope_applies(const torch::Tensor& x, const torch::Tensor& angles) {
  if (!fused_kernels_enabled() || !x.defined() || !angles.defined()) return false;
  if (x.dim() != 4 || x.size(3) % 2 != 0) return false;
  const auto type = x.scalar_type();
  const bool float_type = type == torch::kFloat32 || type == torch::kBFloat16 || type == torch::kFloat16;
  if (x.is_cuda() ? !(cuda_kernels_built() && float_type)
                  : !(x.is_cpu() && (float_type || type == torch::kFloat64)))
    return false;
  if (angles.scalar_type() != torch::kFloat32 || angles.requires_grad() || angles.device() != x.device())
    return false;
  if (angles.dim() == 3 ? angles.size(0) != x.size(0) : angles.dim() != 2) return false;
  return angles.size(-2) == x.size(2) && angles.size(-1) <= x.size(3) / 2;
}

torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& angles) {
  if (!fused_rope_applies(x, angles))
    throw Error(ErrorCode::invalid_argument, "fused_rope", "these inputs need the reference apply_rope");
  rope_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedRope::apply(x, angles.cos().contiguous(), angles.sin().contiguous());
}

int64_t fused_rope_calls() {
  return rope_calls.load(std::memory_order_relaxed);
}

bool fused_norm_rope_applies(const torch::Tensor& x, const torch::Tensor& weight,
                             const torch::Tensor& angles) {
  return fused_rope_applies(x, angles) && weight.defined() && weight.scalar_type() == torch::kFloat32 &&
         weight.dim() == 1 && weight.size(0) == x.size(3) && weight.device() == x.device();
}

torch::Tensor fused_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                              double multiplier, const torch::Tensor& angles) {
  if (!fused_norm_rope_applies(x, weight, angles))
    throw Error(ErrorCode::invalid_argument, "fused_norm_rope", "these inputs need the unfused path");
  norm_rope_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedNormRope::apply(x, weight.contiguous(), angles.cos().contiguous(), angles.sin().contiguous(),
                              eps, multiplier);
}

int64_t fused_norm_rope_calls() {
  return norm_rope_calls.load(std::memory_order_relaxed);
}

}  // namespace mugv
