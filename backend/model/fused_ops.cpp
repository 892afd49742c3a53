#include "model/fused_ops.h"

#include "core/error.h"
#include "model/kernels/cuda_kernels.h"
#include "model/kernels/gated_residual_math.h"
#include "model/kernels/norm_modulate_math.h"
#include "model/kernels/norm_rope_math.h"
#include "model/kernels/rope_math.h"

#include <ATen/Parallel.h>

#ifdef MUGV_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mugv {
namespace {

std::atomic<int64_t> rope_calls{0}, norm_rope_calls{0}, norm_modulate_calls{0}, gated_residual_calls{0};

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

kernels::ElementType element_type(const char* what, torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return kernels::ElementType::float32;
    case torch::kFloat16:
      return kernels::ElementType::float16;
    case torch::kBFloat16:
      return kernels::ElementType::bfloat16;
    default:
      throw Error(ErrorCode::unsupported, what, "no CUDA kernel for this element type");
  }
}

// Runs the fused operation `what` on x's device: for a CUDA x, cuda_launch(element type, stream) on x's
// device and current stream (it returns a launcher's error or nullptr), else cpu_loop(). The launch is only
// compiled in where the kernels are built; a CUDA x elsewhere never gets here (the *_applies checks).
template <class CudaLaunch, class CpuLoop>
void run_fused(const char* what, const torch::Tensor& x, CudaLaunch&& cuda_launch, CpuLoop&& cpu_loop) {
  if (!x.is_cuda()) {
    cpu_loop();
    return;
  }
#ifdef MUGV_HAVE_CUDA_KERNELS
  const c10::cuda::CUDAGuard guard(x.device());
  if (const char* error =
          cuda_launch(element_type(what, x.scalar_type()), c10::cuda::getCurrentCUDAStream().stream()))
    throw Error(ErrorCode::internal, what, std::string("CUDA kernel launch failed: ") + error);
#else
  (void)cuda_launch;
  throw Error(ErrorCode::unsupported, what, "this build has no CUDA kernels");
#endif
}

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
  run_fused(
      "fused_rope", x,
      [&](kernels::ElementType type, void* stream) {
        return kernels::rope_rotate_cuda(x.data_ptr(), out.data_ptr(), cos.data_ptr<float>(),
                                         sin.data_ptr<float>(), shape, type, inverse, stream);
      },
      [&] {
        AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_rope",
                                        [&] { rope_rotate_cpu<scalar_t>(x, out, cos, sin, shape, inverse); });
      });
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
  run_fused(
      "fused_norm_rope", x,
      [&](kernels::ElementType type, void* stream) {
        return kernels::norm_rope_forward_cuda(x.data_ptr(), y.data_ptr(), weight.data_ptr<float>(),
                                               float(eps), float(multiplier), cos.data_ptr<float>(),
                                               sin.data_ptr<float>(), shape, type, stream);
      },
      [&] {
        AT_DISPATCH_FLOATING_TYPES_AND2(
            torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_norm_rope",
            [&] { norm_rope_forward_cpu<scalar_t>(x, y, weight, cos, sin, shape, eps, multiplier); });
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
  run_fused(
      "fused_norm_rope", x,
      [&](kernels::ElementType type, void* stream) {
        return kernels::norm_rope_backward_cuda(
            x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), rows_data, weight.data_ptr<float>(), float(eps),
            float(multiplier), cos.data_ptr<float>(), sin.data_ptr<float>(), shape, type, stream);
      },
      [&] {
        AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, x.scalar_type(), "fused_norm_rope",
                                        [&] {
                                          norm_rope_backward_cpu<scalar_t>(x, grad, grad_x, rows_data, weight,
                                                                           cos, sin, shape, eps, multiplier);
                                        });
      });
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

// ---- LayerNorm + adaLN modulation ----

