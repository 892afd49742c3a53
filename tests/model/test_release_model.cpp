// The released MUG-V model: its DiT reproduces the reference code's outputs (../shared/data/golden), and
// its configuration is read from a checkpoint's shapes.
#include "core/error.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/weights.h"
#include "support/model_fixtures.h"
#include "support/test_support.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <string>

using namespace mugv;
using mugv::test::expect_error;

namespace {

TensorShapeLookup shapes_of(const SafetensorsFile& file) {
  return [&file](const std::string& name) -> std::optional<std::vector<int64_t>> {
    if (!file.contains(name)) return std::nullopt;
    return file.at(name).shape;
  };
}

torch::Tensor io_tensor(const SafetensorsFile& io, const std::string& name) {
  return tensor_from_view(io.at(name), io.path().string() + ": " + name);
}

// The release's call `model(x, timestep, y, mask, x_mask, fps, frame_indice)` through this DiT's API: y is
// [B, 1, N, text_dim] there, x_mask true marks a noisy frame (cond_mask is its negation).
torch::Tensor release_call(DiT& dit, const SafetensorsFile& io, const std::string& tag) {
  auto in = [&](const std::string& what) { return io_tensor(io, tag + "." + what); };
  return dit->forward_full(in("x"), in("timestep"), in("y").squeeze(1), in("mask"), in("fps"),
                           in("x_mask").to(torch::kBool).logical_not(), in("frame_indice"));
}

}  // namespace

TEST_CASE("the released DiT reproduces the reference outputs in fp32, from dit.pt and safetensors",
          "[unit][model][golden]") {
  auto io_path = test::golden_data_file("mugv_dit_tiny_io.safetensors");
  if (!io_path) return;
  const SafetensorsFile io = SafetensorsFile::open(*io_path);
  for (const std::string file_name : {"mugv_dit_tiny.pt", "mugv_dit_tiny.safetensors"}) {
    INFO(file_name);
    auto weights = test::golden_data_file(file_name);
    if (!weights) continue;
    const WeightFiles files = WeightFiles::open(*weights);
    const DiTConfig config =
        dit_config_from_checkpoint(shapes_of(files), kReleaseTextTokens, weights->string());
    CHECK(config.hidden == 96);
    CHECK(config.depth == 2);
    CHECK(config.heads == 2);
    CHECK(config.head_dim == 48);
    CHECK(config.in_channels == 4);
    CHECK((config.patch_t == 1 && config.patch_h == 2 && config.patch_w == 2));
    CHECK(config.text_dim == 32);
    CHECK(config.mlp_ratio == 4);
    CHECK_FALSE(config.null_caption);
    CHECK(dit_parameter_count(config) == 440768);

    DiT dit(config);
    CHECK(parameter_count(*dit) == 440768);
    const LoadReport report = load_module(*dit, files, {}, UnexpectedTensors::error);
    CHECK(report.loaded == 63);
    dit->eval();
    torch::NoGradGuard no_grad;
    for (const std::string tag : {"t2v", "i2v", "pad"}) {
      INFO(tag);
      const auto expected = io_tensor(io, tag + ".out");
      const auto got = release_call(dit, io, tag);
      REQUIRE(got.sizes() == expected.sizes());
      const double error = (got - expected).abs().max().item<double>();
      INFO("max abs error " << error);
      CHECK(error <= 1e-4);
      // forward() is the velocity: the first C of the 2·C channels.
      auto in = [&](const std::string& what) { return io_tensor(io, tag + "." + what); };
      CHECK(torch::equal(dit->forward(in("x"), in("timestep"), in("y").squeeze(1), in("mask"), in("fps"),
                                      in("x_mask").to(torch::kBool).logical_not(), in("frame_indice")),
                         got.narrow(1, 0, config.in_channels)));
    }
  }
}

