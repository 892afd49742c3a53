// The LibTorch parts of training: flow objective, loader, optimiser state, the DiT trainer's
// checkpoints, exact resume and refusals. Runs on a tiny "micro" preset written into a temporary
// $MUGV_HOME so every case stays within a few seconds on 2 cores.
#include "catalog/captions.h"
#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/strings.h"
#include "dataset/importer.h"
#include "dataset/starter.h"
#include "media/image.h"
#include "model/compute.h"
#include "model/timestep_shift.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/data.h"
#include "train/flow.h"
#include "train/latent_encode.h"
#include "train/optim.h"
#include "train/trainer.h"
#include "train/vae_trainer.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <vector>

using namespace mugv;
using mugv::test::TempDir;

namespace {

using Home = mugv::test::MicroHome;

TrainOptions micro_options(const std::string& run, int64_t steps) {
  return test::micro_train_options(run, steps);
}

std::vector<std::pair<std::string, torch::Tensor>> load_weights(const fs::path& file) {
  auto st = SafetensorsFile::open(file);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& name : st.names()) out.emplace_back(name, tensor_from_view(st.at(name), file.string()));
  return out;
}

std::string error_of(const std::function<void()>& fn, ErrorCode* code = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("timestep shift follows r·t / (1 + (r-1)·t) with r from pixels and latent frames",
          "[unit][train]") {
  CHECK(timestep_shift_ratio(1, 512, 512, 512) == Approx(1.0));
  CHECK(timestep_shift_ratio(14, 720, 1280, 512) ==
        Approx(std::sqrt(720.0 * 1280.0 / (512.0 * 512.0)) * std::sqrt(14.0)));
  CHECK(timestep_shift_ratio(5, 64, 64, 64) == Approx(std::sqrt(5.0)));
  CHECK(shift_timestep(0.5, 3.0) == Approx(0.75));
  CHECK(shift_timestep(0.0, 7.0) == 0.0);
  CHECK(shift_timestep(1.0, 7.0) == Approx(1.0));
  for (double t : {0.1, 0.5, 0.9}) CHECK(unshift_timestep(shift_timestep(t, 3.0), 3.0) == Approx(t));
}

TEST_CASE("flow batches: logit-normal t, x_t interpolates, velocity target, seeded per step",
          "[unit][train]") {
  FlowOptions o;
  o.shift_base_px = 1;  // r = 1: no shift, so logit(t) must be standard normal
  o.p_caption_dropout = 0.25;
  auto x0 = torch::randn({4000, 1, 1, 1, 1});
  auto fb = make_flow_batch(x0, 3, 10, 1, 1, o);
  auto logit = torch::log(fb.t / (1 - fb.t));
  CHECK(logit.mean().item<double>() == Approx(0.0).margin(0.08));
  CHECK(logit.std().item<double>() == Approx(1.0).margin(0.08));
  CHECK(fb.drop_caption.to(torch::kFloat).mean().item<double>() == Approx(0.25).margin(0.04));
  auto eps = x0 - fb.target;
  auto tb = fb.t.view({-1, 1, 1, 1, 1});
  CHECK(torch::allclose(fb.x_t, (1 - tb) * x0 + tb * eps, 1e-5, 1e-6));

  auto again = make_flow_batch(x0, 3, 10, 1, 1, o);
  CHECK(torch::equal(again.x_t, fb.x_t));
  auto other = make_flow_batch(x0, 3, 11, 1, 1, o);
  CHECK_FALSE(torch::equal(other.t, fb.t));

  SECTION("first-frame conditioning keeps the clean latent") {
    FlowOptions cond;
    cond.p_first_frame = 1.0;
    auto x = torch::randn({3, 2, 4, 2, 2});
    auto b = make_flow_batch(x, 1, 1, 16, 16, cond);
    CHECK(b.cond_mask.select(1, 0).all().item<bool>());
    CHECK_FALSE(b.cond_mask.select(1, 1).any().item<bool>());
    CHECK(torch::equal(b.x_t.select(2, 0), x.select(2, 0)));
    CHECK_FALSE(torch::equal(b.x_t.select(2, 1), x.select(2, 1)));
  }
}

TEST_CASE("masked flow loss ignores conditioning frames", "[unit][train]") {
  auto target = torch::zeros({2, 3, 4, 2, 2});
  auto pred = target.clone();
  pred.select(2, 0).fill_(5.0);  // wrong only in frame 0
  auto cond = torch::zeros({2, 4}, torch::kBool);
  cond.select(1, 0).fill_(true);
  CHECK(masked_flow_loss(pred, target, cond).item<double>() == 0.0);
  CHECK(masked_flow_loss(pred, target, torch::Tensor()).item<double>() == Approx(25.0 / 4));
  pred.select(2, 2).fill_(2.0);
  CHECK(masked_flow_loss(pred, target, cond).item<double>() == Approx(4.0 / 3));
}

TEST_CASE("a latent cache folder stays under its dataset: names that leave it are refused", "[unit][train]") {
  Home home(1);
  CHECK(latent_cache_dir("shapes", "vae0") == home.path() / "datasets" / "shapes" / "cache" / "vae0");
  for (const auto& [dataset, run] : std::vector<std::pair<std::string, std::string>>{
           {"../../../../x", "vae0"}, {"shapes", "../vae0"}, {"a/b", "vae0"}, {"..", "vae0"}}) {
    INFO(dataset << " " << run);
    std::string message;
    ErrorCode code = ErrorCode::unknown;
    message = error_of([&] { (void)latent_cache_dir(dataset, run); }, &code);
    CHECK(code == ErrorCode::invalid_argument);
    CHECK_THAT(message, Catch::Contains("name"));
  }
}

TEST_CASE("the loader buckets by shape, shuffles by (seed, epoch), shards and resumes from its cursor",
          "[unit][train]") {
  Home home(6);
  auto clips = list_cached_clips(latent_cache_dir("shapes", "vae0"));
  REQUIRE(clips.size() == 6);
  CachedClip odd = clips[0];
  odd.clip_id = 100;
  odd.frames = 9;
  odd.latent_shape = {4, 3, 4, 4};
  odd.path = home.path() / "odd.safetensors";
  write_cached_clip(home.path() / "odd", odd, torch::zeros({4, 3, 4, 4}));
  odd.path = home.path() / "odd" / "clip-100.safetensors";
  clips.push_back(odd);

  DataOptions o;
  o.batch_size = 2;
  o.seed = 5;
  LatentLoader loader(clips, o);
  CHECK(loader.batches_per_epoch() == 4);  // 6 clips -> 3 batches, the odd one alone -> 1
  std::vector<std::vector<int64_t>> seen;
  for (int i = 0; i < 6; ++i) {
    auto b = loader.next();
    CHECK(b.latents.size(0) == static_cast<int64_t>(b.clip_ids.size()));
    for (auto id : b.clip_ids) CHECK((id == 100) == (b.frames == 9));
    seen.push_back(b.clip_ids);
  }
  CHECK(loader.cursor() == DataCursor{1, 2});
  CHECK(loader.epoch_plan(0) != loader.epoch_plan(1));

  LatentLoader resumed(clips, o, DataCursor{1, 0});
  CHECK(resumed.next().clip_ids == seen[4]);
  CHECK(resumed.next().clip_ids == seen[5]);

  DataOptions r0 = o, r1 = o;
  r0.world = r1.world = 2;
  r1.rank = 1;
  LatentLoader a(clips, r0), b(clips, r1);
  std::set<int64_t> ids;
  for (int i = 0; i < 2; ++i) {
    for (auto id : a.next().clip_ids) CHECK(ids.insert(id).second);
    for (auto id : b.next().clip_ids) CHECK(ids.insert(id).second);
  }
}

TEST_CASE("each bucket of clips can have its own batch size, and the memory model gives short clips more",
          "[unit][train]") {
  Home home(6);
  auto clips = list_cached_clips(latent_cache_dir("shapes", "vae0"));
  REQUIRE(clips.size() == 6);
  const BucketGeometry long_clips{clips[0].frames, clips[0].height, clips[0].width};
  // Six short clips (9 frames: 3 latent frames instead of 5) in the same cache.
  for (int i = 0; i < 6; ++i) {
    CachedClip c = clips[0];
    c.clip_id = 200 + i;
    c.frames = 9;
    c.latent_shape = {4, 3, 4, 4};
    write_cached_clip(latent_cache_dir("shapes", "vae0"), c, 0.1 * torch::randn({4, 3, 4, 4}));
  }
  clips = list_cached_clips(latent_cache_dir("shapes", "vae0"));
  REQUIRE(clips.size() == 12);
  const BucketGeometry short_clips{9, clips[0].height, clips[0].width};

  DataOptions o;
  o.batch_size = 2;
  o.seed = 3;
  o.bucket_batch_sizes[short_clips] = 4;
  LatentLoader loader(clips, o);
  CHECK(loader.batches_per_epoch() == 5);  // long: 3 batches of 2; short: 4 + 2
  std::multiset<size_t> sizes;
  std::set<int64_t> ids;
  for (const auto& batch : loader.epoch_plan(0)) sizes.insert(batch.size());
  CHECK(sizes == std::multiset<size_t>{2, 2, 2, 2, 4});
  std::vector<std::vector<int64_t>> seen;
  int fours = 0;
  for (int i = 0; i < 5; ++i) {
    auto b = loader.next();
    CHECK(b.latents.size(0) == int64_t(b.clip_ids.size()));
    if (b.clip_ids.size() == 4) {
      ++fours;
      CHECK(b.frames == 9);
    }
    for (auto id : b.clip_ids) CHECK(ids.insert(id).second);
    seen.push_back(b.clip_ids);
  }
  CHECK(fours == 1);
  CHECK(ids.size() == 12);
  LatentLoader resumed(clips, o, DataCursor{0, 3});
  CHECK(resumed.next().clip_ids == seen[3]);
  o.bucket_batch_sizes[short_clips] = 0;
  CHECK_THAT(test::expect_error([&] { LatentLoader bad(clips, o); }).what(),
             Catch::Contains("9-frame") && Catch::Contains("at least 1"));

  // From the memory model: the long clips' bucket keeps --batch, the short clips' takes more.
  const auto by_memory = memory_bucket_batches(load_model_preset("micro"), clips, 2, -1);
  REQUIRE(by_memory.size() == 2);
  CHECK(by_memory.at(long_clips) == 2);
  CHECK(by_memory.at(short_clips) > 2);
  CHECK(by_memory.at(short_clips) <= 6);  // never more than the bucket holds

  // A run with them trains (and refuses them with micro-batches, which split a batch evenly).
  auto run = micro_options("buckets", 3);
  run.bucket_batch = "memory";
  std::vector<double> losses;
  TrainCallbacks cb;
  cb.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  train_dit(run, {}, CancelToken(), cb);
  CHECK(losses.size() == 3);
  for (double l : losses) CHECK(std::isfinite(l));
  auto split = micro_options("buckets-split", 3);
  split.bucket_batch = "memory";
  split.micro_batches = 2;
  CHECK_THAT(test::expect_error([&] { train_dit(split, {}, CancelToken()); }).what(),
             Catch::Contains("--bucket-batch"));
}

TEST_CASE("AdamW and EMA state round-trip through safetensors exactly", "[unit][train]") {
  TempDir dir;
  auto w = torch::randn({3, 4}, torch::requires_grad());
  AdamW opt({{"w", w}}, {});
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    (w * w).sum().backward();
    opt.step(0.01);
  }
  opt.save(dir / "opt.safetensors");
  auto w2 = w.detach().clone().requires_grad_(true);
  AdamW copy({{"w", w2}}, {});
  copy.load(dir / "opt.safetensors");
  CHECK(copy.steps_taken() == 3);
  for (auto* o : {&opt, &copy}) {
    auto& p = o == &opt ? w : w2;
    o->zero_grad();
    (p * p).sum().backward();
    o->step(0.01);
  }
  CHECK(torch::equal(w, w2));

  auto wrong = torch::randn({2, 2}, torch::requires_grad());
  AdamW bad({{"w", wrong}}, {});
  CHECK(error_of([&] { bad.load(dir / "opt.safetensors"); }).find("shape") != std::string::npos);
}