// The token layout a fused operation's backward needs, kept in its autograd context.
void save_layout(torch::autograd::AutogradContext* ctx, const TokenLayout& layout) {
  ctx->saved_data["frames"] = layout.frames;
  ctx->saved_data["offset"] = layout.offset;
  ctx->saved_data["total"] = layout.total;
}
TokenLayout saved_layout(torch::autograd::AutogradContext* ctx) {
  return {ctx->saved_data["frames"].toInt(), ctx->saved_data["offset"].toInt(),
          ctx->saved_data["total"].toInt()};
}

// rows [B, n, d] summed over the tokens of each modulation group: [B, G, d], in a fixed order.
torch::Tensor sum_over_groups(const torch::Tensor& rows, const kernels::ModulationShape& s) {
  if (s.groups == 1) return rows.sum(1, /*keepdim=*/true);
  auto out = torch::zeros({s.batch, s.groups, s.dim}, rows.options());
  kernels::for_each_modulation_run(
      s, [&](int64_t first, int64_t length, int64_t group, int64_t whole_frames) {
        const auto part = rows.narrow(1, first, length);
        if (whole_frames == 0)
          out.narrow(1, group, 1).add_(part.sum(1, /*keepdim=*/true));
        else
          out.narrow(1, group, whole_frames)
              .add_(part.view({s.batch, whole_frames, s.tokens_per_frame(), s.dim}).sum(2));
      });
  return out;
}

// x of T, y (and so the upstream gradient) of U: the same, or a 16-bit type from a float32 x.
template <class T, class U>
void norm_modulate_forward_cpu(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& scale,
                               const torch::Tensor& shift, torch::Tensor& stats, double eps,
                               const kernels::ModulationShape& shape) {
  using Acc = typename kernels::Element<T>::acc;
  const T* in = x.data_ptr<T>();
  U* out = y.data_ptr<U>();
  const float *sc = scale.data_ptr<float>(), *sh = shift.data_ptr<float>();
  Acc* mean = stats.data_ptr<Acc>();
  Acc* rstd = mean + shape.rows();
  at::parallel_for(0, shape.rows(), rows_grain(shape.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t m = kernels::modulation_offset(shape, row), offset = row * shape.dim;
      kernels::norm_modulate_forward_row<T, U, Acc>(in + offset, out + offset, sc + m, sh + m, shape.dim,
                                                    Acc(eps), mean[row], rstd[row]);
    }
  });
}

template <class T, class U>
void norm_modulate_backward_cpu(const torch::Tensor& x, const torch::Tensor& grad, torch::Tensor& grad_x,
                                float* scale_share, const torch::Tensor& scale, const torch::Tensor& stats,
                                const kernels::ModulationShape& shape) {
  using Acc = typename kernels::Element<T>::acc;
  const T* in = x.data_ptr<T>();
  const U* g = grad.data_ptr<U>();
  T* gx = grad_x.data_ptr<T>();
  const float* sc = scale.data_ptr<float>();
  const Acc* mean = stats.data_ptr<Acc>();
  const Acc* rstd = mean + shape.rows();
  at::parallel_for(0, shape.rows(), rows_grain(shape.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t offset = row * shape.dim;
      kernels::norm_modulate_backward_row<T, U, Acc>(
          in + offset, g + offset, gx + offset, scale_share ? scale_share + offset : nullptr,
          sc + kernels::modulation_offset(shape, row), shape.dim, mean[row], rstd[row]);
    }
  });
}

template <class T>
struct TypeTag {
  using type = T;
};

// body(TypeTag<T>{}, TypeTag<U>{}) for a pair of element types (x and y of norm_modulate, x and h of the
// gated residual): equal, or a float32 T with a 16-bit U.
template <class Body>
void with_cpu_in_out_types(torch::ScalarType type, torch::ScalarType out_type, Body body) {
  if (type == out_type) {
    AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, type, "fused operations",
                                    [&] { body(TypeTag<scalar_t>{}, TypeTag<scalar_t>{}); });
  } else if (type == torch::kFloat32 && out_type == torch::kBFloat16) {
    body(TypeTag<float>{}, TypeTag<c10::BFloat16>{});
  } else if (type == torch::kFloat32 && out_type == torch::kHalf) {
    body(TypeTag<float>{}, TypeTag<c10::Half>{});
  } else {
    throw Error(ErrorCode::unsupported, "fused operations", "no CPU loop for this pair of element types");
  }
}

