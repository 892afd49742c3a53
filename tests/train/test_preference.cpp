// Post-training (train/preference.h): the Diffusion-DPO and KTO losses against hand-computed values, DPO and
// KTO runs against a frozen reference (they start where the reference is, learn the labels, keep their data
// in the run folder and resume bit for bit), the refusals, and SFT on a clip subset. Micro preset, synthetic
// latents.
#include "core/error.h"
#include "core/json_io.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/checkpoint_store.h"
#include "train/fine_tune.h"
#include "train/preference.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

using namespace mugv;

namespace {

double softplus(double x) {
  return std::log1p(std::exp(x));
}
double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
torch::Tensor vec(std::vector<double> v) {
  return torch::tensor(v, torch::kFloat64);
}

// Winners are bright circles moving right, losers dark ones moving left, all "a red circle moving right":
// `pairs` pairs of distinct latents (DPO: [2C, T, H, W] each), or, for KTO, both halves as single items.
std::shared_ptr<PreferenceCollection> collection(TrainObjective objective, int pairs) {
  torch::manual_seed(11);
  auto out = std::make_shared<PreferenceCollection>();
  const auto ramp = torch::linspace(-1, 1, 5).view({1, 5, 1, 1});
  for (int i = 0; i < pairs; ++i) {
    const auto winner = torch::full({4, 5, 4, 4}, 0.6) + 0.3 * ramp + 0.05 * torch::randn({4, 5, 4, 4});
    const auto loser = torch::full({4, 5, 4, 4}, -0.6) - 0.3 * ramp + 0.05 * torch::randn({4, 5, 4, 4});
    const ClipGeometry g{32, 32, 17, 8.0};
    const std::string caption = "a red circle moving right";
    if (objective == TrainObjective::dpo) {
      out->items.push_back({{2 * i + 1, 2 * i + 2}, true, caption});
      out->latents.push_back(torch::cat({winner, loser}, 0));
      out->geometry.push_back(g);
    } else {
      out->items.push_back({{2 * i + 1}, true, caption});
      out->latents.push_back(winner);
      out->geometry.push_back(g);
      out->items.push_back({{2 * i + 2}, false, caption});
      out->latents.push_back(loser);
      out->geometry.push_back(g);
    }
  }
  return out;
}

TrainOptions post_options(const std::string& run, TrainObjective objective, int64_t steps,
                          double anchor = 0.0) {
  auto o = test::micro_finetune_options(run, steps);
  o.from = "base";
  o.dataset.clear();
  o.vae_run.clear();
  o.objective = to_string(objective);
  o.preference_beta = 200;
  o.preference_sft_weight = anchor;
  o.lr = 2e-3;
  o.preferences = collection(objective, 4);
  return o;
}

nlohmann::json post_config(TrainObjective objective, int64_t steps, int64_t save_every, double anchor = 0.0) {
  return {{"train",
           {{"steps", steps},
            {"from", "base"},
            {"from_weights", "ema"},
            {"objective", to_string(objective)},
            {"preference_beta", 200.0},
            {"preference_sft_weight", anchor},
            {"batch", 2},
            {"lr", 2e-3},
            {"warmup", 2},
            {"save_every", save_every},
            {"keep", 10},
            {"threads", 2},
            {"seed", 7},
            {"ema", 0.9},
            {"preset", "micro"}}},
          {"flow", {{"shift_base", 32}, {"p_first_frame", 0.0}, {"caption_dropout", 0.0}}}};
}

std::map<std::string, torch::Tensor> checkpoint_tensors(const std::string& run, int64_t step,
                                                        const char* file) {
  const fs::path path = run_paths(run).checkpoints() / CheckpointStore::step_dir_name(step) / file;
  auto st = SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : st.names()) out[name] = tensor_from_view(st.at(name), path.string());
  return out;
}

}  // namespace

TEST_CASE("the Diffusion-DPO loss equals its hand-computed value and pulls towards the winner",
          "[unit][train][preference]") {
  auto policy_w = vec({0.5, 0.2}).requires_grad_(true);
  auto policy_l = vec({0.4, 0.6}).requires_grad_(true);
  const auto ref_w = vec({0.45, 0.3}), ref_l = vec({0.5, 0.5});
  const PreferenceLoss l = dpo_loss(policy_w, policy_l, ref_w, ref_l, 10.0);
  // Δ = (0.5 − 0.45) − (0.4 − 0.5) = 0.15 and (0.2 − 0.3) − (0.6 − 0.5) = −0.2; loss = softplus(β/2 · Δ).
  CHECK(l.loss.item<double>() == Approx((softplus(5 * 0.15) + softplus(5 * -0.2)) / 2).epsilon(1e-12));
  CHECK(l.accuracy == Approx(0.5));
  CHECK(l.margin == Approx(0.025));
  l.loss.backward();
  // Lowering the winner's error or raising the loser's lowers the loss.
  CHECK((policy_w.grad() > 0).all().item<bool>());
  CHECK((policy_l.grad() < 0).all().item<bool>());
  // A policy equal to its reference is at log 2, whatever the errors.
  CHECK(dpo_loss(ref_w, ref_l, ref_w, ref_l, 1000.0).loss.item<double>() == Approx(std::log(2.0)));
  CHECK_THROWS_AS(dpo_loss(policy_w, vec({1, 2, 3}), ref_w, ref_l, 1.0), Error);
  CHECK_THROWS_AS(dpo_loss(policy_w, policy_l, ref_w, ref_l, 0.0), Error);
}