TEST_CASE("AdamW's one-pass CPU update follows the op sequence and not the thread count", "[unit][train]") {
  // Lengths around the vector width and a long one that parallel_for splits; weight decay on.
  AdamWOptions options;
  options.weight_decay = 0.1;
  const int threads = torch::get_num_threads();
  for (const int64_t n : {int64_t(3), int64_t(8), int64_t(37), int64_t(100003)}) {
    torch::manual_seed(n);
    const auto p0 = torch::randn({n}), m0 = torch::randn({n}) * 0.1, v0 = torch::rand({n}) * 0.01;
    std::vector<torch::Tensor> results;
    for (const int t : {1, 2}) {
      torch::set_num_threads(t);
      auto p = p0.clone(), m = m0.clone(), v = v0.clone();
      for (int step = 1; step <= 3; ++step) {
        torch::manual_seed(1000 + step);
        const auto g = torch::randn({n});
        AdamW::update(p, g, m, v, options, 1e-3, 1 - std::pow(0.9, step), 1 - std::pow(0.999, step));
      }
      results.insert(results.end(), {p, m, v});
    }
    torch::set_num_threads(threads);
    for (int i = 0; i < 3; ++i) CHECK(torch::equal(results[i], results[i + 3]));
    auto p = p0.clone(), m = m0.clone(), v = v0.clone();
    for (int step = 1; step <= 3; ++step) {
      torch::manual_seed(1000 + step);
      const auto g = torch::randn({n});
      AdamW::update_by_ops(p, g, m, v, options, 1e-3, 1 - std::pow(0.9, step), 1 - std::pow(0.999, step));
    }
    CHECK(torch::allclose(results[0], p, 1e-6, 1e-7));
    CHECK(torch::allclose(results[1], m, 1e-6, 1e-7));
    CHECK(torch::allclose(results[2], v, 1e-6, 1e-9));
    // The update moved the weights: a comparison of two unchanged copies would pass trivially.
    CHECK_FALSE(torch::allclose(p, p0, 1e-5, 1e-5));
  }

  // A strided view and a double tensor take the op sequence, in place on the viewed storage.
  auto base = torch::randn({6, 4});
  auto strided = base.t(), m = torch::zeros({4, 6}), v = torch::zeros({4, 6});
  auto expected = strided.clone(), em = m.clone(), ev = v.clone();
  const auto g = torch::randn({4, 6});
  AdamW::update(strided, g, m, v, options, 1e-2, 0.1, 0.001);
  AdamW::update_by_ops(expected, g, em, ev, options, 1e-2, 0.1, 0.001);
  CHECK(torch::equal(base.t(), expected));
  auto d = torch::randn({5}, torch::kFloat64), dm = torch::zeros({5}, torch::kFloat64);
  auto dv = torch::zeros({5}, torch::kFloat64), dexp = d.clone();
  auto dem = dm.clone(), dev = dv.clone();
  const auto dg = torch::randn({5}, torch::kFloat64);
  AdamW::update(d, dg, dm, dv, options, 1e-2, 0.1, 0.001);
  AdamW::update_by_ops(dexp, dg, dem, dev, options, 1e-2, 0.1, 0.001);
  CHECK(torch::equal(d, dexp));

  // update_all: every slot at its own learning rate, with step 2's bias corrections.
  std::vector<torch::Tensor> ps{torch::randn({9}), torch::randn({2, 5})}, ms, vs, gs;
  for (const auto& q : ps) {
    ms.push_back(torch::rand_like(q));
    vs.push_back(torch::rand_like(q));
    gs.push_back(torch::randn_like(q));
  }
  std::vector<torch::Tensor> ps2, ms2, vs2;
  for (size_t i = 0; i < ps.size(); ++i) {
    ps2.push_back(ps[i].clone());
    ms2.push_back(ms[i].clone());
    vs2.push_back(vs[i].clone());
  }
  AdamW::update_all({{ps[0], gs[0], ms[0], vs[0], 1e-3}, {ps[1], gs[1], ms[1], vs[1], 4e-3}}, options, 2);
  const double bc1 = 1 - 0.9 * 0.9, bc2 = 1 - 0.999 * 0.999;
  AdamW::update(ps2[0], gs[0], ms2[0], vs2[0], options, 1e-3, bc1, bc2);
  AdamW::update(ps2[1], gs[1], ms2[1], vs2[1], options, 4e-3, bc1, bc2);
  for (size_t i = 0; i < ps.size(); ++i) {
    CHECK(torch::equal(ps[i], ps2[i]));
    CHECK(torch::equal(vs[i], vs2[i]));
  }
}