TEST_CASE("release conventions: frame indices, packed captions, clean frames", "[unit][model][golden]") {
  auto weights = test::golden_data_file("mugv_dit_tiny.safetensors");
  auto io_path = test::golden_data_file("mugv_dit_tiny_io.safetensors");
  if (!weights || !io_path) return;
  const SafetensorsFile file = SafetensorsFile::open(*weights);
  DiT dit(dit_config_from_checkpoint(shapes_of(file), kReleaseTextTokens, weights->string()));
  (void)load_module(*dit, file, {}, UnexpectedTensors::error);
  dit->eval();
  torch::NoGradGuard no_grad;
  const SafetensorsFile io = SafetensorsFile::open(*io_path);
  auto in = [&](const std::string& what) { return io_tensor(io, "t2v." + what); };
  const auto x = in("x"), timestep = in("timestep"), y = in("y").squeeze(1), mask = in("mask"),
             fps = in("fps");
  const auto base = dit->forward_full(x, timestep, y, mask, fps);

  // Undefined frame indices and cond_mask mean 0 … T'+1 and all frames noisy.
  const auto same = dit->forward_full(x, timestep, y, mask, fps, in("x_mask").to(torch::kBool).logical_not(),
                                      in("frame_indice"));
  CHECK(torch::allclose(base, same, 0, 1e-6));
  // RoPE is relative: shifting every time position changes nothing, spreading them does.
  const auto shifted = dit->forward_full(x, timestep, y, mask, fps, {}, in("frame_indice") + 3);
  CHECK(torch::allclose(shifted, base, 0, 1e-5));
  const auto spread = dit->forward_full(x, timestep, y, mask, fps, {}, in("frame_indice") * 2);
  CHECK((spread - base).abs().max().item<double>() > 1e-4);
  // A padded caption token changes nothing, whatever it holds.
  REQUIRE(mask[1].sum().item<double>() < mask.size(1));
  auto noisy_padding = y.clone();
  noisy_padding[1].narrow(0, mask.size(1) - 1, 1).normal_();
  CHECK(torch::allclose(dit->forward_full(x, timestep, noisy_padding, mask, fps), base, 0, 1e-6));
  // A clean frame in sample 0 changes sample 0 only.
  auto cond = torch::zeros({x.size(0), x.size(2)}, torch::kBool);
  cond[0][0] = true;
  const auto conditioned = dit->forward_full(x, timestep, y, mask, fps, cond);
  CHECK((conditioned[0] - base[0]).abs().max().item<double>() > 1e-4);
  CHECK(torch::allclose(conditioned[1], base[1], 0, 1e-6));

  Error e = expect_error(
      [&] { (void)dit->forward_full(x, timestep, y, mask, fps, {}, in("frame_indice").narrow(1, 0, 2)); });
  CHECK(e.subject() == "frame_indices");
}

