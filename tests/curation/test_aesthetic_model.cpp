// User-supplied aesthetic predictors (curation/aesthetic_model.h, torch_aesthetic.h): real TorchScript files
// compiled from source here and real safetensors heads, loaded and run as curation does.
#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/error.h"
#include "curation/aesthetic_model.h"
#include "curation/pipeline.h"
#include "curation/synthetic_video.h"
#include "curation/torch_aesthetic.h"
#include "model/weights.h"
#include "support/test_support.h"

#include <torch/script.h>
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <fstream>

namespace mugv {
namespace {

using test::TempDir;

// A TorchScript module compiled from `body` (the text of forward) and saved to `path`.
fs::path write_script(const fs::path& path, const std::string& body, std::optional<int64_t> input_size = 32) {
  torch::jit::Module m("Predictor");
  if (input_size) m.register_attribute("input_size", c10::IntType::get(), *input_size);
  m.define("def forward(self, x):\n    " + body + "\n");
  m.save(path.string());
  return path;
}

RgbFrame solid(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  RgbFrame f(width, height);
  for (size_t i = 0; i < f.rgb.size(); i += 3) {
    f.rgb[i] = r;
    f.rgb[i + 1] = g;
    f.rgb[i + 2] = b;
  }
  return f;
}

struct Head : torch::nn::Module {
  Head(int64_t in, int64_t hidden) {
    layers = register_module(
        "layers", torch::nn::Sequential(torch::nn::Linear(in, hidden), torch::nn::Linear(hidden, 1)));
  }
  torch::nn::Sequential layers{nullptr};
};

}  // namespace

TEST_CASE("a TorchScript predictor scores pictures as its forward says", "[curation][unit]") {
  register_torch_aesthetic_loader();
  TempDir tmp("mugv-aesthetic");
  // Mean brightness mapped onto 1..10.
  auto model =
      load_aesthetic_model(write_script(tmp / "bright.pt", "return x.mean(dim=[1, 2, 3]) * 9.0 + 1.0"));
  CHECK(model->source() == "model:bright.pt");
  CHECK(model->score(solid(64, 48, 255, 255, 255)) == Approx(10.0));
  CHECK(model->score(solid(320, 180, 0, 0, 0)) == Approx(1.0));
  CHECK(model->score(solid(40, 40, 255, 0, 0)) == Approx(4.0));
}

TEST_CASE("a LAION-style safetensors head runs on the embeddings of its feature extractor",
          "[curation][unit]") {
  register_torch_aesthetic_loader();
  TempDir tmp("mugv-aesthetic");
  write_script(tmp / "features.ts", "return x.mean(dim=[2, 3])");  // [N, 3] mean colour
  torch::NoGradGuard no_grad;
  Head head(3, 2);
  head.layers[0]->as<torch::nn::Linear>()->weight.copy_(
      torch::tensor({{1.0f, 0.0f, 0.0f}, {0.0f, -1.0f, 0.0f}}));
  head.layers[0]->as<torch::nn::Linear>()->bias.copy_(torch::tensor({0.0f, 0.5f}));
  head.layers[1]->as<torch::nn::Linear>()->weight.copy_(torch::tensor({{2.0f, 4.0f}}));
  head.layers[1]->as<torch::nn::Linear>()->bias.copy_(torch::tensor({1.0f}));
  save_module(head, tmp / "head.safetensors",
              {{"features", "features.ts"}, {"normalize", "none"}, {"activation", "relu"}});
  auto model = load_aesthetic_model(tmp / "head.safetensors");
  // Green picture: features (0, 1, 0) -> layer 0 (0, -0.5) -> relu (0, 0) -> 1.
  CHECK(model->score(solid(32, 32, 0, 255, 0)) == Approx(1.0));
  // Red picture: (1, 0, 0) -> (1, 0.5) -> 2 + 2 + 1 = 5.
  CHECK(model->score(solid(32, 32, 255, 0, 0)) == Approx(5.0));

  save_module(head, tmp / "l2.safetensors",
              {{"features", "features.ts"}});  // LAION defaults: l2, no activation
  auto laion = load_aesthetic_model(tmp / "l2.safetensors");
  // White (1,1,1)/sqrt(3) -> (0.577, -0.077) -> 1.155 - 0.309 + 1.
  CHECK(laion->score(solid(32, 32, 255, 255, 255)) ==
        Approx(2.0 / std::sqrt(3.0) - 4.0 * (1.0 / std::sqrt(3.0) - 0.5) + 1.0).epsilon(1e-4));
}

TEST_CASE("bad aesthetic model files are refused naming the file and the problem", "[curation][unit]") {
  register_torch_aesthetic_loader();
  TempDir tmp("mugv-aesthetic");
  Error e = test::expect_error([&] { (void)load_aesthetic_model(tmp / "absent.pt"); });
  CHECK(e.code() == ErrorCode::not_found);
  CHECK(std::string(e.what()).find("absent.pt") != std::string::npos);

  test::write_bytes(tmp / "notes.txt", "hello");
  e = test::expect_error([&] { (void)load_aesthetic_model(tmp / "notes.txt"); });
  CHECK(e.code() == ErrorCode::unsupported);

  test::write_bytes(tmp / "garbage.pt", "not a zip archive at all");
  e = test::expect_error([&] { (void)load_aesthetic_model(tmp / "garbage.pt"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("garbage.pt") != std::string::npos);

  auto two = load_aesthetic_model(write_script(tmp / "two.pt", "return torch.stack([x.mean(), x.mean()])"));
  e = test::expect_error([&] { (void)two->score(solid(16, 16, 1, 2, 3)); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("one score per image") != std::string::npos);

  Head head(4, 2);  // takes 4 features; the extractor gives 3
  write_script(tmp / "features.ts", "return x.mean(dim=[2, 3])");
  save_module(head, tmp / "wide.safetensors", {{"features", "features.ts"}});
  auto wide = load_aesthetic_model(tmp / "wide.safetensors");
  e = test::expect_error([&] { (void)wide->score(solid(16, 16, 1, 2, 3)); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("gives 3 features; the head takes 4") != std::string::npos);

  save_module(head, tmp / "headless.safetensors");
  e = test::expect_error([&] { (void)load_aesthetic_model(tmp / "headless.safetensors"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("features") != std::string::npos);
}

TEST_CASE("curation with aesthetic.model stores the model's scores and decides on them",
          "[curation][pipeline][catalog]") {
  register_torch_aesthetic_loader();
  TempDir tmp("mugv-aesthetic");
  test::Look look;
  look.hue_deg = 200;
  test::Shot shot;
  shot.look = look;
  shot.frames = 72;
  const fs::path video = test::write_shots(tmp / "video.mp4", {shot}, 192, 108, 24).path;
  const fs::path model = write_script(tmp / "seven.pt", "return x.mean(dim=[1, 2, 3]) * 0.0 + 7.25");

  Catalog catalog = Catalog::open(tmp / "catalog.sqlite");
  CurateOptions o;
  o.inputs = {video};
  o.dataset_name = "scored";
  o.preset = "lenient";
  o.overrides = {{"aesthetic.model", model.string()}, {"thresholds.aesthetic_min", 7.5}};
  CurateReport r = curate(catalog, o, CancelToken(), nullptr);
  REQUIRE(r.clips_added >= 1);
  ClipFilter f;
  f.dataset_id = r.dataset_id;
  for (const Clip& c : list_clips(catalog, f)) {
    REQUIRE(c.scores.aesthetic);
    CHECK(*c.scores.aesthetic == Approx(7.25));
    CHECK(c.scores.extra.value("aesthetic_source", "") == "model:seven.pt");
    CHECK(c.decision == ClipDecision::reject);
    CHECK(c.reason.find("aesthetic") != std::string::npos);
  }

  o.overrides = {{"aesthetic.model", (tmp / "missing.pt").string()}};
  o.dataset_name = "other";
  Error e = test::expect_error([&] { (void)curate(catalog, o, CancelToken(), nullptr); });
  CHECK(e.code() == ErrorCode::not_found);
  CHECK(std::string(e.what()).find("missing.pt") != std::string::npos);
}

}  // namespace mugv