TEST_CASE("EMA warms up: early steps follow the weights, later ones the configured decay", "[unit][train]") {
  auto w = torch::zeros({4});
  Ema ema({{"w", w}}, 0.999);
  CHECK(ema.decay_at(1) == Approx(2.0 / 11.0));
  CHECK(ema.decay_at(100) == Approx(101.0 / 110.0));
  CHECK(ema.decay_at(100000) == Approx(0.999));
  // After 1000 steps at weight 1 the average is close to 1 (without warm-up it would be 1 - 0.999^1000 =
  // 0.63).
  auto ones = torch::ones({4});
  for (int64_t step = 1; step <= 1000; ++step) ema.update({{"w", ones}}, step);
  CHECK(ema.tensors()[0].second.min().item<double>() > 0.99);
  CHECK(torch::equal(w, torch::zeros({4})));  // the average is a copy, the weights are untouched
}

TEST_CASE("a tiny run overfits: the loss falls, metrics and checkpoints follow the run layout",
          "[train][slow]") {
  Home home(3);
  auto o = micro_options("overfit", 60);
  o.flow.p_first_frame = 0;
  o.flow.p_caption_dropout = 0;
  o.lr = 5e-3;
  o.save_every = 30;
  std::vector<double> losses;
  TrainCallbacks cb;
  cb.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  auto result = train_dit(o, {{"train", {{"steps", 60}}}}, CancelToken(), cb);
  REQUIRE(losses.size() == 60);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) first += losses[i] / 10, last += losses[50 + i] / 10;
  INFO("first " << first << " last " << last);
  CHECK(last < 0.6 * first);

  RunPaths paths = run_paths("overfit");
  CHECK(read_run_manifest(paths).kind == RunLayoutKind::dit);
  CHECK(fs::is_regular_file(paths.tokenizer()));
  std::ifstream metrics(paths.metrics());
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    for (auto key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "mfu",
                     "peak_rss_bytes", "data_wait_ms"})
      CHECK(j.contains(key));
    ++lines;
  }
  CHECK(lines == 60);
  REQUIRE(result.last_checkpoint);
  CHECK(result.last_checkpoint->step == 60);
  for (auto f : {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "trainer_state.json"})
    CHECK(fs::is_regular_file(result.last_checkpoint->dir / f));
  auto model = SafetensorsFile::open(result.last_checkpoint->dir / "model.safetensors");
  CHECK(model.contains("dit.final_layer.linear.weight"));
  CHECK(model.contains("text.token_embedding.weight"));
  CHECK(result.gemm_flops > 0);
}