// The row statistics: [2, rows] (means, then rstds) in the arithmetic's type.
torch::Tensor empty_row_stats(const torch::Tensor& x, int64_t rows) {
  return torch::empty(
      {2, rows}, x.options().dtype(x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32));
}

// (y of out_type, row statistics) for x, scale and shift contiguous (scale and shift float32).
std::pair<torch::Tensor, torch::Tensor> norm_modulate_forward(const torch::Tensor& x,
                                                              const torch::Tensor& scale,
                                                              const torch::Tensor& shift, double eps,
                                                              const kernels::ModulationShape& shape,
                                                              torch::ScalarType out_type) {
  auto y = torch::empty_like(x, x.options().dtype(out_type));
  auto stats = empty_row_stats(x, shape.rows());
  run_fused(
      "fused_norm_modulate", x,
      [&](kernels::ElementType type, void* stream) {
        float* mean = stats.data_ptr<float>();
        return kernels::norm_modulate_forward_cuda(x.data_ptr(), y.data_ptr(), scale.data_ptr<float>(),
                                                   shift.data_ptr<float>(), mean, mean + shape.rows(),
                                                   float(eps), shape, type,
                                                   element_type("fused_norm_modulate", out_type), stream);
      },
      [&] {
        with_cpu_in_out_types(x.scalar_type(), out_type, [&](auto in, auto out) {
          norm_modulate_forward_cpu<typename decltype(in)::type, typename decltype(out)::type>(
              x, y, scale, shift, stats, eps, shape);
        });
      });
  return {y, stats};
}

// (dL/dx, each row's g·x̂ [B, n, d] float or undefined) from grad = dL/dy (contiguous, y's type).
std::pair<torch::Tensor, torch::Tensor> norm_modulate_backward(
    const torch::Tensor& x, const torch::Tensor& grad, const torch::Tensor& scale, const torch::Tensor& stats,
    const kernels::ModulationShape& shape, bool scale_gradient) {
  auto grad_x = torch::empty_like(x);
  torch::Tensor shares;
  if (scale_gradient)
    shares = torch::empty({shape.batch, shape.tokens, shape.dim}, x.options().dtype(torch::kFloat32));
  float* share_data = shares.defined() ? shares.data_ptr<float>() : nullptr;
  run_fused(
      "fused_norm_modulate", x,
      [&](kernels::ElementType type, void* stream) {
        const float* mean = stats.data_ptr<float>();
        return kernels::norm_modulate_backward_cuda(
            x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), share_data, scale.data_ptr<float>(), mean,
            mean + shape.rows(), shape, type, element_type("fused_norm_modulate", grad.scalar_type()),
            stream);
      },
      [&] {
        with_cpu_in_out_types(x.scalar_type(), grad.scalar_type(), [&](auto in, auto out) {
          norm_modulate_backward_cpu<typename decltype(in)::type, typename decltype(out)::type>(
              x, grad, grad_x, share_data, scale, stats, shape);
        });
      });
  return {grad_x, shares};
}