TEST_CASE("the KTO loss equals its hand-computed value, with the reference point clamped at zero",
          "[unit][train][preference]") {
  auto policy = vec({0.3, 0.5, 0.4}).requires_grad_(true);
  const auto reference = vec({0.4, 0.45, 0.4});
  const auto desirable = torch::tensor({true, false, true});
  const PreferenceLoss l = kto_loss(policy, reference, desirable, 5.0);
  // r = ref − policy = (0.1, −0.05, 0); z = max(0, mean r) = 1/60.
  const double z = 0.05 / 3;
  const double want =
      ((1 - sigmoid(5 * (0.1 - z))) + (1 - sigmoid(5 * (z + 0.05))) + (1 - sigmoid(5 * (0 - z)))) / 3;
  CHECK(l.loss.item<double>() == Approx(want).epsilon(1e-12));
  CHECK(l.reference == Approx(z));
  CHECK(l.accuracy == Approx(2.0 / 3.0));  // the first two are on their label's side of z, the third is not
  CHECK(l.margin == Approx(0.05 - (-0.05)));
  l.loss.backward();
  CHECK(policy.grad()[0].item<double>() > 0);  // desirable: a lower error lowers the loss
  CHECK(policy.grad()[1].item<double>() < 0);  // undesirable: a higher error lowers it
  // Every reward negative: the reference point stays at 0.
  const PreferenceLoss worse = kto_loss(vec({0.5, 0.6}), vec({0.4, 0.4}), torch::tensor({true, true}), 2.0);
  CHECK(worse.reference == 0.0);
  CHECK(worse.loss.item<double>() == Approx(((1 - sigmoid(-0.2)) + (1 - sigmoid(-0.4))) / 2).epsilon(1e-12));
}

TEST_CASE("the SFT anchor adds the preferred items' mean flow error, weighted, to DPO and KTO",
          "[unit][train][preference]") {
  const auto ref_w = vec({0.45, 0.3}), ref_l = vec({0.5, 0.5});
  auto policy_w = vec({0.5, 0.2}).requires_grad_(true);
  const auto policy_l = vec({0.4, 0.6});
  const PreferenceLoss plain = dpo_loss(policy_w, policy_l, ref_w, ref_l, 10.0);
  const PreferenceLoss anchored = dpo_loss(policy_w, policy_l, ref_w, ref_l, 10.0, 2.0);
  CHECK(anchored.sft == Approx(0.35));  // the winners' mean error
  CHECK(plain.sft == 0);                // no anchor asked for: not computed
  CHECK(anchored.loss.item<double>() == Approx(plain.loss.item<double>() + 2.0 * 0.35).epsilon(1e-12));
  CHECK(anchored.accuracy == plain.accuracy);
  anchored.loss.backward();
  const auto grad_anchored = policy_w.grad().clone();
  policy_w.grad().zero_();
  plain.loss.backward();
  // ∂(λ · mean e_w)/∂e_w = λ / B for each winner.
  CHECK(((grad_anchored - policy_w.grad()) - 1.0).abs().max().item<double>() < 1e-12);

  const auto desirable = torch::tensor({true, false, true});
  const auto reference = vec({0.4, 0.45, 0.4});
  const auto policy = vec({0.3, 0.5, 0.4});
  const PreferenceLoss kto_plain = kto_loss(policy, reference, desirable, 5.0);
  const PreferenceLoss kto_anchored = kto_loss(policy, reference, desirable, 5.0, 0.5);
  CHECK(kto_anchored.sft == Approx(0.35));  // items 0 and 2
  CHECK(kto_anchored.loss.item<double>() ==
        Approx(kto_plain.loss.item<double>() + 0.5 * 0.35).epsilon(1e-12));
  // No desirable item in the batch: nothing to anchor to, the plain loss.
  const auto none = torch::tensor({false, false, false});
  CHECK(kto_loss(policy, reference, none, 5.0, 0.5).loss.item<double>() ==
        Approx(kto_loss(policy, reference, none, 5.0).loss.item<double>()).epsilon(1e-12));
  CHECK_THROWS_AS(dpo_loss(policy_w, policy_l, ref_w, ref_l, 10.0, -1.0), Error);
}