TEST_CASE("a checkpoint's shapes give the DiT configuration; a preset that differs is named",
          "[unit][model]") {
  torch::manual_seed(3);
  DiTConfig c;
  c.hidden = 64;
  c.depth = 3;
  c.heads = 4;
  c.head_dim = 16;
  c.mlp_ratio = 2;
  c.in_channels = 6;
  c.text_dim = 24;
  c.text_tokens = 5;
  c.null_caption = false;
  test::TempDir dir("mugv-release");
  save_module(*DiT(c), dir / "dit.safetensors");
  const SafetensorsFile file = SafetensorsFile::open(dir / "dit.safetensors");
  const DiTConfig read = dit_config_from_checkpoint(shapes_of(file), 5, "dit.safetensors");
  CHECK(read.hidden == 64);
  CHECK(read.depth == 3);
  CHECK(read.heads == 4);
  CHECK(read.head_dim == 16);
  CHECK(read.mlp_ratio == 2);
  CHECK(read.in_channels == 6);
  CHECK(read.text_dim == 24);
  CHECK_FALSE(read.null_caption);
  CHECK(dit_parameter_count(read) == parameter_count(*DiT(c)));
  check_dit_matches_checkpoint(c, "mine", shapes_of(file), "dit.safetensors");

  DiTConfig wider = c;
  wider.hidden = 128;
  wider.head_dim = 32;
  Error e =
      expect_error([&] { check_dit_matches_checkpoint(wider, "wider", shapes_of(file), "dit.safetensors"); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("x_embedder.proj.weight") != std::string::npos);
  CHECK(std::string(e.what()).find("wider") != std::string::npos);
  DiTConfig more_heads = c;
  more_heads.heads = 8;
  more_heads.head_dim = 8;
  e = expect_error(
      [&] { check_dit_matches_checkpoint(more_heads, "heads", shapes_of(file), "dit.safetensors"); });
  CHECK(std::string(e.what()).find("blocks.0.attn.q_norm.weight") != std::string::npos);
  DiTConfig deeper = c;
  deeper.depth = 4;
  e = expect_error(
      [&] { check_dit_matches_checkpoint(deeper, "deeper", shapes_of(file), "dit.safetensors"); });
  CHECK(std::string(e.what()).find("blocks.N") != std::string::npos);

  // A file that is not a DiT, or whose output width is not 2·C per patch element, is refused by name.
  auto without = [&](const std::string& missing) -> TensorShapeLookup {
    return [&, missing](const std::string& name) -> std::optional<std::vector<int64_t>> {
      if (name == missing || !file.contains(name)) return std::nullopt;
      return file.at(name).shape;
    };
  };
  e = expect_error([&] { (void)dit_config_from_checkpoint(without("x_embedder.proj.weight"), 5, "vae.pt"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(e.subject() == "vae.pt");
  CHECK(std::string(e.what()).find("x_embedder.proj.weight") != std::string::npos);
  auto narrow_output = [&](const std::string& name) -> std::optional<std::vector<int64_t>> {
    if (name == "final_layer.linear.weight") return std::vector<int64_t>{24, 64};
    if (!file.contains(name)) return std::nullopt;
    return file.at(name).shape;
  };
  e = expect_error([&] { (void)dit_config_from_checkpoint(narrow_output, 5, "dit.pt"); });
  CHECK(std::string(e.what()).find("final_layer.linear.weight") != std::string::npos);
}

TEST_CASE("block swap gives the same outputs with at most two blocks on the device", "[unit][model]") {
  torch::manual_seed(8);
  DiT dit(test::micro_dit_config(4));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : dit->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  dit->eval();
  auto x = torch::randn({2, 4, 3, 4, 6});
  auto timestep = torch::tensor({900.0f, 250.0f});
  auto text = torch::randn({2, 6, 16});
  auto fps = torch::full({2}, 24.0);
  torch::NoGradGuard no_grad;
  const auto plain = dit->forward_full(x, timestep, text, {}, fps);

  auto offload = std::make_shared<BlockOffload>(*dit, torch::Device(torch::kCPU));
  CHECK(offload->blocks() == 4);
  CHECK(offload->block_bytes() > 0);
  dit->set_block_offload(offload);
  for (int step = 0; step < 2; ++step)
    CHECK(torch::equal(dit->forward_full(x, timestep, text, {}, fps), plain));
  CHECK(offload->peak_resident_blocks() == 2);

  torch::AutoGradMode grad(
      true);  // an inference swap under grad mode is refused (training swaps a frozen base)
  Error e = expect_error([&] { (void)dit->forward_full(x, timestep, text, {}, fps); });
  CHECK(e.code() == ErrorCode::unsupported);
  CHECK(offload_mode_from_string("auto") == OffloadMode::automatic);
  CHECK(std::string(to_string(OffloadMode::blocks)) == "blocks");
  CHECK_FALSE(offload_mode_from_string("disk"));
}

TEST_CASE("without a learned null caption, dropped captions become the given encoded empty prompt",
          "[unit][model]") {
  DiTConfig c = test::micro_dit_config(1);
  c.null_caption = false;
  DiT dit(c);
  CHECK_FALSE(dit->has_null_caption());
  CHECK(parameter_count(*dit) == dit_parameter_count(c));
  auto text = torch::randn({2, 6, 16});
  auto mask = torch::ones({2, 6});
  auto drop = torch::tensor({false, true});
  Error e = expect_error([&] { (void)dit->drop_captions(text, mask, drop); });
  CHECK(e.code() == ErrorCode::unsupported);
  auto empty = torch::randn({1, 2, 16});  // an end token and one more
  auto empty_mask = torch::tensor({{1.0f, 0.0f}});
  auto [out, out_mask] = dit->drop_captions(text, mask, drop, empty, empty_mask);
  CHECK(torch::equal(out[0], text[0]));
  CHECK(torch::equal(out[1].narrow(0, 0, 2), empty[0]));
  CHECK(out[1].narrow(0, 2, 4).abs().sum().item<float>() == 0.0f);
  CHECK(torch::equal(out_mask[1], torch::tensor({1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f})));
  CHECK(torch::equal(out_mask[0], mask[0]));
}
