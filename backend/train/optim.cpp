#include "train/optim.h"

#include "core/error.h"
#include "core/strings.h"
#include "model/weights.h"
#include "train/adamw_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace mugv {

void load_named_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::filesystem::path& path, const std::string& prefix) {
  auto file = SafetensorsFile::open(path);
  std::vector<torch::Tensor> loaded;
  for (const auto& [name, tensor] : tensors) {
    const std::string key = prefix + name;
    if (!file.contains(key))
      throw Error(ErrorCode::corrupt, path.string(), cat("tensor ", key, " is missing"));
    auto t = tensor_from_view(file.at(key), path.string());
    if (t.sizes() != tensor.sizes())
      throw Error(ErrorCode::corrupt, path.string(),
                  cat(key, " has shape ", t.sizes(), "; expected ", tensor.sizes()));
    loaded.push_back(t);
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].second.copy_(loaded[i]);
}

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamWOptions options)
    : params_(std::move(named_parameters)), options_(options) {
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

namespace {

bool fused_cpu_eligible(const torch::Tensor& p, const torch::Tensor& g, const torch::Tensor& m,
                        const torch::Tensor& v) {
  for (const torch::Tensor* t : {&p, &g, &m, &v})
    if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat32 || !t->is_contiguous()) return false;
  return g.numel() == p.numel() && m.numel() == p.numel() && v.numel() == p.numel();
}

// The one-pass update (train/adamw_kernel.h) over ranges of at least 16384 elements per thread; its bits do
// not depend on the split.
void adamw_update_cpu(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& m, torch::Tensor& v,
                      const AdamWOptions& o, double lr, double bc1, double bc2) {
  const AdamWScalars scalars{float(1.0 - lr * o.weight_decay),
                             float(o.beta1),
                             float(1.0 - o.beta1),
                             float(o.beta2),
                             float(1.0 - o.beta2),
                             float(std::sqrt(bc2)),
                             float(o.eps),
                             float(lr / bc1)};
  float* param = p.data_ptr<float>();
  const float* grad = g.data_ptr<float>();
  float *exp_avg = m.data_ptr<float>(), *exp_avg_sq = v.data_ptr<float>();
  at::parallel_for(0, p.numel(), 16384, [&](int64_t begin, int64_t end) {
    adamw_update_range(param + begin, grad + begin, exp_avg + begin, exp_avg_sq + begin, end - begin,
                       scalars);
  });
}

#if TORCH_VERSION_MAJOR >= 2
// LibTorch 2.x's multi-tensor fused AdamW kernel (CUDA): one launch for many parameters.
bool fused_cuda_eligible(const AdamWSlot& s) {
  for (const torch::Tensor* t : {&s.param, &s.grad, &s.exp_avg, &s.exp_avg_sq})
    if (!t->is_cuda() || t->scalar_type() != torch::kFloat32 || !t->is_contiguous()) return false;
  return s.param.device() == s.grad.device() && s.param.device() == s.exp_avg.device() &&
         s.param.device() == s.exp_avg_sq.device() && s.grad.numel() == s.param.numel();
}

void adamw_update_cuda(const std::vector<const AdamWSlot*>& slots, const AdamWOptions& o, int64_t step) {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  // The kernel reads each parameter's step count from a device tensor (it never writes it).
  const torch::Tensor count = torch::full(
      {}, double(step), torch::TensorOptions().dtype(torch::kFloat32).device(slots[0]->param.device()));
  for (const AdamWSlot* s : slots) {
    params.push_back(s->param);
    grads.push_back(s->grad);
    exp_avgs.push_back(s->exp_avg);
    exp_avg_sqs.push_back(s->exp_avg_sq);
    steps.push_back(count);
  }
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, {}, steps, slots[0]->lr, o.beta1, o.beta2,
                    o.weight_decay, o.eps, /*amsgrad=*/false, /*maximize=*/false);
}
#else
// LibTorch 1.x has no fused AdamW kernel: CUDA parameters take the op sequence.
bool fused_cuda_eligible(const AdamWSlot&) {
  return false;
}
#endif

}  // namespace

void AdamW::update_by_ops(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& exp_avg,
                          torch::Tensor& exp_avg_sq, const AdamWOptions& options, double lr, double bc1,
                          double bc2) {
  if (options.weight_decay != 0) p.mul_(1.0 - lr * options.weight_decay);
  exp_avg.mul_(options.beta1).add_(g, 1.0 - options.beta1);
  exp_avg_sq.mul_(options.beta2).addcmul_(g, g, 1.0 - options.beta2);
  auto denom = (exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(options.eps);
  p.addcdiv_(exp_avg, denom, -lr / bc1);
}

void AdamW::update(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& exp_avg,
                   torch::Tensor& exp_avg_sq, const AdamWOptions& options, double lr, double bc1,
                   double bc2) {
  if (fused_cpu_eligible(p, g, exp_avg, exp_avg_sq))
    adamw_update_cpu(p, g, exp_avg, exp_avg_sq, options, lr, bc1, bc2);
  else
    update_by_ops(p, g, exp_avg, exp_avg_sq, options, lr, bc1, bc2);
}

const char* AdamW::update_path(const AdamWSlot& s) {
  if (fused_cuda_eligible(s)) return "fused_cuda";
  return fused_cpu_eligible(s.param, s.grad, s.exp_avg, s.exp_avg_sq) ? "one_pass_cpu" : "ops";
}

void AdamW::update_all(const std::vector<AdamWSlot>& slots, const AdamWOptions& options, int64_t step) {
  const double bc1 = 1.0 - std::pow(options.beta1, double(step));
  const double bc2 = 1.0 - std::pow(options.beta2, double(step));
  // Fused CUDA slots by learning rate (μP gives groups of parameters their own): one launch per group.
  std::map<double, std::vector<const AdamWSlot*>> fused_by_lr;
  for (const AdamWSlot& s : slots) {
    if (fused_cuda_eligible(s)) {
      fused_by_lr[s.lr].push_back(&s);
      continue;
    }
    torch::Tensor p = s.param, m = s.exp_avg, v = s.exp_avg_sq;
    update(p, s.grad, m, v, options, s.lr, bc1, bc2);
  }
#if TORCH_VERSION_MAJOR >= 2
  for (const auto& [lr, group] : fused_by_lr) adamw_update_cuda(group, options, step);
#endif
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  std::vector<AdamWSlot> slots;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    if (p.grad().defined()) slots.push_back({p, p.grad(), exp_avg_[i], exp_avg_sq_[i], lr * lr_scale(i)});
  }
  update_all(slots, options_, step_);
}

