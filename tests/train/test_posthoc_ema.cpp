// Post-hoc EMA (train/posthoc_ema.h): the σ_rel ↔ γ map, a reconstruction from two profiles' snapshots
// against a profile tracked directly (on a simulated weight trajectory and on a real training run via `mugv
// ema`).
#include "core/error.h"
#include "core/paths.h"
#include "core/safetensors.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/checkpoint_store.h"
#include "train/posthoc_ema.h"
#include "train/run_layout.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <map>

using namespace mugv;

namespace {

// The weights of a trajectory averaged post hoc from `snapshots` (step -> per-profile tensors) at `target`.
torch::Tensor reconstruct(const std::map<int64_t, std::vector<torch::Tensor>>& snapshots,
                          const std::vector<double>& gammas, const EmaProfilePoint& target) {
  std::vector<EmaProfilePoint> points;
  std::vector<torch::Tensor> values;
  for (const auto& [step, per_profile] : snapshots) {
    if (step > target.step) continue;
    for (size_t k = 0; k < gammas.size(); ++k) {
      points.push_back({gammas[k], step});
      values.push_back(per_profile[k]);
    }
  }
  const auto w = posthoc_ema_weights(points, target);
  torch::Tensor sum = torch::zeros_like(values[0]);
  for (size_t i = 0; i < w.size(); ++i) sum += w[i] * values[i];
  return sum;
}

}  // namespace

TEST_CASE("sigma_rel and the power EMA's exponent map onto each other as in EDM2", "[unit][train][ema]") {
  CHECK(gamma_of_sigma_rel(0.10) == Approx(6.94).margin(0.01));
  CHECK(gamma_of_sigma_rel(0.05) == Approx(16.97).margin(0.01));
  for (double s : {0.01, 0.05, 0.13, 0.2}) CHECK(sigma_rel_of_gamma(gamma_of_sigma_rel(s)) == Approx(s));
  CHECK(power_ema_beta(5, 1) == 0);  // the first update copies the weights
  CHECK(test::expect_error([] { (void)gamma_of_sigma_rel(0.3); }).code() == ErrorCode::invalid_argument);
  CHECK(parse_sigma_rels(" 0.05, 0.1 ") == std::vector<double>{0.05, 0.1});
  CHECK(parse_sigma_rels("").empty());
  CHECK(test::expect_error([] { (void)parse_sigma_rels("0.05,wide"); }).code() == ErrorCode::usage);
  CHECK(test::expect_error([] {
          (void)posthoc_ema_weights({{6.94, 10}}, {6.94, 20});
        }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("a profile reconstructed from two others' snapshots matches the one tracked directly",
          "[unit][train][ema]") {
  // A drifting, noisy weight trajectory, as training makes.
  torch::manual_seed(4);
  const int64_t steps = 400, every = 10;
  NamedTensors theta = {{"w", torch::zeros({256})}};
  PowerEma tracked(theta, {0.05, 0.10});
  PowerEma direct(theta, {0.075, 0.15});
  std::map<int64_t, std::vector<torch::Tensor>> snapshots;
  std::map<int64_t, torch::Tensor> weights_at;
  const auto drift = torch::randn({256});
  for (int64_t t = 1; t <= steps; ++t) {
    theta[0].second += 0.01 * drift / std::sqrt(double(t)) + 0.02 * torch::randn({256});
    tracked.update(theta, t);
    direct.update(theta, t);
    weights_at[t] = theta[0].second.clone();
    if (t % every == 0)
      snapshots[t] = {tracked.tensors(0)[0].second.clone(), tracked.tensors(1)[0].second.clone()};
  }
  const std::vector<double> gammas = {tracked.gamma(0), tracked.gamma(1)};
  for (size_t k = 0; k < 2; ++k) {
    INFO("sigma_rel " << direct.sigma_rel(k));
    const torch::Tensor rec = reconstruct(snapshots, gammas, {direct.gamma(k), steps});
    const torch::Tensor truth = direct.tensors(k)[0].second;
    // Judged against how far the average is from the current weights (what the EMA changes).
    const double error = (rec - truth).norm().item<double>();
    const double scale = (truth - weights_at[steps]).norm().item<double>();
    CHECK(error < 0.05 * scale);
  }
}

TEST_CASE("mugv ema makes a run whose weights match an EMA tracked directly in training",
          "[cli][train][ema]") {
  test::MicroHome home(6);
  auto options = [](const std::string& run, const std::string& profiles) {
    auto o = test::micro_train_options(run, 40);
    o.ema_profiles = profiles;
    o.ema_snapshot_every = 2;
    o.save_every = 40;
    return o;
  };
  train_dit(options("tracked", "0.05,0.1"), {{"train", {{"ema_profiles", "0.05,0.1"}}}}, CancelToken());
  train_dit(options("direct", "0.075"), {{"train", {{"ema_profiles", "0.075"}}}}, CancelToken());
  CheckpointStore snapshots(run_paths("tracked").ema_snapshots());
  CHECK(snapshots.list().size() == 20);
  const fs::path dir = home.path() / "scratch";
  fs::create_directories(dir);
  auto r = test::run_mugv_cli("ema --run tracked --length 0.075 --out rebuilt --json", dir);
  if (!r) return;
  INFO(r->err);
  REQUIRE(r->exit_code == 0);
  const auto made = nlohmann::json::parse(r->out)["ema_from"];
  CHECK(made["snapshots"].size() == 20);
  CHECK(made["weight_sum"].get<double>() == Approx(1.0).margin(0.05));

  auto tensors = [](const fs::path& file) {
    auto st = SafetensorsFile::open(file);
    std::map<std::string, torch::Tensor> out;
    for (const auto& name : st.names()) out[name] = tensor_from_view(st.at(name), file.string());
    return out;
  };
  const auto rebuilt =
      tensors(CheckpointStore(run_paths("rebuilt").checkpoints()).open(40).dir / "model.safetensors");
  const fs::path direct_dir = CheckpointStore(run_paths("direct").checkpoints()).open(40).dir;
  const auto truth = tensors(direct_dir / "ema_p0.safetensors");
  const auto current = tensors(direct_dir / "model.safetensors");
  double error = 0, scale = 0;
  for (const auto& [name, t] : truth) {
    INFO(name);
    REQUIRE(rebuilt.count(name));
    error += (rebuilt.at(name) - t).pow(2).sum().item<double>();
    scale += (current.at(name) - t).pow(2).sum().item<double>();
  }
  INFO("reconstruction error " << std::sqrt(error) << " against the EMA's distance from the weights "
                               << std::sqrt(scale));
  CHECK(std::sqrt(error) < 0.1 * std::sqrt(scale));

  auto none = test::run_mugv_cli("ema --run direct --length 0.3 --out x", dir);
  CHECK(none->exit_code != 0);
}