TEST_CASE("partial recomputation trains like keeping every activation", "[train]") {
  Home home(3);
  auto losses_of = [](const std::string& run, const std::string& mode, int64_t blocks,
                      std::vector<Recompute>* modes) {
    auto o = micro_options(run, 4);
    o.recompute = mode;
    o.recompute_blocks = blocks;
    std::vector<double> losses;
    TrainCallbacks cb;
    cb.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
    cb.before_step = [&](int64_t, DiTBundleImpl& model) {
      *modes = {model.dit->recompute_of(0), model.dit->recompute_of(1)};
    };
    train_dit(o, {}, CancelToken(), cb);
    return losses;
  };
  std::vector<Recompute> modes;
  const auto kept = losses_of("kept", "none", 0, &modes);
  CHECK((modes[0] == Recompute::none && modes[1] == Recompute::none));
  const auto partial = losses_of("partial", "full", 1, &modes);
  CHECK((modes[0] == Recompute::full && modes[1] == Recompute::none));  // the first block of the stage
  const auto all = losses_of("all", "full", 0, &modes);
  CHECK((modes[0] == Recompute::full && modes[1] == Recompute::full));
  REQUIRE(kept.size() == 4);
  REQUIRE(partial.size() == 4);
  REQUIRE(all.size() == 4);
  for (size_t i = 0; i < kept.size(); ++i) {
    CHECK(partial[i] == Approx(kept[i]).epsilon(1e-5));
    CHECK(all[i] == Approx(kept[i]).epsilon(1e-5));
  }
}

