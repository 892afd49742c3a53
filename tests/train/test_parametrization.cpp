// μP (train/parametrization.h): roles by tensor name, per-layer learning-rate multipliers for AdamW and Muon,
// the initial spread, and a μP run that trains.
#include "core/json_io.h"
#include "core/paths.h"
#include "model/dit.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/optim.h"
#include "train/parametrization.h"
#include "train/run_layout.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

using namespace mugv;

TEST_CASE("mup roles and learning-rate multipliers follow the width", "[unit][train][mup]") {
  const auto m2 = torch::zeros({8, 8}), v = torch::zeros({8});
  CHECK(mup_role("dit.x_embedder.proj.weight", torch::zeros({8, 4, 1, 2, 2})) == MupRole::input);
  CHECK(mup_role("dit.y_embedder.y_proj.fc1.weight", m2) == MupRole::input);
  CHECK(mup_role("dit.blocks.0.attn.qkv.weight", m2) == MupRole::hidden);
  CHECK(mup_role("dit.t_block.1.weight", m2) == MupRole::hidden);
  CHECK(mup_role("dit.final_layer.linear.weight", m2) == MupRole::output);
  CHECK(mup_role("dit.blocks.0.scale_shift_table", m2) == MupRole::vector);
  CHECK(mup_role("dit.blocks.0.attn.qkv.bias", v) == MupRole::vector);
  CHECK(mup_role("text.layers.0.qkv.weight", m2) == MupRole::vector);  // the text encoder is not widened
  const NamedTensors params = {{"dit.blocks.0.attn.qkv.weight", m2},
                               {"dit.final_layer.linear.weight", m2},
                               {"dit.x_embedder.proj.weight", torch::zeros({8, 4, 1, 2, 2})},
                               {"dit.blocks.0.attn.qkv.bias", v}};
  CHECK(mup_lr_scales(params, 4.0, false) == std::vector<double>{0.25, 0.25, 1.0, 1.0});
  CHECK(mup_lr_scales(params, 4.0, true) == std::vector<double>{0.5, 0.25, 1.0, 1.0});  // Muon: 1/sqrt(m)
  CHECK(mup_lr_scales(params, 1.0, false) == std::vector<double>{1.0, 1.0, 1.0, 1.0});  // the base width

  auto hidden = torch::ones({8, 8}), input = torch::ones({8, 4, 1, 2, 2});
  apply_mup_init({{"dit.blocks.0.mlp.fc1.weight", hidden}, {"dit.x_embedder.proj.weight", input}}, 4.0);
  CHECK(hidden.max().item<double>() == Approx(0.5));
  CHECK(input.max().item<double>() == 1.0);
}

TEST_CASE("an optimizer's per-parameter learning-rate multipliers scale each update", "[unit][train][mup]") {
  auto a = torch::zeros({4}).requires_grad_(true), b = torch::zeros({4}).requires_grad_(true);
  a.mutable_grad() = torch::ones({4});
  b.mutable_grad() = torch::ones({4});
  AdamW opt({{"a", a}, {"b", b}}, AdamWOptions{});
  opt.set_lr_scales({1.0, 0.25});
  opt.step(0.1);
  // The first AdamW step moves each element by lr (m̂ / sqrt(v̂) = 1).
  CHECK(a[0].item<double>() == Approx(-0.1));
  CHECK(b[0].item<double>() == Approx(-0.025));
}

TEST_CASE("a mup run trains and records its parametrisation", "[train][mup]") {
  test::MicroHome home(6);
  auto o = test::micro_train_options("mup", 8);
  o.parametrization = "mup";
  o.mup_base_hidden = 24;  // the micro model (hidden 48) is twice the base width
  train_dit(o, {{"train", {{"parametrization", "mup"}, {"mup_base_hidden", 24}}}}, CancelToken());
  std::ifstream in(run_paths("mup").metrics());
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  CHECK(lines == 8);
  o.run = "bad";
  o.parametrization = "ntk";
  CHECK(test::expect_error([&] { train_dit(o, {}, CancelToken()); }).code() == ErrorCode::usage);
}

TEST_CASE("mugv sweep trains one run per learning rate and keeps the best as a training preset",
          "[cli][train][mup]") {
  test::MicroHome home(6);
  const fs::path dir = home.path() / "scratch";
  fs::create_directories(dir);
  auto r = test::run_mugv_cli(
      "sweep --preset micro --dataset shapes --vae-run vae0 --run lrs --val-dataset shapes --lrs 1e-6,3e-3 "
      "--steps 6 --batch 2 --threads 2 --warmup 1 --save-every 6 --parametrization mup --mup-base-hidden 24 "
      "--shift-base 32 --json",
      dir);
  if (!r) return;
  INFO(r->err);
  REQUIRE(r->exit_code == 0);
  const auto out = nlohmann::json::parse(r->out);
  REQUIRE(out["results"].size() == 2);
  CHECK(out["results"][0]["run"] == "lrs-lr1e-06");
  // Six steps at 1e-6 change nothing; 3e-3 learns.
  CHECK(out["best_lr"].get<double>() == Approx(3e-3));
  CHECK(out["results"][1]["val_loss"].get<double>() < out["results"][0]["val_loss"].get<double>());
  REQUIRE(fs::exists(home.path() / "presets/train/lrs.toml"));
  // The preset is what `mugv train --preset lrs` reads.
  auto trained = test::run_mugv_cli(
      "train --preset lrs --dataset shapes --vae-run vae0 --run tuned --steps 2 --batch 2 --threads 2 --json",
      dir);
  INFO(trained->err);
  REQUIRE(trained->exit_code == 0);
  const auto config = read_json_file(run_paths("tuned").manifest())["config"]["train"];
  CHECK(config["lr"].get<double>() == Approx(3e-3));
  CHECK(config["parametrization"] == "mup");
  CHECK(config["mup_base_hidden"] == 24);
}

TEST_CASE("dit.attention_multiplier scales the attention logits (as a query-norm weight of that size would)",
          "[unit][model][mup]") {
  DiTConfig c;
  c.hidden = 48;
  c.depth = 1;
  c.heads = 2;
  c.head_dim = 24;
  c.mlp_ratio = 2;
  c.in_channels = 4;
  c.text_dim = 32;
  c.text_tokens = 6;
  auto build = [&](double multiplier) {
    DiTConfig k = c;
    k.attention_multiplier = multiplier;
    torch::manual_seed(3);
    DiT dit(k);
    torch::NoGradGuard no_grad;
    for (auto& p : dit->parameters()) p.normal_(0.0, 0.3);  // every layer computes (no zero init)
    dit->eval();
    return dit;
  };
  DiT plain = build(1.0), scaled = build(2.5);
  torch::manual_seed(9);
  const auto x = torch::randn({1, 4, 2, 8, 8}), t = torch::tensor({400.0f}), text = torch::randn({1, 6, 32});
  const auto mask = torch::ones({1, 6}), fps = torch::full({1}, 8.0f);
  torch::NoGradGuard no_grad;
  const auto a = plain->forward(x, t, text, mask, fps), b = scaled->forward(x, t, text, mask, fps);
  CHECK((a - b).abs().max().item<double>() > 1e-3);  // the multiplier changes the function
  // The same queries scaled through the query norms instead: equal outputs.
  auto* block = plain->blocks[0]->as<DiTBlockImpl>();
  block->attn->q_norm->weight.mul_(2.5);
  block->cross_attn->q_norm->weight.mul_(2.5);
  const auto c2 = plain->forward(x, t, text, mask, fps);
  CHECK((c2 - b).abs().max().item<double>() < 1e-5 * b.abs().max().item<double>());
}
