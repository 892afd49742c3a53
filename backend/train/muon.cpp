#include "train/muon.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/dit_parallel.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mugv {
int muon_parts(const std::string& name, const torch::Tensor& parameter) {
  if (parameter.dim() != 2 || !ends_with(name, ".weight")) return 0;
  // Adapters stay on AdamW (their low rank is the point; orthogonalising B·A's factors is a different
  // method), as do embedding tables, which are lookups rather than maps between hidden spaces.
  if (name.find("lora_") != std::string::npos || name.find("embed") != std::string::npos ||
      name.find("relative_attention_bias") != std::string::npos)
    return 0;
  if (starts_with(name, "dit.blocks.")) {
    const TensorParallelRole role = tensor_parallel_role(name);
    return role.split == TensorSplit::column ? role.parts : 1;
  }
  const bool text_layer = starts_with(name, "text.layers.") || starts_with(name, "text.block.");
  if (!text_layer) return 0;
  return ends_with(name, ".qkv.weight") ? 3 : 1;
}

torch::Tensor newton_schulz(const torch::Tensor& matrix, int steps) {
  if (matrix.dim() != 2) throw Error(ErrorCode::invalid_argument, "muon", "Newton-Schulz needs a matrix");
  constexpr double a = 3.4445, b = -4.7750, c = 2.0315;
  torch::Tensor x = matrix.to(torch::kFloat32);
  const bool tall = x.size(0) > x.size(1);
  if (tall) x = x.t();  // iterate on the wide form: X·Xᵀ is the smaller Gram matrix
  x = x / (x.norm() + 1e-7);
  for (int i = 0; i < steps; ++i) {
    const torch::Tensor gram = torch::mm(x, x.t());
    const torch::Tensor poly = torch::addmm(gram, gram, gram, b, c);  // b·A + c·A²
    x = torch::addmm(x, poly, x, a, 1.0);                             // a·X + (b·A + c·A²)·X
  }
  return tall ? x.t().contiguous() : x;
}

double muon_rms_scale(int64_t rows, int64_t cols) {
  return 0.2 * std::sqrt(static_cast<double>(std::max(rows, cols)));
}

Muon::Muon(std::shared_ptr<ProcessGroups> groups, NamedTensors named_parameters, MuonOptions muon,
           AdamWOptions adam, bool zero_sharded)
    : groups_(std::move(groups)), muon_(muon), adam_(adam), zero_sharded_(zero_sharded && groups_) {
  if (groups_) {
    dp_rank_ = groups_->group_rank(GroupKind::data);
    dp_size_ = groups_->group_size(GroupKind::data);
    tp_rank_ = groups_->group_rank(GroupKind::tensor);
    tp_size_ = groups_->group_size(GroupKind::tensor);
  }
  for (auto& [name, p] : named_parameters) {
    Slot slot;
    slot.name = name;
    slot.param = p;
    slot.parts = muon_parts(name, p);
    slot.split = tp_size_ > 1 && tensor_parallel_role(name).split != TensorSplit::replicated;
    slots_.push_back(std::move(slot));
  }
  if (zero_sharded_) {
    // Largest first onto the least-loaded rank; ties by order, so every rank computes the same owners.
    std::vector<size_t> order(slots_.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t x, size_t y) { return slots_[x].param.numel() > slots_[y].param.numel(); });
    std::vector<int64_t> load(static_cast<size_t>(dp_size_), 0);
    for (size_t i : order) {
      const auto least = std::min_element(load.begin(), load.end()) - load.begin();
      slots_[i].owner = static_cast<int>(least);
      load[static_cast<size_t>(least)] += slots_[i].param.numel();
    }
    std::vector<int64_t> offset(static_cast<size_t>(dp_size_), 0);
    for (auto& slot : slots_) {
      slot.packed_offset = offset[static_cast<size_t>(slot.owner)];
      offset[static_cast<size_t>(slot.owner)] += slot.param.numel();
    }
    owned_capacity_ = std::max<int64_t>(1, *std::max_element(load.begin(), load.end()));
  }
  for (auto& slot : slots_)
    if (mine(slot)) allocate_state(slot);
}

bool Muon::mine(const Slot& slot) const {
  return slot.owner < 0 || slot.owner == dp_rank_;
}

void Muon::allocate_state(Slot& slot) const {
  auto zeros = [&] {
    return torch::zeros(slot.param.sizes(),
                        torch::TensorOptions().dtype(torch::kFloat32).device(slot.param.device()));
  };
  if (slot.parts > 0) {
    slot.momentum = zeros();
  } else {
    slot.exp_avg = zeros();
    slot.exp_avg_sq = zeros();
  }
}

void Muon::zero_grad() {
  for (auto& slot : slots_)
    if (slot.param.grad().defined()) slot.param.mutable_grad().zero_();
}

torch::Tensor Muon::orthogonalised(const Slot& slot, const torch::Tensor& update) const {
  const TensorParallelRole role = tensor_parallel_role(slot.name);
  torch::Tensor whole = update;
  if (slot.split) {
    std::vector<torch::Tensor> pieces;
    for (int r = 0; r < tp_size_; ++r) pieces.push_back(torch::empty_like(update));
    groups_->all_gather_into(GroupKind::tensor, update.contiguous(), pieces);
    whole = unshard_tensor(pieces, role);
  }
  std::vector<torch::Tensor> blocks;
  for (const auto& block : whole.chunk(slot.parts, 0))
    blocks.push_back(newton_schulz(block, muon_.ns_steps) * muon_rms_scale(block.size(0), block.size(1)));
  torch::Tensor result = torch::cat(blocks, 0);
  return slot.split ? shard_tensor(result, role, tp_rank_, tp_size_) : result;
}

