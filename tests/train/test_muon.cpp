// Muon: the Newton–Schulz orthogonalisation, which parameters it takes, one step's arithmetic against a hand
// computation, its checkpoint state, and training with it (loss falls; exact resume is in test_train_torch).
#include "core/error.h"
#include "core/paths.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/muon.h"
#include "train/run_layout.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <fstream>

using namespace mugv;

namespace {

torch::Tensor singular_values(const torch::Tensor& m) {
  return std::get<1>(torch::svd(m));
}

}  // namespace

TEST_CASE("Newton-Schulz maps a matrix to about U V^T: singular values near 1, same singular vectors",
          "[unit][train][muon]") {
  torch::manual_seed(3);
  for (auto shape : {std::pair<int64_t, int64_t>{64, 32}, {32, 64}, {48, 48}}) {
    INFO("shape " << shape.first << "x" << shape.second);
    // An ill-conditioned matrix: singular values spread over two decades.
    auto [u, s, v] = torch::svd(torch::randn({shape.first, shape.second}));
    const auto spread = torch::logspace(0, -2, s.size(0));
    const torch::Tensor g = torch::mm(u * spread, v.t());
    const torch::Tensor o = newton_schulz(g, 5);
    REQUIRE(o.sizes() == g.sizes());
    const torch::Tensor sv = singular_values(o);
    // The quintic's band: every direction is lifted to order 1 (the smallest from 1e-2), none above ~1.2.
    CHECK(sv.max().item<double>() < 1.25);
    CHECK(sv.min().item<double>() > 0.5);
    // Orthogonal up to that band: O·Oᵀ (the smaller Gram) is near the identity.
    const torch::Tensor gram = shape.first <= shape.second ? torch::mm(o, o.t()) : torch::mm(o.t(), o);
    CHECK((gram - torch::eye(gram.size(0))).abs().max().item<double>() < 0.7);
    // Same singular vectors as U·Vᵀ: the cosine between the two is high.
    const torch::Tensor polar = torch::mm(u, v.t());
    const double cosine = (o * polar).sum().item<double>() / (o.norm() * polar.norm()).item<double>();
    CHECK(cosine > 0.95);
    // Scale-free: the input's norm does not matter.
    CHECK(torch::allclose(newton_schulz(g * 1000, 5), o, 1e-4, 1e-5));
  }
  // More steps of the same iteration do not blow up (the band is stable).
  const torch::Tensor o20 = newton_schulz(torch::randn({16, 24}), 20);
  CHECK(singular_values(o20).max().item<double>() < 1.25);
  CHECK(singular_values(o20).min().item<double>() > 0.6);
}

TEST_CASE(
    "Muon takes the hidden matrices; embeddings, norms, biases, adaLN tables and the output stay on AdamW",
    "[unit][train][muon]") {
  const auto matrix = torch::zeros({8, 8});
  const auto vector = torch::zeros({8});
  CHECK(muon_parts("dit.blocks.0.attn.qkv.weight", matrix) == 3);
  CHECK(muon_parts("dit.blocks.3.cross_attn.kv_linear.weight", matrix) == 2);
  CHECK(muon_parts("dit.blocks.0.cross_attn.q_linear.weight", matrix) == 1);
  CHECK(muon_parts("dit.blocks.0.attn.proj.weight", matrix) == 1);
  CHECK(muon_parts("dit.blocks.0.mlp.fc1.weight", matrix) == 1);
  CHECK(muon_parts("dit.blocks.0.mlp.fc2.weight", matrix) == 1);
  CHECK(muon_parts("text.layers.0.qkv.weight", matrix) == 3);
  CHECK(muon_parts("text.layers.0.fc1.weight", matrix) == 1);
  CHECK(muon_parts("dit.blocks.0.scale_shift_table", matrix) == 0);
  CHECK(muon_parts("dit.blocks.0.attn.qkv.bias", vector) == 0);
  CHECK(muon_parts("dit.blocks.0.attn.q_norm.weight", vector) == 0);
  CHECK(muon_parts("dit.x_embedder.proj.weight", torch::zeros({8, 4, 1, 2, 2})) == 0);
  CHECK(muon_parts("dit.t_block.1.weight", matrix) == 0);
  CHECK(muon_parts("dit.y_embedder.y_proj.fc1.weight", matrix) == 0);
  CHECK(muon_parts("dit.final_layer.linear.weight", matrix) == 0);
  CHECK(muon_parts("text.token_embedding.weight", matrix) == 0);
  CHECK(muon_parts("dit.blocks.0.attn.qkv.lora_A.weight", matrix) == 0);
}