TEST_CASE("exact resume: N steps straight equal N/2, stop, resume, N/2 bit for bit", "[train]") {
  // In both precisions: bf16 autocast must not bring in run-to-run differences either; and with Muon, whose
  // momentum and AdamW moments must come back bit for bit too.
  const auto [precision, optimizer] = GENERATE(std::pair<std::string, std::string>{"fp32", "adamw"},
                                               std::pair<std::string, std::string>{"bf16", "adamw"},
                                               std::pair<std::string, std::string>{"fp32", "muon"});
  INFO("precision " << precision << ", optimizer " << optimizer);
  Home home(6);
  auto straight = micro_options("straight", 6);
  straight.precision = precision;
  straight.optimizer = optimizer;
  // The Muon case also tracks post-hoc EMA profiles, which must come back bit for bit as well.
  const std::string profiles = optimizer == "muon" ? "0.05,0.1" : "";
  straight.ema_profiles = profiles;
  train_dit(straight, {}, CancelToken());

  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 4) cancel.request_cancel();
  };
  auto o = micro_options("split", 6);
  o.save_every = 100;  // the cancel itself must save step 3
  o.precision = precision;
  o.optimizer = optimizer;
  o.ema_profiles = profiles;
  ErrorCode code = ErrorCode::unknown;
  error_of(
      [&] {
        nlohmann::json config = test::micro_train_config(6);
        config["train"].update({{"save_every", 100},
                                {"precision", precision},
                                {"optimizer", optimizer},
                                {"ema_profiles", profiles}});
        train_dit(o, config, cancel, stop);
      },
      &code);
  REQUIRE(code == ErrorCode::cancelled);
  auto resumed = resume_dit("split", ResumeChanges{}, CancelToken());
  CHECK(resumed.start_step == 3);
  REQUIRE(resumed.last_checkpoint);

  CheckpointStore a(run_paths("straight").checkpoints()), b(run_paths("split").checkpoints());
  std::vector<std::string> files = {"model.safetensors", "ema.safetensors", "optimizer.safetensors"};
  if (!profiles.empty()) files.insert(files.end(), {"ema_p0.safetensors", "ema_p1.safetensors"});
  for (const auto& file : files) {
    auto wa = load_weights(a.open(6).dir / file);
    auto wb = load_weights(b.open(6).dir / file);
    REQUIRE(wa.size() == wb.size());
    for (size_t i = 0; i < wa.size(); ++i) {
      INFO(file << " " << wa[i].first);
      CHECK(wa[i].first == wb[i].first);
      CHECK(torch::equal(wa[i].second, wb[i].second));
    }
  }
}

