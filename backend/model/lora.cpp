#include "model/lora.h"

#include "core/error.h"
#include "core/strings.h"

#include <cmath>
#include <set>

namespace mugv {
namespace {

std::map<std::string, std::shared_ptr<torch::nn::Module>> linears_by_path(const DiTImpl& dit) {
  std::map<std::string, std::shared_ptr<torch::nn::Module>> all;
  for (const auto& item : dit.named_modules("", /*include_self=*/false)) all[item.key()] = item.value();
  std::map<std::string, std::shared_ptr<torch::nn::Module>> out;
  for (const auto& path : adaptable_linears(dit)) {
    auto it = all.find(path);
    if (it == all.end() || !it->second->as<torch::nn::Linear>())
      throw Error(ErrorCode::internal, "dit", cat(path, " is not a linear of this model"));
    out[path] = it->second;
  }
  return out;
}

// Checks every module of `weights` against `dit` before anything changes; returns the base linears by path.
std::map<std::string, torch::nn::Linear> check_weights(const DiTImpl& dit, const LoraWeights& weights,
                                                       const std::string& subject) {
  const auto linears = linears_by_path(dit);
  std::vector<std::string> unknown;
  for (const auto& [path, w] : weights.modules)
    if (!linears.count(path)) unknown.push_back(path);
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 12; ++i) list += (i ? ", " : "") + unknown[i];
    if (unknown.size() > 12) list += cat(" and ", unknown.size() - 12, " more");
    throw Error(ErrorCode::invalid_argument, subject,
                cat(unknown.size(), " of ", weights.modules.size(),
                    " adapted modules match no linear of this model: ", list, " (this model's are like ",
                    linears.begin()->first, "; is the adapter for another model?)"));
  }
  std::map<std::string, torch::nn::Linear> out;
  for (const auto& [path, w] : weights.modules) {
    torch::nn::Linear base(std::dynamic_pointer_cast<torch::nn::LinearImpl>(linears.at(path)));
    const int64_t out_features = base->weight.size(0), in_features = base->weight.size(1);
    if (!w.down.defined() || !w.up.defined() || w.down.dim() != 2 || w.up.dim() != 2 ||
        w.down.size(1) != in_features || w.up.size(0) != out_features || w.up.size(1) != w.down.size(0))
      throw Error(ErrorCode::invalid_argument, subject,
                  cat(path, ": lora_A ", w.down.defined() ? w.down.sizes().vec() : std::vector<int64_t>{},
                      " and lora_B ", w.up.defined() ? w.up.sizes().vec() : std::vector<int64_t>{},
                      " do not fit a linear of ", in_features, " -> ", out_features));
    out.emplace(path, base);
  }
  return out;
}

// Trainable adapters keep fp32 (their gradients and AdamW state) beside a bf16 base; autocast mixes the two.
torch::ScalarType adapter_dtype(const torch::Tensor& base_weight) {
  const auto t = base_weight.scalar_type();
  return t == torch::kFloat64 ? t : torch::kFloat32;
}

}  // namespace

std::vector<std::string> adaptable_linears(const DiTImpl& dit) {
  std::vector<std::string> out;
  for (const auto& linear : adaptable_linear_shapes(dit.config())) out.push_back(linear.path);
  return out;
}

std::vector<std::string> resolve_lora_targets(const DiTImpl& dit, const std::vector<std::string>& targets) {
  return resolve_lora_target_paths(adaptable_linears(dit), targets);
}

double LoraWeights::scale_of(const std::string& module) const {
  const auto& w = modules.at(module);
  const double a = w.alpha ? *w.alpha : alpha ? *alpha : double(w.rank());
  return a / double(w.rank());
}

void LoraSet::attach_trainable(DiTImpl& dit, const LoraConfig& config) {
  if (dit.parallel())
    throw Error(ErrorCode::unsupported, "--lora",
                "adapters on a model split by tensor parallel are not supported");
  if (has_trainable_) throw Error(ErrorCode::conflict, "--lora", "the model already has a trainable adapter");
  const auto paths = resolve_lora_targets(dit, config.targets);
  const auto linears = linears_by_path(dit);
  torch::NoGradGuard no_grad;
  for (const auto& path : paths) {
    auto module = linears.at(path);
    auto* base = module->as<torch::nn::Linear>();
    const int64_t out_features = base->weight.size(0), in_features = base->weight.size(1);
    const auto options =
        torch::TensorOptions().dtype(adapter_dtype(base->weight)).device(base->weight.device());
    torch::nn::Linear down(torch::nn::LinearOptions(in_features, config.rank).bias(false));
    torch::nn::Linear up(torch::nn::LinearOptions(config.rank, out_features).bias(false));
    down->to(options.device(), options.dtype().toScalarType());
    up->to(options.device(), options.dtype().toScalarType());
    const double bound = 1.0 / std::sqrt(double(in_features));  // kaiming-uniform with a = sqrt(5), as PEFT
    down->weight.uniform_(-bound, bound);
    up->weight.zero_();
    module->register_module("lora_A", down);
    module->register_module("lora_B", up);
    by_linear_[module.get()].push_back({down->weight, up->weight, config.scale(), config.dropout, true});
  }
  has_trainable_ = true;
}