TEST_CASE("one Muon step: Nesterov momentum, orthogonalised per fused part, RMS-matched; AdamW for the rest",
          "[unit][train][muon]") {
  torch::manual_seed(5);
  auto qkv = torch::randn({12, 4}).requires_grad_(true);  // three 4×4 parts
  auto bias = torch::randn({12}).requires_grad_(true);
  const auto qkv0 = qkv.detach().clone(), bias0 = bias.detach().clone();
  const auto g = torch::randn({12, 4}), gb = torch::randn({12});
  qkv.mutable_grad() = g.clone();
  bias.mutable_grad() = gb.clone();
  MuonOptions muon;
  muon.momentum = 0.9;
  muon.lr_scale = 2.0;
  AdamWOptions adam;
  adam.weight_decay = 0.1;
  Muon opt(nullptr, {{"dit.blocks.0.attn.qkv.weight", qkv}, {"dit.blocks.0.attn.qkv.bias", bias}}, muon, adam,
           false);
  CHECK(opt.muon_parameter_count() == 48);
  const double lr = 0.01;
  opt.step(lr);
  // By hand: B = G; U = G + 0.9·B = 1.9·G; each 4×4 part orthogonalised and scaled by 0.2·sqrt(4).
  std::vector<torch::Tensor> parts;
  for (const auto& part : (1.9 * g).chunk(3, 0)) parts.push_back(newton_schulz(part, 5) * 0.4);
  const double muon_lr = lr * 2.0;
  const auto expected = qkv0 * (1 - muon_lr * 0.1) - muon_lr * torch::cat(parts, 0);
  CHECK(torch::allclose(qkv.detach(), expected, 1e-6, 1e-7));
  auto expected_bias = bias0.clone(), m = torch::zeros({12}), v = torch::zeros({12});
  AdamW::update(expected_bias, gb, m, v, adam, lr, 1 - 0.9, 1 - 0.999);
  CHECK(torch::allclose(bias.detach(), expected_bias, 1e-6, 1e-7));

  // The state is named per kind and round-trips; a missing tensor is refused and changes nothing.
  auto state = opt.state();
  REQUIRE(state.size() == 3);
  CHECK(state[0].first == "momentum.dit.blocks.0.attn.qkv.weight");
  CHECK(state[1].first == "exp_avg.dit.blocks.0.attn.qkv.bias");
  CHECK(opt.state_metadata().at("optimizer") == "muon");
  std::map<std::string, torch::Tensor> saved;
  for (const auto& [name, t] : state) saved[name] = t.clone();
  auto missing = saved;
  missing.erase("exp_avg_sq.dit.blocks.0.attn.qkv.bias");
  const Error refused = test::expect_error([&] { opt.load_state(missing, 5, "ckpt"); });
  CHECK(refused.code() == ErrorCode::corrupt);
  CHECK_THAT(refused.what(), Catch::Contains("exp_avg_sq.dit.blocks.0.attn.qkv.bias is missing"));
  CHECK(opt.steps_taken() == 1);
  opt.load_state(saved, 1, "ckpt");
  CHECK(torch::equal(opt.state()[0].second, saved.at("momentum.dit.blocks.0.attn.qkv.weight")));
}

TEST_CASE("training with Muon lowers the loss, and a run cannot switch optimizer on resume",
          "[train][muon]") {
  test::MicroHome home(6);
  auto o = test::micro_train_options("muon", 12);
  o.optimizer = "muon";
  o.save_every = 6;
  o.flow.p_caption_dropout = 0;
  const auto result = train_dit(o, {{"train", {{"optimizer", "muon"}}}}, CancelToken());
  CHECK(result.last_step == 12);
  std::vector<nlohmann::json> metrics;
  std::ifstream in(run_paths("muon").metrics());
  for (std::string line; std::getline(in, line);) metrics.push_back(nlohmann::json::parse(line));
  REQUIRE(metrics.size() == 12);
  double first = 0, last = 0;
  for (size_t i = 0; i < 4; ++i) first += metrics[i].at("loss").get<double>();
  for (size_t i = 8; i < 12; ++i) last += metrics[i].at("loss").get<double>();
  CHECK(last < first);
  ResumeChanges changes(16);
  changes.values = {{"train.optimizer", "adamw"}};
  const Error switched = test::expect_error([&] { resume_dit("muon", changes, CancelToken()); });
  CHECK(switched.code() == ErrorCode::usage);
  CHECK_THAT(switched.what(), Catch::Contains("cannot continue under adamw"));
}
