// Width growth (HyperCloning, model/growth.h): the grown DiT computes what the narrow one does (1e-5), the
// noise breaks the copies' symmetry, unknown tensors are refused; `mugv grow` writes a run that `val-loss`
// scores like its source and `train --from` continues.
#include "core/error.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/presets.h"
#include "model/dit.h"
#include "model/growth.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <map>

using namespace mugv;

namespace {

DiTConfig narrow_config() {
  DiTConfig c;
  c.hidden = 48;
  c.depth = 2;
  c.heads = 2;
  c.head_dim = 24;
  c.mlp_ratio = 2;
  c.in_channels = 4;
  c.text_dim = 32;
  c.text_tokens = 12;
  return c;
}

// A DiT with every weight drawn (the zero-initialised adaLN and output layers would hide mistakes).
DiT random_dit(const DiTConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  DiT dit(c);
  torch::NoGradGuard no_grad;
  for (auto& p : dit->parameters()) p.normal_(0.0, 0.2);
  dit->eval();
  return dit;
}

DiT grown_dit(DiT& narrow, const GrowthOptions& options) {
  DiT wide(grown_dit_config(narrow->config(), options.factor));
  auto grown = grow_dit_tensors(module_state(*narrow), narrow->config(), options);
  std::map<std::string, torch::Tensor> by_name(grown.begin(), grown.end());
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : module_state(*wide)) {
    INFO(name);
    REQUIRE(by_name.count(name));
    REQUIRE(by_name[name].sizes() == target.sizes());
    target.copy_(by_name[name]);
  }
  wide->eval();
  return wide;
}

struct Inputs {
  torch::Tensor x, timestep, text, mask, fps;
};
Inputs inputs(const DiTConfig& c) {
  torch::manual_seed(11);
  Inputs in{torch::randn({2, c.in_channels, 3, 8, 8}), torch::tensor({120.0f, 870.0f}),
            torch::randn({2, 6, c.text_dim}), torch::ones({2, 6}), torch::full({2}, 8.0f)};
  in.mask[1][5] = 0;  // a padded caption token: the cross-attention bias must carry over too
  return in;
}

}  // namespace

TEST_CASE("a DiT grown 2x and 3x by HyperCloning computes the narrow model's output within 1e-5",
          "[unit][model][growth]") {
  DiT narrow = random_dit(narrow_config(), 1);
  const Inputs in = inputs(narrow->config());
  torch::NoGradGuard no_grad;
  const auto expected = narrow->forward(in.x, in.timestep, in.text, in.mask, in.fps);
  for (int factor : {2, 3}) {
    for (double noise : {0.0, 0.1}) {
      INFO("factor " << factor << ", noise " << noise);
      GrowthOptions options;
      options.factor = factor;
      options.noise = noise;
      DiT wide = grown_dit(narrow, options);
      CHECK(wide->config().hidden == 48 * factor);
      CHECK(wide->config().heads == 2 * factor);
      CHECK(wide->config().head_dim == 24);  // RoPE sees the same head width
      const auto got = wide->forward(in.x, in.timestep, in.text, in.mask, in.fps);
      const double scale = expected.abs().max().item<double>();
      CHECK((got - expected).abs().max().item<double>() / scale < 1e-5);
    }
  }
}

TEST_CASE("growth noise breaks the copies' symmetry: different weights and gradients per copy",
          "[unit][model][growth]") {
  DiT narrow = random_dit(narrow_config(), 2);
  GrowthOptions options;
  options.noise = 0.0;
  DiT plain = grown_dit(narrow, options);
  options.noise = 0.1;
  DiT noisy = grown_dit(narrow, options);
  auto weight = [](DiT& m, const std::string& name) {
    for (const auto& [n, t] : module_state(*m))
      if (n == name) return t;
    FAIL("no tensor " << name);
    return torch::Tensor();
  };
  const auto p = weight(plain, "blocks.0.mlp.fc2.weight"), q = weight(noisy, "blocks.0.mlp.fc2.weight");
  const int64_t in = p.size(1) / 2;
  CHECK(torch::equal(p.narrow(1, 0, in), p.narrow(1, in, in)));
  CHECK(!torch::allclose(q.narrow(1, 0, in), q.narrow(1, in, in)));
  CHECK(torch::allclose(q.narrow(1, 0, in) + q.narrow(1, in, in), 2 * p.narrow(1, 0, in), 1e-5, 1e-6));

  // One backward: the two copies of a duplicated output row get different gradients only with noise.
  auto row_gradient_gap = [&](DiT& m) {
    m->train();
    const Inputs x = inputs(m->config());
    m->zero_grad();
    m->forward(x.x, x.timestep, x.text, x.mask, x.fps).pow(2).mean().backward();
    const auto g = m->blocks[0]->as<DiTBlockImpl>()->mlp->fc1->weight.grad();
    const int64_t rows = g.size(0) / 2;
    return (g.narrow(0, 0, rows) - g.narrow(0, rows, rows)).abs().max().item<double>();
  };
  CHECK(row_gradient_gap(plain) < 1e-6);
  CHECK(row_gradient_gap(noisy) > 1e-4);
}