TEST_CASE("a resume's changes become the run's stored config", "[train]") {
  Home home(4);
  train_dit(micro_options("changed", 2), {{"train", {{"steps", 2}, {"threads", 2}}}}, CancelToken());
  ResumeChanges changes(4);
  changes.values = {{"train.threads", 1}, {"train.precision", "fp32"}};
  auto resumed = resume_dit("changed", changes, CancelToken());
  CHECK(resumed.last_step == 4);
  const auto config = read_run_manifest(run_paths("changed")).config;
  CHECK(config["train"]["steps"] == 4);
  CHECK(config["train"]["threads"] == 1);
  CHECK(config["train"]["precision"] == "fp32");
  // A plain resume now continues with them: nothing is left to do at step 4 of 4.
  const std::string refused = error_of([] { (void)resume_dit("changed", ResumeChanges{}, CancelToken()); });
  CHECK(refused.find("already at step 4") != std::string::npos);
}

TEST_CASE("a NaN loss stops the run naming the step and keeps the last good checkpoint", "[train]") {
  Home home(4);
  TrainCallbacks poison;
  poison.before_step = [](int64_t step, DiTBundleImpl& model) {
    torch::NoGradGuard no_grad;
    if (step == 3) model.dit->final_layer->linear->weight.fill_(std::nan(""));
  };
  ErrorCode code = ErrorCode::unknown;
  auto message = error_of([&] { train_dit(micro_options("nan", 6), {}, CancelToken(), poison); }, &code);
  CHECK(message.find("step 3") != std::string::npos);
  CHECK(message.find("step-2") != std::string::npos);
  CheckpointStore store(run_paths("nan").checkpoints());
  auto good = store.latest_good();
  REQUIRE(good);
  CHECK(good->step == 2);
}