TEST_CASE("a DPO run starts at the reference, learns the preferred side and resumes bit for bit",
          "[train][preference]") {
  test::MicroHome home(6);
  train_dit(test::micro_finetune_options("base", 20), {}, CancelToken());
  train_dit(post_options("dpo", TrainObjective::dpo, 16), post_config(TrainObjective::dpo, 16, 8),
            CancelToken());
  const auto m = test::run_metrics("dpo");
  REQUIRE(m.size() == 16);
  // Before the first update the policy is the reference: Δ = 0 for every pair.
  CHECK(m[0]["loss"].get<double>() == Approx(std::log(2.0)).margin(1e-6));
  CHECK(m[0]["objective"]["margin"].get<double>() == Approx(0).margin(1e-9));
  double late_loss = 0, late_margin = 0;
  for (size_t i = 12; i < 16; ++i) {
    late_loss += m[i]["loss"].get<double>() / 4;
    late_margin += m[i]["objective"]["margin"].get<double>() / 4;
  }
  CHECK(late_loss < std::log(2.0) - 0.05);
  CHECK(late_margin > 0);
  // The run keeps its data: 4 items naming their generations, latents of 2C channels.
  const auto data = read_preference_data(run_paths("dpo").root / "preference_data");
  REQUIRE(data.items.size() == 4);
  CHECK(data.items[1].generations == std::vector<int64_t>{3, 4});
  CHECK(data.clips[0].latent_shape[0] == 8);
  CHECK(read_run_manifest(run_paths("dpo")).config["base"]["run"] == "base");

  // Exact resume: 16 straight equal 8, stop, resume 8.
  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 9) cancel.request_cancel();
  };
  auto o = post_options("split", TrainObjective::dpo, 16);
  const Error e =
      test::expect_error([&] { train_dit(o, post_config(TrainObjective::dpo, 16, 8), cancel, stop); });
  REQUIRE(e.code() == ErrorCode::cancelled);
  auto resumed = resume_dit("split", ResumeChanges{}, CancelToken());
  CHECK(resumed.start_step == 8);
  for (const char* file : {"model.safetensors", "ema.safetensors", "optimizer.safetensors"}) {
    const auto x = checkpoint_tensors("dpo", 16, file), y = checkpoint_tensors("split", 16, file);
    REQUIRE(x.size() == y.size());
    for (const auto& [name, t] : x) {
      INFO(file << " " << name);
      CHECK(torch::equal(t, y.at(name)));
    }
  }
}

TEST_CASE("a KTO run learns its good and bad labels against the reference point and resumes bit for bit",
          "[train][preference]") {
  test::MicroHome home(6);
  train_dit(test::micro_finetune_options("base", 20), {}, CancelToken());
  // With a small SFT anchor, so that its term is also kept across the resume below.
  const double anchor = 0.5;
  train_dit(post_options("kto", TrainObjective::kto, 16, anchor),
            post_config(TrainObjective::kto, 16, 16, anchor), CancelToken());
  const auto m = test::run_metrics("kto");
  REQUIRE(m.size() == 16);
  // 1 − σ(0) for every item, plus the anchor on the desirable items' flow error.
  const double sft = m[0]["objective"]["sft"].get<double>();
  CHECK(sft > 0);
  CHECK(m[0]["loss"].get<double>() == Approx(0.5 + anchor * sft).margin(1e-6));
  CHECK(m[0]["objective"].contains("reference_point"));
  double late_margin = 0;
  for (size_t i = 12; i < 16; ++i) late_margin += m[i]["objective"]["margin"].get<double>() / 4;
  CHECK(late_margin > 0);  // desirable items' rewards above the undesirable ones'
  const auto data = read_preference_data(run_paths("kto").root / "preference_data");
  REQUIRE(data.items.size() == 8);
  CHECK(data.items[0].desirable);
  CHECK_FALSE(data.items[1].desirable);
  CHECK(data.clips[0].latent_shape[0] == 4);

  // Exact resume, as for DPO.
  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 9) cancel.request_cancel();
  };
  const Error e = test::expect_error([&] {
    train_dit(post_options("split", TrainObjective::kto, 16, anchor),
              post_config(TrainObjective::kto, 16, 8, anchor), cancel, stop);
  });
  REQUIRE(e.code() == ErrorCode::cancelled);
  CHECK(resume_dit("split", ResumeChanges{}, CancelToken()).start_step == 8);
  const auto x = checkpoint_tensors("kto", 16, "model.safetensors"),
             y = checkpoint_tensors("split", 16, "model.safetensors");
  REQUIRE(x.size() == y.size());
  for (const auto& [name, t] : x) {
    INFO(name);
    CHECK(torch::equal(t, y.at(name)));
  }
}