void LoraSet::attach(DiTImpl& dit, const LoraWeights& weights, double scale, const std::string& subject,
                     std::optional<torch::Device> device_override) {
  if (dit.parallel())
    throw Error(ErrorCode::unsupported, subject,
                "adapters on a model split by tensor parallel are not supported");
  const auto bases = check_weights(dit, weights, subject);
  for (const auto& [path, w] : weights.modules) {
    const auto& base = bases.at(path);
    // In the base weight's dtype: loaded adapters run outside autocast, beside a bf16 or fp32 model alike.
    const auto dtype = base->weight.scalar_type();
    const torch::Device device = device_override.value_or(base->weight.device());
    const auto copy = [&](const torch::Tensor& t) {
      return t.to(device, dtype, /*non_blocking=*/false, /*copy=*/true).detach();
    };
    by_linear_[static_cast<const torch::nn::Module*>(base.get())].push_back(
        {copy(w.down), copy(w.up), weights.scale_of(path) * scale, 0.0, false});
  }
}

torch::Tensor LoraSet::add_to(const torch::nn::Linear& base, const torch::Tensor& x, torch::Tensor y) const {
  auto it = by_linear_.find(static_cast<const torch::nn::Module*>(base.get()));
  if (it == by_linear_.end()) return y;
  const auto shape = y.sizes().vec();
  const int64_t out = shape.back();
  for (const auto& e : it->second) {
    const auto in = e.dropout > 0 && base->is_training() ? torch::dropout(x, e.dropout, true) : x;
    const auto low = torch::nn::functional::linear(in, e.down);  // [..., rank]
    y = torch::addmm(y.reshape({-1, out}), low.reshape({-1, low.size(-1)}), e.up.t(), /*beta=*/1,
                     /*alpha=*/e.scale)
            .view(shape);
  }
  return y;
}

void LoraSet::to(torch::Device device) {
  for (auto& [module, entries] : by_linear_)
    for (auto& e : entries)
      if (!e.trainable) {
        e.down = e.down.to(device);
        e.up = e.up.to(device);
      }
}

void check_lora_weights(const DiTImpl& dit, const LoraWeights& weights, const std::string& subject) {
  (void)check_weights(dit, weights, subject);
}

LoraSet& lora_set_of(DiTImpl& dit) {
  if (!dit.lora()) dit.set_lora(std::make_shared<LoraSet>());
  return *dit.lora();
}

void merge_lora(DiTImpl& dit, const LoraWeights& weights, double scale, const std::string& subject) {
  const auto bases = check_weights(dit, weights, subject);
  torch::NoGradGuard no_grad;
  for (const auto& [path, w] : weights.modules) {
    auto& weight = bases.at(path)->weight;
    auto delta =
        torch::matmul(w.up.to(weight.device(), torch::kFloat32), w.down.to(weight.device(), torch::kFloat32));
    weight.copy_(
        (weight.to(torch::kFloat32) + delta * (weights.scale_of(path) * scale)).to(weight.scalar_type()));
  }
}

LoraWeights extract_lora(const DiTImpl& base, const DiTImpl& tuned, int64_t rank,
                         const std::vector<std::string>& targets, double* relative_error) {
  if (rank < 1) throw Error(ErrorCode::invalid_argument, "--rank", "the rank is a whole number from 1");
  const auto paths = resolve_lora_targets(base, targets);
  const auto base_linears = linears_by_path(base), tuned_linears = linears_by_path(tuned);
  torch::NoGradGuard no_grad;
  LoraWeights out;
  out.alpha = double(rank);
  double residual = 0, total = 0;
  for (const auto& path : paths) {
    const auto& wb = base_linears.at(path)->as<torch::nn::Linear>()->weight;
    const auto& wt = tuned_linears.at(path)->as<torch::nn::Linear>()->weight;
    if (wb.sizes() != wt.sizes())
      throw Error(ErrorCode::invalid_argument, path,
                  cat("the base has shape ", wb.sizes(), ", the tuned model ", wt.sizes()));
    const auto delta = (wt.to(torch::kCPU, torch::kFloat64) - wb.to(torch::kCPU, torch::kFloat64));
    auto [u, s, vh] = at::linalg_svd(delta, /*full_matrices=*/false);
    const int64_t r = std::min<int64_t>(rank, s.size(0));
    const auto root = s.narrow(0, 0, r).sqrt();
    auto up = u.narrow(1, 0, r) * root.unsqueeze(0);
    auto down = root.unsqueeze(1) * vh.narrow(0, 0, r);
    residual += (delta - torch::matmul(up, down)).pow(2).sum().item<double>();
    total += delta.pow(2).sum().item<double>();
    // A rank below the asked one (a small linear) keeps alpha / rank = 1 through its own alpha.
    out.modules[path] = {down.to(torch::kFloat32).contiguous(), up.to(torch::kFloat32).contiguous(),
                         r == rank ? std::nullopt : std::optional<double>(double(r))};
  }
  if (relative_error) *relative_error = total > 0 ? std::sqrt(residual / total) : 0.0;
  return out;
}

}  // namespace mugv