TEST_CASE("resume refuses damaged and other-preset checkpoints with a reason and uses the last good one",
          "[train]") {
  Home home(4);
  auto o = micro_options("damaged", 6);
  train_dit(o,
            {{"train",
              {{"model", "micro"},
               {"dataset", "shapes"},
               {"vae_run", "vae0"},
               {"threads", 2},
               {"save_every", 2},
               {"batch", 2},
               {"keep", 10}}}},
            CancelToken());
  CheckpointStore store(run_paths("damaged").checkpoints());
  fs::resize_file(store.dir() / "step-6" / "model.safetensors", 100);
  auto manifest = read_json_file(store.dir() / "step-4" / "manifest.json");
  manifest["metadata"]["preset"] = "tiny";
  write_json_atomic(store.dir() / "step-4" / "manifest.json", manifest);

  auto result = resume_dit("damaged", ResumeChanges(8), CancelToken());
  CHECK(result.start_step == 2);
  CHECK(result.last_step == 8);
  REQUIRE(result.refused.size() == 2);
  CHECK(result.refused[0].reason.find("truncated") != std::string::npos);
  CHECK(result.refused[1].reason.find("preset 'tiny'") != std::string::npos);
}

TEST_CASE("training refuses an empty cache, an all-rejected dataset and a run that does not fit in memory",
          "[train]") {
  Home home(2);
  ErrorCode code = ErrorCode::unknown;
  auto o = micro_options("empty", 2);
  o.vae_run = "other";
  auto message = error_of([&] { train_dit(o, {}, CancelToken()); }, &code);
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(message.find("mugv encode") != std::string::npos);

  auto big = micro_options("big", 2);
  big.max_memory_gb = 1e-4;
  message = error_of([&] { train_dit(big, {}, CancelToken()); }, &code);
  CHECK(code == ErrorCode::out_of_memory);
  CHECK(message.find("GiB") != std::string::npos);
  CHECK_FALSE(fs::exists(run_paths("big").root));

  Catalog catalog = Catalog::open(catalog_path());
  Dataset d;
  d.name = "rejected";
  d.root_dir = home.path();
  d = create_dataset(catalog, d);
  Source src;
  src.path = home.path() / "x.mp4";
  src.content_hash = "test:1";
  src = add_source(catalog, src);
  Clip clip;
  clip.dataset_id = d.id;
  clip.source_id = src.id;
  clip.end_s = 2;
  clip.end_frame = 16;
  clip.fps = 8;
  clip.decision = ClipDecision::reject;
  clip.reason = "sharpness<200";
  auto ids = add_clips(catalog, {clip});
  (void)add_caption(catalog, ids[0], "a red circle", CaptionOrigin::human, "test");
  LatentCacheOptions lo;
  lo.dataset = "rejected";
  lo.vae_run = "vae0";
  message = error_of([&] { (void)encode_latents(catalog, lo, CancelToken(), nullptr); }, &code);
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(message.find("1 rejected") != std::string::npos);
}