NamedTensors AdamW::state() const {
  NamedTensors named;
  for (size_t i = 0; i < params_.size(); ++i) {
    named.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
    named.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  return named;
}

NamedTensors adamw_state_targets(const NamedTensors& params) {
  NamedTensors targets;
  for (const auto& [name, p] : params) {
    targets.emplace_back("exp_avg." + name, p);
    targets.emplace_back("exp_avg_sq." + name, p);
  }
  return targets;
}

NamedTensors AdamW::state_targets() const {
  return adamw_state_targets(params_);
}

std::map<std::string, std::string> AdamW::state_metadata() const {
  return {{"step", std::to_string(step_)},
          {"optimizer", "adamw"},
          {"beta1", cat(options_.beta1)},
          {"beta2", cat(options_.beta2)},
          {"eps", cat(options_.eps)}};
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& state, int64_t step,
                       const std::string& subject) {
  std::vector<torch::Tensor> fresh;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
      const std::string key = kind + params_[i].first;
      auto it = state.find(key);
      if (it == state.end()) throw Error(ErrorCode::corrupt, subject, cat("tensor ", key, " is missing"));
      if (it->second.sizes() != params_[i].second.sizes())
        throw Error(ErrorCode::corrupt, subject,
                    cat(key, " has shape ", it->second.sizes(), "; expected ", params_[i].second.sizes()));
      fresh.push_back(it->second.to(torch::kFloat32).contiguous().clone());
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i] = fresh[2 * i];
    exp_avg_sq_[i] = fresh[2 * i + 1];
  }
  step_ = step;
}

void AdamW::save(const std::filesystem::path& path) const {
  save_named_tensors(state(), path, state_metadata());
}

void AdamW::load(const std::filesystem::path& path) {
  auto file = SafetensorsFile::open(path);
  auto it = file.metadata().find("step");
  if (it == file.metadata().end())
    throw Error(ErrorCode::corrupt, path.string(), "optimizer step is missing");
  std::map<std::string, torch::Tensor> state;
  for (const auto& name : file.names()) state[name] = tensor_from_view(file.at(name), path.string());
  load_state(state, std::stoll(it->second), path.string());
}

Ema::Ema(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters, double decay)
    : decay_(decay) {
  for (const auto& [name, p] : named_parameters) shadow_.emplace_back(name, p.detach().clone());
}

double Ema::decay_at(int64_t step) const {
  return std::min(decay_, (1.0 + double(step)) / (10.0 + double(step)));
}

void Ema::update(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters, int64_t step) {
  torch::NoGradGuard no_grad;
  const double weight = 1.0 - decay_at(step);
  for (size_t i = 0; i < shadow_.size(); ++i)
    shadow_[i].second.lerp_(named_parameters[i].second.detach(), weight);
}

void Ema::save(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata) const {
  auto meta = metadata;
  meta["ema_decay"] = cat(decay_);
  save_named_tensors(shadow_, path, meta);
}

void Ema::load(const std::filesystem::path& path) {
  load_named_tensors(shadow_, path);
}

const char* to_string(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::constant:
      return "constant";
    case LrSchedule::cosine:
      return "cosine";
    default:
      return "unknown";
  }
}

std::optional<LrSchedule> lr_schedule_from_string(std::string_view name) {
  if (name == "constant") return LrSchedule::constant;
  if (name == "cosine") return LrSchedule::cosine;
  return std::nullopt;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> with_grad;
  for (const auto& p : params)
    if (p.grad().defined()) with_grad.push_back(p);
  return torch::nn::utils::clip_grad_norm_(with_grad,
                                           max_norm > 0 ? max_norm : std::numeric_limits<double>::infinity());
}

double scheduled_lr(int64_t step, double lr, int64_t warmup_steps, int64_t total_steps, LrSchedule schedule,
                    double min_lr) {
  if (warmup_steps > 0 && step <= warmup_steps) return lr * double(step) / double(warmup_steps);
  if (schedule != LrSchedule::cosine || total_steps <= warmup_steps) return lr;
  double progress = double(step - warmup_steps) / double(total_steps - warmup_steps);
  progress = std::min(1.0, std::max(0.0, progress));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace mugv