void Muon::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(adam_.beta1, double(step_));
  const double bc2 = 1.0 - std::pow(adam_.beta2, double(step_));
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (!mine(slot) || !slot.param.grad().defined()) continue;
    torch::Tensor p = slot.param.detach();
    const torch::Tensor g = slot.param.grad().to(torch::kFloat32);
    if (slot.parts == 0) {
      AdamW::update(p, g, slot.exp_avg, slot.exp_avg_sq, adam_, lr * lr_scale(i), bc1, bc2);
      continue;
    }
    slot.momentum.mul_(muon_.momentum).add_(g);
    const torch::Tensor update = muon_.nesterov ? g.add(slot.momentum, muon_.momentum) : slot.momentum;
    const double muon_lr = lr * lr_scale(i) * muon_.lr_scale;
    if (adam_.weight_decay != 0) p.mul_(1.0 - muon_lr * adam_.weight_decay);
    p.add_(orthogonalised(slot, update).to(p.dtype()), -muon_lr);
  }
  if (zero_sharded_) gather_owned_parameters();
}

void Muon::gather_owned_parameters() {
  // One persistent buffer per rank's part, as ZeroAdamW keeps: no allocation per step.
  if (!packed_.defined()) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(slots_.front().param.device());
    packed_ = torch::zeros({owned_capacity_}, options);
    gathered_ = torch::empty({owned_capacity_ * dp_size_}, options);
    for (const auto& chunk : gathered_.chunk(dp_size_)) gathered_views_.push_back(chunk);
  }
  for (const auto& slot : slots_)
    if (slot.owner == dp_rank_)
      packed_.narrow(0, slot.packed_offset, slot.param.numel()).copy_(slot.param.detach().reshape(-1));
  groups_->all_gather_into(GroupKind::data, packed_, gathered_views_);
  for (auto& slot : slots_)
    if (slot.owner != dp_rank_)
      slot.param.detach().view(-1).copy_(
          gathered_views_[static_cast<size_t>(slot.owner)].narrow(0, slot.packed_offset, slot.param.numel()));
}

NamedTensors Muon::state() const {
  const std::string piece = zero_sharded_ ? "@0" : "";
  NamedTensors named;
  for (const auto& slot : slots_) {
    if (!mine(slot)) continue;
    if (slot.parts > 0) {
      named.emplace_back("momentum." + slot.name + piece, slot.momentum);
    } else {
      named.emplace_back("exp_avg." + slot.name + piece, slot.exp_avg);
      named.emplace_back("exp_avg_sq." + slot.name + piece, slot.exp_avg_sq);
    }
  }
  return named;
}

NamedTensors Muon::state_targets() const {
  NamedTensors targets;
  for (const auto& slot : slots_) {
    if (slot.parts > 0) {
      targets.emplace_back("momentum." + slot.name, slot.param);
    } else {
      targets.emplace_back("exp_avg." + slot.name, slot.param);
      targets.emplace_back("exp_avg_sq." + slot.name, slot.param);
    }
  }
  return targets;
}

std::map<std::string, std::string> Muon::state_metadata() const {
  std::map<std::string, std::string> m{{"step", std::to_string(step_)},
                                       {"optimizer", zero_sharded_ ? "muon-zero1" : "muon"},
                                       {"momentum", cat(muon_.momentum)},
                                       {"nesterov", muon_.nesterov ? "true" : "false"},
                                       {"ns_steps", std::to_string(muon_.ns_steps)},
                                       {"lr_scale", cat(muon_.lr_scale)},
                                       {"beta1", cat(adam_.beta1)},
                                       {"beta2", cat(adam_.beta2)},
                                       {"eps", cat(adam_.eps)}};
  if (zero_sharded_) {
    m["data_parallel_rank"] = std::to_string(dp_rank_);
    m["data_parallel_size"] = std::to_string(dp_size_);
  }
  return m;
}

void Muon::load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                      const std::string& subject) {
  // Everything is checked and copied before any slot changes, so a bad file leaves the optimizer as it was.
  std::vector<Slot> copy = slots_;
  for (auto& slot : copy) {
    if (!mine(slot)) continue;
    auto take = [&](const char* kind, torch::Tensor& target) {
      const std::string key = kind + slot.name;
      auto it = state.find(key);
      if (it == state.end()) throw Error(ErrorCode::corrupt, subject, cat("tensor ", key, " is missing"));
      if (it->second.sizes() != slot.param.sizes())
        throw Error(ErrorCode::corrupt, subject,
                    cat(key, " has shape ", it->second.sizes(), "; expected ", slot.param.sizes()));
      target = it->second.to(slot.param.device(), torch::kFloat32).contiguous().clone();
    };
    if (slot.parts > 0) {
      take("momentum.", slot.momentum);
    } else {
      take("exp_avg.", slot.exp_avg);
      take("exp_avg_sq.", slot.exp_avg_sq);
    }
  }
  slots_ = std::move(copy);
  step_ = step;
}

int64_t Muon::muon_parameter_count() const {
  int64_t n = 0;
  for (const auto& slot : slots_)
    if (slot.parts > 0) n += slot.param.numel();
  return n;
}

}  // namespace mugv