TEST_CASE("train-vae then encode: latent stats, preview map, held-out PSNR and a cache the DiT reads",
          "[train][media]") {
  Home home(0);
  ShapesDatasetOptions shapes;
  shapes.out_dir = home.path() / "shapes-src";
  shapes.count = 4;
  shapes.size = 32;
  shapes.frames = 9;
  (void)make_shapes_dataset(shapes, CancelToken(), nullptr);
  Catalog catalog = Catalog::open(catalog_path());
  ImportOptions import;
  import.dataset_name = "starter";
  import.input = home.path() / "shapes-src" / "manifest.jsonl";
  (void)import_dataset(catalog, import, CancelToken(), nullptr);

  TrainOptions o = micro_options("vae0", 3);
  o.dataset = "starter";
  o.width = o.height = 32;
  o.frames = 9;
  o.fps = 8;
  o.batch = 2;
  o.heldout_clips = 2;
  auto r = train_vae(catalog, o, nlohmann::json::object(), CancelToken(), nullptr);
  CHECK(r.clips == 4);
  CHECK(r.latent_stats.mean.size() == 4);
  REQUIRE(r.heldout_psnr_db);
  CHECK(*r.heldout_psnr_db > 0);
  // Each held-out clip's 9 frames above their reconstructions: 9 x 32 wide, 2 clips x 2 rows x 32 tall.
  RgbFrame sheet = read_image(r.paths.samples() / "heldout_reconstruction.png");
  CHECK(sheet.width == 9 * 32);
  CHECK(sheet.height == 4 * 32);
  auto rgb = read_json_file(r.paths.latent_rgb());
  CHECK(rgb["weight"].size() == 3);
  CHECK(rgb["weight"][0].size() == 4);

  LatentCacheOptions lo;
  lo.dataset = "starter";
  lo.vae_run = "vae0";
  auto report = encode_latents(catalog, lo, CancelToken(), nullptr);
  CHECK(report.encoded == 4);
  CHECK(report.failures.empty());
  auto cached = list_cached_clips(report.cache_dir);
  REQUIRE(cached.size() == 4);
  CHECK(cached[0].latent_shape == std::vector<int64_t>{4, 3, 4, 4});
  CHECK_FALSE(cached[0].caption.empty());
  auto again = encode_latents(catalog, lo, CancelToken(), nullptr);
  CHECK(again.already_cached == 4);
  CHECK(again.encoded == 0);
}

TEST_CASE(
    "training presets: a key neither trainer has is an error and a preset for the other trainer is refused",
    "[cli][train]") {
  TempDir home;
  fs::create_directories(home.path() / "presets" / "train");
  test::write_bytes(home.path() / "presets" / "train" / "typo.toml",
                    "inherits = \"tiny\"\n[train]\nwarmpu = 10\n");
  const fs::path scratch = home.path() / "scratch";
  fs::create_directories(scratch);
  const auto run = [&](const std::string& args) { return test::run_mugv_cli(args, scratch, home.path()); };

  const auto typo = run("train --preset typo --dataset none --vae-run v --run r");
  if (!typo) return;
  CHECK(typo->exit_code != 0);
  CHECK_THAT(typo->err, Catch::Contains("typo.toml") && Catch::Contains("unknown key 'train.warmpu'") &&
                            Catch::Contains("did you mean train.warmup?"));

  const auto vae_for_dit = run("train --preset tiny-vae --dataset none --vae-run v --run r");
  CHECK(vae_for_dit->exit_code != 0);
  CHECK_THAT(vae_for_dit->err,
             Catch::Contains("tiny-vae.toml") && Catch::Contains("is a preset for mugv train-vae"));

  // Presets for either trainer pass both (each takes its own keys): the runs then stop at the missing
  // dataset, past the preset.
  for (const char* preset : {"tiny", "small", "mugv-finetune"}) {
    INFO(preset);
    const auto dit = run(std::string("train --preset ") + preset + " --dataset none --vae-run v --run r");
    CHECK_THAT(dit->err, Catch::Contains("none") && !Catch::Contains("unknown key"));
    const auto vae = run(std::string("train-vae --preset ") + preset + " --dataset none --run r");
    CHECK_THAT(vae->err, Catch::Contains("no such dataset"));
  }
  CHECK_THAT(run("train-vae --preset tiny-vae --dataset none --run r")->err,
             Catch::Contains("no such dataset"));
}