class FusedNormModulate : public torch::autograd::Function<FusedNormModulate> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& scale, const torch::Tensor& shift, double eps,
                               int64_t frames, int64_t offset, int64_t total, int64_t out_type) {
    const auto x = x_in.contiguous();
    const auto scale_f = scale.to(torch::kFloat32).contiguous(),
               shift_f = shift.to(torch::kFloat32).contiguous();
    const auto shape = modulation_shape(x, scale.size(1), TokenLayout{frames, offset, total});
    auto [y, stats] =
        norm_modulate_forward(x, scale_f, shift_f, eps, shape, static_cast<torch::ScalarType>(out_type));
    ctx->save_for_backward({x, scale_f, stats});
    save_layout(ctx, TokenLayout{frames, offset, total});
    ctx->saved_data["out_type"] = out_type;
    ctx->saved_data["scale_type"] = static_cast<int64_t>(scale.scalar_type());
    ctx->saved_data["shift_type"] = static_cast<int64_t>(shift.scalar_type());
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::autograd::variable_list out(8);
    if (!grads[0].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto shape = modulation_shape(x, saved[1].size(1), saved_layout(ctx));
    const auto grad =
        grads[0].to(static_cast<torch::ScalarType>(ctx->saved_data["out_type"].toInt())).contiguous();
    auto [grad_x, shares] =
        norm_modulate_backward(x, grad, saved[1], saved[2], shape, ctx->needs_input_grad(1));
    auto as = [&](const torch::Tensor& t, const char* key) {
      return t.to(static_cast<torch::ScalarType>(ctx->saved_data[key].toInt()));
    };
    out[0] = grad_x;
    if (shares.defined()) out[1] = as(sum_over_groups(shares, shape), "scale_type");
    if (ctx->needs_input_grad(2)) out[2] = as(sum_over_groups(grad.to(torch::kFloat32), shape), "shift_type");
    return out;
  }
};

// ---- gated residual ----

template <class T, class U>
void gated_residual_forward_cpu(const torch::Tensor& x, const torch::Tensor& h, torch::Tensor& out,
                                const torch::Tensor& gate, const kernels::ModulationShape& shape) {
  const T* xs = x.data_ptr<T>();
  const U* hs = h.data_ptr<U>();
  T* o = out.data_ptr<T>();
  const float* g = gate.data_ptr<float>();
  at::parallel_for(0, shape.rows(), rows_grain(shape.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t offset = row * shape.dim;
      kernels::gated_residual_forward_row<T, U>(xs + offset, hs + offset, o + offset,
                                                g + kernels::modulation_offset(shape, row), shape.dim);
    }
  });
}

template <class T, class U>
void gated_residual_backward_cpu(const torch::Tensor& grad, const torch::Tensor& h, U* grad_h,
                                 float* gate_share, const torch::Tensor& gate,
                                 const kernels::ModulationShape& shape) {
  const T* gs = grad.data_ptr<T>();
  const U* hs = h.data_ptr<U>();
  const float* g = gate.data_ptr<float>();
  at::parallel_for(0, shape.rows(), rows_grain(shape.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t offset = row * shape.dim;
      kernels::gated_residual_backward_row<T, U>(gs + offset, hs + offset, grad_h ? grad_h + offset : nullptr,
                                                 gate_share ? gate_share + offset : nullptr,
                                                 g + kernels::modulation_offset(shape, row), shape.dim);
    }
  });
}

