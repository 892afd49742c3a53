#include "train/gradient_sync.h"

#include "model/dit_parallel.h"

#include <chrono>
#include <cmath>

namespace mugv {
namespace {

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

GradientSync::GradientSync(std::shared_ptr<ProcessGroups> groups, NamedTensors params,
                           GradientSyncOptions options)
    : groups_(std::move(groups)), params_(std::move(params)) {
  const size_t n = params_.size();
  bucket_of_.assign(n, 0);
  slot_of_.assign(n, 0);
  arrived_.assign(n, false);
  tensor_parallel_piece_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    auto role = tensor_parallel_role(params_[i].first);
    tensor_parallel_piece_[i] = role.split != TensorSplit::replicated;
    if (!role.in_blocks) continue;
    if (role.split == TensorSplit::replicated)
      partial_over_sequence_.push_back(i);
    else
      partial_over_context_.push_back(i);
  }
  if (groups_->group_size(GroupKind::data) == 1) return;

  // Reverse registration order: the last layers' gradients exist first.
  Bucket current;
  int64_t bytes = 0;
  for (size_t k = n; k-- > 0;) {
    const auto& p = params_[k].second;
    current.params.push_back(k);
    current.offsets.push_back(bytes / 4);
    bytes += p.numel() * 4;
    if (bytes >= options.bucket_bytes || k == 0) {
      current.buffer =
          torch::zeros({bytes / 4}, torch::TensorOptions().dtype(torch::kFloat32).device(p.device()));
      for (size_t slot = 0; slot < current.params.size(); ++slot) {
        bucket_of_[current.params[slot]] = buckets_.size();
        slot_of_[current.params[slot]] = slot;
      }
      buckets_.push_back(std::move(current));
      current = Bucket{};
      bytes = 0;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    auto& p = params_[i].second;
    p.register_hook([this, i](torch::Tensor grad) { on_gradient(i, grad); });
  }
}

void GradientSync::begin_step(bool overlap) {
  armed_ = overlap && !buckets_.empty();
  communication_ms_ = 0;
  next_launch_ = 0;
  for (auto& b : buckets_) {
    b.arrived = 0;
    b.wait = nullptr;
  }
  std::fill(arrived_.begin(), arrived_.end(), false);
}

void GradientSync::on_gradient(size_t param, const torch::Tensor& grad) {
  if (!armed_) return;
  Bucket& b = buckets_[bucket_of_[param]];
  const size_t slot = slot_of_[param];
  torch::NoGradGuard no_grad;
  auto target = b.buffer.narrow(0, b.offsets[slot], params_[param].second.numel());
  // A tensor used twice in the graph gets one hook call with the summed gradient, but guard anyway.
  if (arrived_[param])
    target.add_(grad.reshape(-1));
  else
    target.copy_(grad.reshape(-1));
  if (!arrived_[param]) {
    arrived_[param] = true;
    ++b.arrived;
    launch_ready();
  }
}

void GradientSync::launch_ready() {
  // Collectives must start in the same order on every rank, whatever order this rank's backward produced the
  // gradients in: buckets go out strictly by index.
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].arrived == buckets_[next_launch_].params.size())
    launch(buckets_[next_launch_++]);
}

void GradientSync::launch(Bucket& b) {
  b.wait = groups_->all_reduce_sum_async(GroupKind::data, b.buffer);
}

void GradientSync::end_step() {
  armed_ = false;
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    // Gradients no hook copied (accumulated over several backward passes, or none on this rank: zeros).
    for (size_t slot = 0; slot < b.params.size(); ++slot)
      if (!arrived_[b.params[slot]]) {
        const auto& p = params_[b.params[slot]].second;
        auto target = b.buffer.narrow(0, b.offsets[slot], p.numel());
        if (p.grad().defined())
          target.copy_(p.grad().reshape(-1));
        else
          target.zero_();
        ++b.arrived;
      }
  }
  launch_ready();
  for (auto& b : buckets_) {
    auto t0 = std::chrono::steady_clock::now();
    b.wait();
    communication_ms_ += elapsed_ms(t0);
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      auto& p = params_[b.params[slot]].second;
      auto summed = b.buffer.narrow(0, b.offsets[slot], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(summed);
      // No gradient here: take the others' sum, unless no rank had one (then it stays without, as in one
      // process).
      else if (summed.ne(0).any().item<bool>())
        p.mutable_grad() = summed.clone();
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  sum_partial(GroupKind::sequence, partial_over_sequence_);
  sum_partial(GroupKind::context, partial_over_context_);
  communication_ms_ += elapsed_ms(t0);
}

void GradientSync::sum_partial(GroupKind kind, const std::vector<size_t>& params) {
  if (params.empty() || groups_->group_size(kind) == 1) return;
  std::vector<torch::Tensor> flat;
  for (size_t i : params) {
    auto& p = params_[i].second;
    flat.push_back(p.grad().defined() ? p.grad().reshape(-1) : torch::zeros({p.numel()}, p.options()));
  }
  torch::Tensor packed = torch::cat(flat);
  groups_->all_reduce_sum(kind, packed);
  int64_t offset = 0;
  for (size_t i : params) {
    auto& p = params_[i].second;
    auto summed = packed.narrow(0, offset, p.numel()).view(p.sizes());
    if (p.grad().defined())
      p.mutable_grad().copy_(summed);
    else
      p.mutable_grad() = summed.clone();
    offset += p.numel();
  }
}

double GradientSync::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  const bool first_tp_rank = groups_->coords().tp_rank == 0;
  double squares = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& g = params_[i].second.grad();
    if (!g.defined()) continue;
    // Replicated tensors are identical on every tensor-parallel rank: count them on the first one only.
    if (tensor_parallel_piece_[i] || first_tp_rank)
      squares += g.to(torch::kFloat64).pow(2).sum().item<double>();
  }
  auto total = torch::tensor({squares}, torch::kFloat64);
  groups_->all_reduce_sum(GroupKind::tensor, total);
  groups_->all_reduce_sum(GroupKind::pipeline, total);  // each stage holds its own parameters
  const double norm = std::sqrt(total.item<double>());
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad().mul_(coef);
  }
  return norm;
}

}  // namespace mugv
