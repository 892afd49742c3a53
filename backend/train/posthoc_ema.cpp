#include "train/posthoc_ema.h"

#include "core/error.h"
#include "core/strings.h"

#include <cmath>

namespace mugv {

double sigma_rel_of_gamma(double gamma) {
  return std::sqrt((gamma + 1) / ((gamma + 2) * (gamma + 2) * (gamma + 3)));
}

double gamma_of_sigma_rel(double sigma_rel) {
  // σ_rel falls monotonically from 0.2887 (γ = 0: every step weighted alike) towards 0 as γ grows.
  double lo = 0.0, hi = 1e6;
  if (!(sigma_rel > sigma_rel_of_gamma(hi) && sigma_rel < sigma_rel_of_gamma(lo)))
    throw Error(ErrorCode::invalid_argument, "EMA length",
                cat("sigma_rel ", sigma_rel, " is outside (", sigma_rel_of_gamma(hi), ", ",
                    sigma_rel_of_gamma(lo), ")"));
  for (int i = 0; i < 200; ++i) {
    const double mid = lo + (hi - lo) / 2;
    (sigma_rel_of_gamma(mid) > sigma_rel ? lo : hi) = mid;
  }
  return lo + (hi - lo) / 2;
}

double power_ema_beta(double gamma, int64_t step) {
  return std::pow(1.0 - 1.0 / static_cast<double>(std::max<int64_t>(1, step)), gamma + 1);
}

std::vector<double> posthoc_ema_weights(const std::vector<EmaProfilePoint>& snapshots,
                                        const EmaProfilePoint& target) {
  if (snapshots.empty()) throw Error(ErrorCode::invalid_argument, "post-hoc EMA", "there are no snapshots");
  int64_t last = 0;
  for (const auto& s : snapshots) last = std::max(last, s.step);
  if (target.step > last)
    throw Error(ErrorCode::invalid_argument, "post-hoc EMA",
                cat("step ", target.step, " is past the last snapshot (step ", last, ")"));
  // Times relative to the target's step keep t^(γ+1) in range for any run length.
  const double scale = static_cast<double>(target.step);
  // ∫_0^min(a,b) p_a p_b dτ for profiles (γa, ta), (γb, tb).
  auto inner = [&](const EmaProfilePoint& a, const EmaProfilePoint& b) {
    const double ta = a.step / scale, tb = b.step / scale, m = std::min(ta, tb), g = a.gamma + b.gamma + 1;
    return (a.gamma + 1) * (b.gamma + 1) * std::pow(m, g) /
           (g * std::pow(ta, a.gamma + 1) * std::pow(tb, b.gamma + 1));
  };
  const int64_t n = static_cast<int64_t>(snapshots.size());
  auto gram = torch::empty({n, n}, torch::kFloat64), rhs = torch::empty({n, 1}, torch::kFloat64);
  auto g = gram.accessor<double, 2>();
  auto r = rhs.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    r[i][0] = inner(snapshots[size_t(i)], target);
    for (int64_t j = 0; j < n; ++j) g[i][j] = inner(snapshots[size_t(i)], snapshots[size_t(j)]);
  }
  // Snapshots of neighbouring steps are nearly collinear: least squares through the pseudo-inverse.
  const torch::Tensor x = torch::matmul(torch::linalg::pinv(gram, 1e-12), rhs);
  std::vector<double> weights(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) weights[size_t(i)] = x[i][0].item<double>();
  return weights;
}

PowerEma::PowerEma(const NamedTensors& named_parameters, std::vector<double> sigma_rels)
    : sigma_rels_(std::move(sigma_rels)) {
  for (double s : sigma_rels_) {
    gammas_.push_back(gamma_of_sigma_rel(s));
    NamedTensors shadow;
    for (const auto& [name, p] : named_parameters)
      shadow.emplace_back(name, p.detach().to(torch::kFloat32).clone());
    shadows_.push_back(std::move(shadow));
  }
}

void PowerEma::update(const NamedTensors& named_parameters, int64_t step) {
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < shadows_.size(); ++k) {
    const double weight = 1.0 - power_ema_beta(gammas_[k], step);
    for (size_t i = 0; i < shadows_[k].size(); ++i)
      shadows_[k][i].second.lerp_(named_parameters[i].second.detach().to(torch::kFloat32), weight);
  }
}

std::string PowerEma::stem(size_t k) {
  return cat("ema_p", k);
}

std::vector<double> parse_sigma_rels(const std::string& text) {
  std::vector<double> values;
  for (const auto& item : split(text, ',')) {
    const std::string t = trim(item);
    if (t.empty()) continue;
    double v = 0;
    try {
      size_t used = 0;
      v = std::stod(t, &used);
      if (used != t.size()) throw std::invalid_argument(t);
    } catch (const std::exception&) {
      throw Error(ErrorCode::usage, "--ema-profiles", cat("'", t, "' is not a number"));
    }
    if (!(v > 0 && v < 0.28))
      throw Error(ErrorCode::usage, "--ema-profiles",
                  cat(t, " is no relative EMA length (0 < sigma_rel < 0.28)"));
    values.push_back(v);
  }
  return values;
}

}  // namespace mugv
