#include "train/zero_optimizer.h"

#include "core/error.h"
#include "core/strings.h"

namespace mugv {

ZeroAdamW::ZeroAdamW(std::shared_ptr<ProcessGroups> groups, NamedTensors named_parameters,
                     AdamWOptions options)
    : groups_(std::move(groups)), params_(std::move(named_parameters)), options_(options) {
  int64_t total = 0;
  for (const auto& [name, p] : params_) {
    param_offsets_.push_back(total);
    total += p.numel();
  }
  const int64_t ranks = groups_->group_size(GroupKind::data);
  shard_size_ = (total + ranks - 1) / ranks;
  begin_ = std::min(total, shard_size_ * groups_->group_rank(GroupKind::data));
  end_ = std::min(total, begin_ + shard_size_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t a = std::max(begin_, param_offsets_[i]);
    const int64_t b = std::min(end_, param_offsets_[i] + params_[i].second.numel());
    if (a < b) pieces_.push_back({i, a - param_offsets_[i], b - a, a - begin_});
  }
  state_options_ =
      torch::TensorOptions()
          .dtype(torch::kFloat32)
          .device(params_.empty() ? torch::Device(torch::kCPU) : params_.front().second.device());
  exp_avg_ = torch::zeros({shard_size_}, state_options_);
  exp_avg_sq_ = torch::zeros({shard_size_}, state_options_);
}

void ZeroAdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

void ZeroAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  std::vector<AdamWSlot> slots;
  for (const auto& piece : pieces_) {
    const auto& p = params_[piece.param].second;
    if (!p.grad().defined()) continue;
    slots.push_back({p.detach().view(-1).narrow(0, piece.offset, piece.length),
                     p.grad().reshape(-1).narrow(0, piece.offset, piece.length),
                     exp_avg_.narrow(0, piece.shard_offset, piece.length),
                     exp_avg_sq_.narrow(0, piece.shard_offset, piece.length), lr * lr_scale(piece.param)});
  }
  AdamW::update_all(slots, options_, step_);
  // This rank's range of the updated flat parameter vector; padding past the end stays zero.
  torch::Tensor mine = torch::zeros({shard_size_}, state_options_);
  for (const auto& piece : pieces_)
    mine.narrow(0, piece.shard_offset, piece.length)
        .copy_(params_[piece.param].second.detach().view(-1).narrow(0, piece.offset, piece.length));
  // Straight into one persistent buffer (no concatenation copy): the list-form all-gather fills its views.
  if (!gathered_.defined()) {
    gathered_ = torch::empty({shard_size_ * groups_->group_size(GroupKind::data)}, state_options_);
    for (const auto& chunk : gathered_.chunk(groups_->group_size(GroupKind::data)))
      gathered_views_.push_back(chunk);
  }
  groups_->all_gather_into(GroupKind::data, mine, gathered_views_);
  const torch::Tensor& all = gathered_;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    p.detach().view(-1).copy_(all.narrow(0, param_offsets_[i], p.numel()));
  }
}

NamedTensors ZeroAdamW::state() const {
  NamedTensors named;
  for (const auto& piece : pieces_) {
    const std::string suffix = cat(params_[piece.param].first, "@", piece.offset);
    named.emplace_back("exp_avg." + suffix, exp_avg_.narrow(0, piece.shard_offset, piece.length));
    named.emplace_back("exp_avg_sq." + suffix, exp_avg_sq_.narrow(0, piece.shard_offset, piece.length));
  }
  return named;
}

std::map<std::string, std::string> ZeroAdamW::state_metadata() const {
  return {{"step", std::to_string(step_)},
          {"optimizer", "adamw-zero1"},
          {"data_parallel_rank", std::to_string(groups_->group_rank(GroupKind::data))},
          {"data_parallel_size", std::to_string(groups_->group_size(GroupKind::data))},
          {"beta1", cat(options_.beta1)},
          {"beta2", cat(options_.beta2)},
          {"eps", cat(options_.eps)}};
}

void ZeroAdamW::load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                           const std::string& subject) {
  auto m = torch::zeros_like(exp_avg_), v = torch::zeros_like(exp_avg_sq_);
  for (const auto& piece : pieces_) {
    const auto& [name, p] = params_[piece.param];
    for (auto [kind, target] : {std::pair{"exp_avg.", &m}, std::pair{"exp_avg_sq.", &v}}) {
      auto it = state.find(kind + name);
      if (it == state.end())
        throw Error(ErrorCode::corrupt, subject, cat("tensor ", kind, name, " is missing"));
      if (it->second.numel() != p.numel())
        throw Error(ErrorCode::corrupt, subject,
                    cat(kind, name, " has shape ", it->second.sizes(), "; expected ", p.sizes()));
      target->narrow(0, piece.shard_offset, piece.length)
          .copy_(it->second.reshape(-1).narrow(0, piece.offset, piece.length));
    }
  }
  exp_avg_ = m;
  exp_avg_sq_ = v;
  step_ = step;
}

std::optional<std::pair<std::string, int64_t>> parse_state_piece(const std::string& name) {
  const auto at = name.rfind('@');
  if (at == std::string::npos || at + 1 >= name.size()) return std::nullopt;
  for (size_t i = at + 1; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
  return std::pair{name.substr(0, at), std::stoll(name.substr(at + 1))};
}

}  // namespace mugv