class FusedGatedResidual : public torch::autograd::Function<FusedGatedResidual> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& h_in, const torch::Tensor& gate, int64_t frames,
                               int64_t offset, int64_t total) {
    const auto x = x_in.contiguous(), h = h_in.contiguous();
    const auto gate_f = gate.to(torch::kFloat32).contiguous();
    const auto shape = modulation_shape(x, gate.size(1), TokenLayout{frames, offset, total});
    auto out = torch::empty_like(x);
    run_fused(
        "fused_gated_residual", x,
        [&](kernels::ElementType type, void* stream) {
          return kernels::gated_residual_forward_cuda(
              x.data_ptr(), h.data_ptr(), out.data_ptr(), gate_f.data_ptr<float>(), shape, type,
              element_type("fused_gated_residual", h.scalar_type()), stream);
        },
        [&] {
          with_cpu_in_out_types(x.scalar_type(), h.scalar_type(), [&](auto in, auto other) {
            gated_residual_forward_cpu<typename decltype(in)::type, typename decltype(other)::type>(
                x, h, out, gate_f, shape);
          });
        });
    ctx->save_for_backward({h, gate_f});
    save_layout(ctx, TokenLayout{frames, offset, total});
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["gate_type"] = static_cast<int64_t>(gate.scalar_type());
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::autograd::variable_list out(6);
    if (!grads[0].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &gate = saved[1];
    const auto x_type = static_cast<torch::ScalarType>(ctx->saved_data["x_type"].toInt());
    const auto grad = grads[0].to(x_type).contiguous();
    const auto shape = modulation_shape(grad, gate.size(1), saved_layout(ctx));
    torch::Tensor grad_h, shares;
    if (ctx->needs_input_grad(1)) grad_h = torch::empty_like(h);
    if (ctx->needs_input_grad(2))
      shares = torch::empty({shape.batch, shape.tokens, shape.dim}, h.options().dtype(torch::kFloat32));
    float* share_data = shares.defined() ? shares.data_ptr<float>() : nullptr;
    run_fused(
        "fused_gated_residual", grad,
        [&](kernels::ElementType type, void* stream) {
          return kernels::gated_residual_backward_cuda(
              grad.data_ptr(), h.data_ptr(), grad_h.defined() ? grad_h.data_ptr() : nullptr, share_data,
              gate.data_ptr<float>(), shape, type, element_type("fused_gated_residual", h.scalar_type()),
              stream);
        },
        [&] {
          with_cpu_in_out_types(x_type, h.scalar_type(), [&](auto in, auto other) {
            using U = typename decltype(other)::type;
            gated_residual_backward_cpu<typename decltype(in)::type, U>(
                grad, h, grad_h.defined() ? grad_h.data_ptr<U>() : nullptr, share_data, gate, shape);
          });
        });
    if (ctx->needs_input_grad(0)) out[0] = grad;
    out[1] = grad_h;
    if (shares.defined())
      out[2] = sum_over_groups(shares, shape)
                   .to(static_cast<torch::ScalarType>(ctx->saved_data["gate_type"].toInt()));
    return out;
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

bool fused_rope_applies(const torch::Tensor& x, const RopeTable& rope) {
  if (!fused_kernels_enabled() || !x.defined() || !rope.defined()) return false;
  if (x.dim() != 4 || x.size(3) % 2 != 0) return false;
  const auto type = x.scalar_type();
  const bool float_type = type == torch::kFloat32 || type == torch::kBFloat16 || type == torch::kFloat16;
  if (x.is_cuda() ? !(cuda_kernels_built() && float_type)
                  : !(x.is_cpu() && (float_type || type == torch::kFloat64)))
    return false;
  for (const auto* table : {&rope.cos, &rope.sin})
    if (table->scalar_type() != torch::kFloat32 || table->requires_grad() || table->device() != x.device() ||
        !table->is_contiguous())
      return false;
  if (rope.cos.dim() == 3 ? rope.cos.size(0) != x.size(0) : rope.cos.dim() != 2) return false;
  return rope.tokens() == x.size(2) && rope.pairs() <= x.size(3) / 2 && rope.sin.sizes() == rope.cos.sizes();
}

torch::Tensor fused_rope(const torch::Tensor& x, const RopeTable& rope) {
  if (!fused_rope_applies(x, rope))
    throw Error(ErrorCode::invalid_argument, "fused_rope", "these inputs need the reference apply_rope");
  rope_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedRope::apply(x, rope.cos, rope.sin);
}

int64_t fused_rope_calls() {
  return rope_calls.load(std::memory_order_relaxed);
}

bool fused_norm_rope_applies(const torch::Tensor& x, const torch::Tensor& weight, const RopeTable& rope) {
  return fused_rope_applies(x, rope) && weight.defined() && weight.scalar_type() == torch::kFloat32 &&
         weight.dim() == 1 && weight.size(0) == x.size(3) && weight.device() == x.device();
}

torch::Tensor fused_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                              double multiplier, const RopeTable& rope) {
  if (!fused_norm_rope_applies(x, weight, rope))
    throw Error(ErrorCode::invalid_argument, "fused_norm_rope", "these inputs need the unfused path");
  norm_rope_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedNormRope::apply(x, weight.contiguous(), rope.cos, rope.sin, eps, multiplier);
}

int64_t fused_norm_rope_calls() {
  return norm_rope_calls.load(std::memory_order_relaxed);
}

bool fused_norm_modulate_applies(const torch::Tensor& x, const torch::Tensor& scale,
                                 const torch::Tensor& shift, const TokenLayout& layout,
                                 std::optional<torch::ScalarType> out_type) {
  if (!fused_kernels_enabled() || !x.defined() || !scale.defined() || !shift.defined()) return false;
  if (x.dim() != 3 || x.size(2) == 0) return false;
  const auto type = x.scalar_type();
  const bool float_type = type == torch::kFloat32 || type == torch::kBFloat16 || type == torch::kFloat16;
  if (x.is_cuda() ? !(cuda_kernels_built() && float_type)
                  : !(x.is_cpu() && (float_type || type == torch::kFloat64)))
    return false;
  if (out_type && *out_type != type &&
      !(type == torch::kFloat32 && (*out_type == torch::kBFloat16 || *out_type == torch::kFloat16)))
    return false;
  for (const auto* m : {&scale, &shift})
    if (!m->is_floating_point() || m->dim() != 3 || m->size(0) != x.size(0) || m->size(2) != x.size(2) ||
        m->device() != x.device() || m->size(1) != scale.size(1))
      return false;
  const int64_t groups = scale.size(1);
  if (groups == 1) return true;
  // Per-frame groups: the tokens must lie in the sequence, whose frame tokens split evenly.
  return layout.frames > 0 && groups == layout.frames + 2 && layout.total >= 2 + layout.frames &&
         (layout.total - 2) % layout.frames == 0 && layout.offset >= 0 &&
         layout.offset + x.size(1) <= layout.total;
}

torch::Tensor fused_norm_modulate(const torch::Tensor& x, const torch::Tensor& scale,
                                  const torch::Tensor& shift, double eps, const TokenLayout& layout,
                                  std::optional<torch::ScalarType> out_type) {
  if (!fused_norm_modulate_applies(x, scale, shift, layout, out_type))
    throw Error(ErrorCode::invalid_argument, "fused_norm_modulate", "these inputs need the unfused path");
  norm_modulate_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedNormModulate::apply(x, scale, shift, eps, layout.frames, layout.offset, layout.total,
                                  static_cast<int64_t>(out_type.value_or(x.scalar_type())));
}

int64_t fused_norm_modulate_calls() {
  return norm_modulate_calls.load(std::memory_order_relaxed);
}

bool fused_gated_residual_applies(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& gate,
                                  const TokenLayout& layout) {
  // The same element types, shapes and groups as the LayerNorm + modulation, with h in the place of y.
  return h.defined() && h.sizes() == x.sizes() && h.device() == x.device() &&
         fused_norm_modulate_applies(x, gate, gate, layout, h.scalar_type());
}

torch::Tensor fused_gated_residual(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& gate,
                                   const TokenLayout& layout) {
  if (!fused_gated_residual_applies(x, h, gate, layout))
    throw Error(ErrorCode::invalid_argument, "fused_gated_residual", "these inputs need the unfused path");
  gated_residual_calls.fetch_add(1, std::memory_order_relaxed);
  return FusedGatedResidual::apply(x, h, gate, layout.frames, layout.offset, layout.total);
}

int64_t fused_gated_residual_calls() {
  return gated_residual_calls.load(std::memory_order_relaxed);
}

kernels::ModulationShape modulation_shape(const torch::Tensor& x, int64_t groups, const TokenLayout& layout) {
  kernels::ModulationShape s;
  s.batch = x.size(0);
  s.tokens = x.size(1);
  s.dim = x.size(2);
  s.groups = groups;
  s.frames = layout.frames;
  s.offset = layout.offset;
  s.total = layout.total;
  return s;
}

}  // namespace mugv