TEST_CASE("post-training is refused without a base, without labels or with latents of another shape",
          "[train][preference]") {
  test::MicroHome home(6);
  train_dit(test::micro_finetune_options("base", 4), {}, CancelToken());
  auto no_base = post_options("p1", TrainObjective::dpo, 4);
  no_base.from.clear();
  CHECK(test::expect_error([&] { train_dit(no_base, {}, CancelToken()); }).code() == ErrorCode::usage);

  auto empty = post_options("p2", TrainObjective::dpo, 4);
  auto none = std::make_shared<PreferenceCollection>();
  none->skipped.push_back("generation 5: its latent was not kept");
  empty.preferences = none;
  const Error e = test::expect_error([&] { train_dit(empty, {}, CancelToken()); });
  CHECK_THAT(std::string(e.what()),
             Catch::Contains("no labelled preferences") && Catch::Contains("generation 5"));
  CHECK_FALSE(fs::exists(run_paths("p2").manifest()));

  auto wrong = post_options("p3", TrainObjective::kto, 4);
  wrong.preferences = collection(TrainObjective::dpo, 2);  // 2C channels where KTO reads C
  CHECK_THAT(std::string(test::expect_error([&] { train_dit(wrong, {}, CancelToken()); }).what()),
             Catch::Contains("8 channels"));
}

TEST_CASE("SFT on a clip subset trains on those clips only, and its resume keeps the subset",
          "[train][preference]") {
  test::MicroHome home(6);
  auto o = test::micro_finetune_options("sft", 6);
  o.clip_filter = "tag=hq";
  o.clip_subset = std::vector<int64_t>{2, 5};  // two clips, batch 2: one batch per epoch
  o.save_every = 3;
  nlohmann::json config = {{"train",
                            {{"steps", 6},
                             {"batch", 2},
                             {"save_every", 3},
                             {"keep", 10},
                             {"threads", 2},
                             {"seed", 7},
                             {"lr", 5e-3},
                             {"preset", "micro"},
                             {"clip_filter", "tag=hq"}}},
                           {"flow", {{"shift_base", 32}, {"p_first_frame", 0.0}, {"caption_dropout", 0.0}}}};
  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 4) cancel.request_cancel();
  };
  CHECK(test::expect_error([&] { train_dit(o, config, cancel, stop); }).code() == ErrorCode::cancelled);
  const auto subset = read_json_file(run_paths("sft").root / "clip_subset.json");
  CHECK(subset["clip_ids"] == nlohmann::json({2, 5}));
  CHECK(subset["clip_filter"] == "tag=hq");
  resume_dit("sft", ResumeChanges{}, CancelToken());
  const auto m = test::run_metrics("sft");
  REQUIRE(m.size() == 6);
  for (size_t i = 0; i < m.size(); ++i)
    CHECK(m[i]["epoch"] == int64_t(i));  // one batch per epoch, resumed too

  auto none = test::micro_finetune_options("sft2", 2);
  none.clip_filter = "tag=none";
  none.clip_subset = std::vector<int64_t>{99};
  CHECK_THAT(std::string(test::expect_error([&] { train_dit(none, {}, CancelToken()); }).what()),
             Catch::Contains("tag=none") && Catch::Contains("none of them"));
}

TEST_CASE("a LoRA DPO run swaps its frozen base and its reference in block by block and learns as without",
          "[train][preference][lora]") {
  test::MicroHome home(6);
  train_dit(test::micro_finetune_options("base", 20), {}, CancelToken());
  auto run = [](const std::string& name, const std::string& offload, bool* swapped) {
    auto o = post_options(name, TrainObjective::dpo, 4);
    o.lora = "rank=2,targets=attn,mlp";
    o.offload = offload;
    TrainCallbacks cb;
    cb.before_step = [&](int64_t, DiTBundleImpl& model) { *swapped = model.dit->block_offload() != nullptr; };
    train_dit(o, post_config(TrainObjective::dpo, 4, 4), CancelToken(), cb);
    std::vector<double> losses;
    for (const auto& m : test::run_metrics(name)) losses.push_back(m["loss"].get<double>());
    return losses;
  };
  bool kept_swapped = true, swapped = false;
  const auto kept = run("kept", "none", &kept_swapped);
  const auto got = run("swapped", "blocks", &swapped);
  CHECK_FALSE(kept_swapped);
  CHECK(swapped);
  REQUIRE(got.size() == 4);
  REQUIRE(kept.size() == 4);
  // The policy starts as the reference (adapters at zero), whichever holds the blocks where.
  CHECK(got[0] == Approx(std::log(2.0)).margin(1e-6));
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(kept[i]).epsilon(1e-5));
}
