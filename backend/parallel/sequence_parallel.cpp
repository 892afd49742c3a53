#include "parallel/sequence_parallel.h"

#include "core/error.h"
#include "core/strings.h"

namespace mugv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The collective of one direction of an op. Ops are listed once and each autograd function below pairs a
// forward collective with its backward one, so the pairing is written in a single place.
enum class Collective { keep_slice, gather, reduce_scatter, sum, heads_to_sequence, sequence_to_heads };

torch::Tensor run(Collective c, GroupKind kind, ProcessGroups& g, const torch::Tensor& x) {
  switch (c) {
    case Collective::keep_slice: {
      const int n = g.group_size(kind);
      if (x.size(1) % n != 0)
        throw Error(ErrorCode::invalid_argument, "sequence parallel",
                    cat(x.size(1), " tokens do not split over ", n, " ranks"));
      return x.chunk(n, 1)[static_cast<size_t>(g.group_rank(kind))].contiguous();
    }
    case Collective::gather:
      return g.all_gather(kind, x.contiguous(), 1);
    case Collective::reduce_scatter:
      return g.reduce_scatter_sum(kind, x.contiguous(), 1);
    case Collective::sum: {
      torch::Tensor out = x.clone();
      g.all_reduce_sum(kind, out);
      return out;
    }
    case Collective::heads_to_sequence:
      return g.all_to_all(kind, x, 1, 2);
    case Collective::sequence_to_heads:
      return g.all_to_all(kind, x, 2, 1);
  }
  return x;
}

template <Collective Forward, Collective Backward, GroupKind Kind>
struct CollectiveOp : public torch::autograd::Function<CollectiveOp<Forward, Backward, Kind>> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t groups_address) {
    ctx->saved_data["groups"] = groups_address;
    auto& g = *reinterpret_cast<ProcessGroups*>(groups_address);
    return run(Forward, Kind, g, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& g = *reinterpret_cast<ProcessGroups*>(ctx->saved_data["groups"].toInt());
    return {run(Backward, Kind, g, grads[0]), torch::Tensor()};
  }
};

// Identity forward (a copy, so autograd sees a new tensor), sum backward.
struct SumGradient : public torch::autograd::Function<SumGradient> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t groups_address) {
    ctx->saved_data["groups"] = groups_address;
    return x.clone();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& g = *reinterpret_cast<ProcessGroups*>(ctx->saved_data["groups"].toInt());
    return {run(Collective::sum, GroupKind::sequence, g, grads[0]), torch::Tensor()};
  }
};

}  // namespace

C10dDiTParallel::C10dDiTParallel(std::shared_ptr<ProcessGroups> groups) : groups_(std::move(groups)) {}

int C10dDiTParallel::tp_size() const {
  return groups_->layout().tp;
}
int C10dDiTParallel::tp_rank() const {
  return groups_->coords().tp_rank;
}
int C10dDiTParallel::cp_size() const {
  return groups_->layout().cp;
}
int C10dDiTParallel::cp_rank() const {
  return groups_->coords().cp_rank;
}

torch::Tensor C10dDiTParallel::scatter_sequence(const torch::Tensor& x) {
  return CollectiveOp<Collective::keep_slice, Collective::gather, GroupKind::sequence>::apply(
      x, groups_address());
}
torch::Tensor C10dDiTParallel::gather_sequence(const torch::Tensor& x) {
  return CollectiveOp<Collective::gather, Collective::keep_slice, GroupKind::sequence>::apply(
      x, groups_address());
}
torch::Tensor C10dDiTParallel::gather_tensor_parallel(const torch::Tensor& x) {
  if (tp_size() == 1) return x;
  return CollectiveOp<Collective::gather, Collective::reduce_scatter, GroupKind::tensor>::apply(
      x, groups_address());
}
torch::Tensor C10dDiTParallel::reduce_scatter_tensor_parallel(const torch::Tensor& x) {
  if (tp_size() == 1) return x;
  return CollectiveOp<Collective::reduce_scatter, Collective::gather, GroupKind::tensor>::apply(
      x, groups_address());
}
torch::Tensor C10dDiTParallel::sum_gradient_over_sequence(const torch::Tensor& x) {
  return SumGradient::apply(x, groups_address());
}
torch::Tensor C10dDiTParallel::heads_to_sequence(const torch::Tensor& x) {
  return CollectiveOp<Collective::heads_to_sequence, Collective::sequence_to_heads,
                      GroupKind::context>::apply(x, groups_address());
}
torch::Tensor C10dDiTParallel::sequence_to_heads(const torch::Tensor& x) {
  return CollectiveOp<Collective::sequence_to_heads, Collective::heads_to_sequence,
                      GroupKind::context>::apply(x, groups_address());
}

}  // namespace mugv