TEST_CASE("growth refuses tensors it does not know and shapes that do not fit", "[unit][model][growth]") {
  const DiTConfig c = narrow_config();
  auto e = test::expect_error([&] {
    (void)grow_dit_tensors({{"blocks.0.attn.new_gate", torch::zeros({48})}}, c, GrowthOptions{});
  });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK_THAT(e.what(), Catch::Contains("blocks.0.attn.new_gate"));
  e = test::expect_error([&] {
    (void)grow_dit_tensors({{"blocks.0.attn.qkv.weight", torch::zeros({96, 48})}}, c, GrowthOptions{});
  });
  CHECK_THAT(e.what(), Catch::Contains("expected 144"));
  GrowthOptions one;
  one.factor = 1;
  e = test::expect_error([&] { (void)grow_dit_tensors({}, c, one); });
  CHECK_THAT(e.what(), Catch::Contains("does not grow"));
}

TEST_CASE("mugv grow writes a wider run that scores like its source and trains on with --from",
          "[cli][train][growth]") {
  test::MicroHome home(6);
  train_dit(test::micro_train_options("small", 6), {}, CancelToken());
  const fs::path dir = home.path() / "scratch";
  fs::create_directories(dir);
  auto grow = test::run_mugv_cli("grow --run small --out wide --width 2 --weights model --json", dir);
  if (!grow) return;
  INFO(grow->err);
  REQUIRE(grow->exit_code == 0);
  const auto grown = nlohmann::json::parse(grow->out)["grown_from"];
  CHECK(grown["run"] == "small");
  CHECK(grown["preset"] == "micro-w2");
  CHECK(grown["output_difference"].get<double>() < 1e-5);
  CHECK(fs::exists(home.path() / "presets/models/micro-w2.toml"));
  CHECK(read_json_file(run_paths("wide").manifest())["preset"] == "micro-w2");

  // The same validation loss from the files: the grown run is the small model's function.
  auto val = [&](const std::string& run) {
    auto r = test::run_mugv_cli("val-loss --run " + run + " --dataset shapes --checkpoint 6 --json", dir);
    INFO(r->err);
    REQUIRE(r->exit_code == 0);
    return nlohmann::json::parse(r->out)["loss"].get<double>();
  };
  const double small = val("small"), wide = val("wide");
  CHECK(std::abs(small - wide) < 1e-5 * std::abs(small));

  auto trained = test::run_mugv_cli(
      "train --from wide --from-weights model --run wider --dataset shapes --steps 2 --batch 2 --threads 2 "
      "--save-every 2 --json",
      dir);
  INFO(trained->err);
  REQUIRE(trained->exit_code == 0);
  CHECK(read_json_file(run_paths("wider").manifest())["preset"] == "micro-w2");
  // Without --from-weights: a grown run holds only its weights, which stand for its EMA too.
  auto plain = test::run_mugv_cli(
      "train --from wide --run wider2 --dataset shapes --steps 2 --batch 2 --threads 2 --save-every 2 --json",
      dir);
  INFO(plain->err);
  REQUIRE(plain->exit_code == 0);
  CHECK(read_json_file(run_paths("wider2").manifest())["config"]["base"]["weights"] == "model");

  // A second growth to the same preset name reuses it; a clash of shapes or run names is refused.
  auto again = test::run_mugv_cli("grow --run small --out wide --width 2", dir);
  CHECK(again->exit_code != 0);
  CHECK_THAT(again->err, Catch::Contains("exists"));
  auto clash = test::run_mugv_cli("grow --run small --out wide3 --width 3 --preset micro-w2", dir);
  CHECK(clash->exit_code != 0);
  CHECK_THAT(clash->err, Catch::Contains("another shape"));
}
