#include "core/error.h"
#include "model/mugv_vae.h"
#include "model/weights.h"
#include "support/test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace mugv;
using mugv::test::expect_error;

namespace {

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

// The release's layout shrunk: four spatial levels (so still 8× in space), four temporal levels
// with the release's temporal up/down pattern (8× in time), one block a level, 4 groups.
MugvVAEConfig tiny_config() {
  MugvVAEConfig c;
  c.spatial_channels = {8, 8, 16, 16};
  c.spatial_layers_per_block = 1;
  c.spatial_latent_channels = 2;
  c.spatial_groups = 4;
  c.temporal_filters = 8;
  c.temporal_multipliers = {1, 2, 2, 4};
  c.temporal_res_blocks = 1;
  c.temporal_groups = 4;
  c.latent_channels = 4;
  c.micro_frame_size = 16;
  c.micro_batch_size = 3;
  c.latent_mean = {0.1, -0.2, 0.3, 0.0};
  c.latent_std = {1.5, 0.5, 2.0, 1.0};
  return c;
}

MugvVAE tiny_vae(uint64_t seed = 7) {
  torch::manual_seed(seed);
  MugvVAE vae(tiny_config());
  vae->eval();
  return vae;
}

ShapeMap module_shapes(const torch::nn::Module& module) {
  ShapeMap shapes;
  for (const auto& item : module.named_parameters()) shapes[item.key()] = item.value().sizes().vec();
  for (const auto& item : module.named_buffers()) shapes[item.key()] = item.value().sizes().vec();
  return shapes;
}

ShapeMap table_shapes(const MugvVAEConfig& config) {
  ShapeMap shapes;
  for (const auto& [name, shape] : mugv_vae_tensor_shapes(config)) shapes[name] = shape;
  return shapes;
}

std::function<std::optional<std::vector<int64_t>>(const std::string&)> lookup(const ShapeMap& shapes) {
  return [&shapes](const std::string& name) -> std::optional<std::vector<int64_t>> {
    auto it = shapes.find(name);
    if (it == shapes.end()) return std::nullopt;
    return it->second;
  };
}

torch::Tensor video(int64_t frames, int64_t batch = 1, int64_t height = 16, int64_t width = 24) {
  return torch::rand({batch, 3, frames, height, width}) * 2 - 1;
}

std::vector<int64_t> sizes(const torch::Tensor& t) {
  return t.sizes().vec();
}

// Equal up to summation order: the same frame in a micro batch of another size runs other conv kernels.
bool nearly_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::allclose(a, b, 1e-4, 1e-5);
}

}  // namespace

TEST_CASE("MUG-V VAE: the module's tensors carry the release's state-dict names", "[unit]") {
  auto vae = tiny_vae();
  const ShapeMap shapes = module_shapes(*vae);
  // The name table mirrors the module exactly, so it can stand for the module without building it.
  CHECK(shapes == table_shapes(tiny_config()));

  const std::map<std::string, std::vector<int64_t>> expected = {
      {"logvar", {}},
      {"scale", {1, 4, 1, 1, 1}},
      {"shift", {1, 4, 1, 1, 1}},
      {"spatial_vae.module.encoder.conv_in.weight", {8, 3, 3, 3}},
      {"spatial_vae.module.encoder.down_blocks.0.downsamplers.0.conv.weight", {8, 8, 3, 3}},
      {"spatial_vae.module.encoder.down_blocks.2.resnets.0.conv_shortcut.weight", {16, 8, 1, 1}},
      {"spatial_vae.module.encoder.mid_block.attentions.0.group_norm.weight", {16}},
      {"spatial_vae.module.encoder.mid_block.resnets.1.conv2.bias", {16}},
      {"spatial_vae.module.encoder.conv_out.weight", {4, 16, 3, 3}},
      {"spatial_vae.module.decoder.conv_in.weight", {16, 2, 3, 3}},
      {"spatial_vae.module.decoder.mid_block.attentions.0.to_out.0.weight", {16, 16}},
      {"spatial_vae.module.decoder.up_blocks.0.upsamplers.0.conv.bias", {16}},
      {"spatial_vae.module.decoder.up_blocks.2.resnets.0.conv_shortcut.weight", {8, 16, 1, 1}},
      {"spatial_vae.module.decoder.up_blocks.3.resnets.1.norm2.weight", {8}},
      {"temporal_vae.encoder.conv_in.conv.weight", {8, 16, 3, 3, 3}},
      {"temporal_vae.encoder.block_res_blocks.1.0.conv3.conv.weight", {16, 8, 1, 1, 1}},
      {"temporal_vae.encoder.block_res_blocks.3.0.conv1.conv.weight", {32, 16, 3, 3, 3}},
      {"temporal_vae.encoder.res_blocks.0.norm2.bias", {32}},
      {"temporal_vae.encoder.conv_blocks.0.conv.weight", {8, 8, 3, 3, 3}},
      {"temporal_vae.encoder.conv2.conv.bias", {8}},
      {"temporal_vae.quant_conv.conv.weight", {8, 8, 1, 1, 1}},
      {"temporal_vae.post_quant_conv.conv.weight", {4, 4, 1, 1, 1}},
      {"temporal_vae.decoder.conv1.conv.weight", {32, 4, 3, 3, 3}},
      {"temporal_vae.decoder.upsample_block.conv1.conv.weight", {32, 32, 3, 3, 3}},
      {"temporal_vae.decoder.block_res_blocks.2.0.conv3.conv.weight", {16, 32, 1, 1, 1}},
      {"temporal_vae.decoder.block_res_blocks.0.0.conv3.conv.weight", {8, 16, 1, 1, 1}},
      {"temporal_vae.decoder.conv_blocks.1.conv.weight", {32, 16, 3, 3, 3}},
      {"temporal_vae.decoder.conv_blocks.2.conv.weight", {64, 32, 3, 3, 3}},
      {"temporal_vae.decoder.conv_out.conv.weight", {16, 8, 3, 3, 3}},
  };
  for (const auto& [name, shape] : expected) {
    INFO(name);
    REQUIRE(shapes.count(name) == 1);
    CHECK(shapes.at(name) == shape);
  }
  // What the release does not have: quant convs in the 2D part, biases on the temporal res-block
  // convs, a conv for the decoder level without temporal upsampling.
  for (const char* absent :
       {"spatial_vae.module.quant_conv.weight", "spatial_vae.module.post_quant_conv.weight",
        "temporal_vae.encoder.block_res_blocks.0.0.conv1.conv.bias", "temporal_vae.encoder.conv_in.conv.bias",
        "temporal_vae.decoder.conv_blocks.0.conv.weight"}) {
    INFO(absent);
    CHECK(shapes.count(absent) == 0);
  }
  CHECK(vae->logvar.item<double>() == 4.0);
  CHECK(vae->scale.flatten().allclose(torch::tensor({1.5, 0.5, 2.0, 1.0}, torch::kFloat)));
}

TEST_CASE("MUG-V VAE: the release layout and its name list", "[unit]") {
  const MugvVAEConfig release;
  const ShapeMap shapes = table_shapes(release);
  CHECK(shapes.at("scale") == std::vector<int64_t>{1, 24, 1, 1, 1});
  CHECK(shapes.at("spatial_vae.module.encoder.conv_out.weight") == std::vector<int64_t>{8, 512, 3, 3});
  CHECK(shapes.at("spatial_vae.module.decoder.conv_in.weight") == std::vector<int64_t>{512, 4, 3, 3});
  CHECK(shapes.at("spatial_vae.module.decoder.up_blocks.3.resnets.0.conv_shortcut.weight") ==
        std::vector<int64_t>{128, 256, 1, 1});
  CHECK(shapes.at("spatial_vae.module.decoder.up_blocks.2.resnets.2.conv1.weight") ==
        std::vector<int64_t>{256, 256, 3, 3});
  CHECK(shapes.at("temporal_vae.encoder.conv_in.conv.weight") == std::vector<int64_t>{128, 512, 3, 3, 3});
  CHECK(shapes.at("temporal_vae.encoder.conv_blocks.2.conv.weight") ==
        std::vector<int64_t>{256, 256, 3, 3, 3});
  CHECK(shapes.at("temporal_vae.encoder.res_blocks.3.conv2.conv.weight") ==
        std::vector<int64_t>{512, 512, 3, 3, 3});
  CHECK(shapes.at("temporal_vae.encoder.conv2.conv.weight") == std::vector<int64_t>{48, 512, 1, 1, 1});
  CHECK(shapes.at("temporal_vae.decoder.conv_blocks.1.conv.weight") ==
        std::vector<int64_t>{512, 256, 3, 3, 3});
  CHECK(shapes.at("temporal_vae.decoder.conv_blocks.2.conv.weight") ==
        std::vector<int64_t>{1024, 512, 3, 3, 3});
  CHECK(shapes.count("temporal_vae.decoder.conv_blocks.0.conv.weight") == 0);
  CHECK(shapes.at("temporal_vae.decoder.conv_out.conv.weight") == std::vector<int64_t>{512, 128, 3, 3, 3});
  CHECK(release.spatial_factor() == 8);
  CHECK(release.temporal_factor() == 8);

  // The release's config reads back from its own shapes.
  CHECK(mugv_vae_config_from_shapes(lookup(shapes)) == release);

  // The committed name list (state_dict() order of the reference) is exactly this table.
  std::ifstream file(test::source_dir() / "tests" / "data" / "mugv_vae_release_names.txt");
  REQUIRE(file.good());
  std::vector<std::string> names;
  for (std::string line; std::getline(file, line);) names.push_back(line);
  const auto table = mugv_vae_tensor_shapes(release);
  REQUIRE(names.size() == table.size());
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(i);
    CHECK(names[i] == table[i].first);
  }
}

TEST_CASE("MUG-V VAE: the config reads back from a checkpoint's shapes", "[unit]") {
  auto vae = tiny_vae();
  ShapeMap shapes = module_shapes(*vae);
  CHECK(mugv_vae_config_from_shapes(lookup(shapes), tiny_config()) == tiny_config());

  SECTION("statistics of another count are dropped (the checkpoint's buffers carry them)") {
    const MugvVAEConfig read = mugv_vae_config_from_shapes(lookup(shapes), [] {
      MugvVAEConfig base = tiny_config();
      base.latent_mean = mugv_release_latent_mean();
      base.latent_std = mugv_release_latent_std();
      return base;
    }());
    CHECK(read.latent_mean.empty());
    CHECK(read.latent_std.empty());
  }
  SECTION("a wrong shape names the tensor") {
    const std::string name = "temporal_vae.decoder.block_res_blocks.1.0.conv2.conv.weight";
    shapes[name] = {8, 8, 3, 3, 1};
    Error e = expect_error([&] { (void)mugv_vae_config_from_shapes(lookup(shapes), tiny_config()); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == name);
    CHECK_THAT(e.message(), Catch::Contains("[8, 8, 3, 3, 1]") && Catch::Contains("[16, 16, 3, 3, 3]"));
  }
  SECTION("a missing tensor names the tensor") {
    const std::string name = "spatial_vae.module.decoder.conv_norm_out.bias";
    shapes.erase(name);
    Error e = expect_error([&] { (void)mugv_vae_config_from_shapes(lookup(shapes), tiny_config()); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == name);
  }
  SECTION("a temporal width that is no multiple of the filters names the tensor") {
    const std::string name = "temporal_vae.encoder.block_res_blocks.1.0.conv1.conv.weight";
    shapes[name] = {12, 8, 3, 3, 3};
    Error e = expect_error([&] { (void)mugv_vae_config_from_shapes(lookup(shapes), tiny_config()); });
    CHECK(e.subject() == name);
  }
}

TEST_CASE("MUG-V VAE: frame-count rules", "[unit]") {
  auto vae = tiny_vae();
  CHECK(vae->latent_frames(1) == 1);
  CHECK(vae->latent_frames(8) == 1);
  CHECK(vae->latent_frames(9) == 2);
  CHECK(vae->latent_frames(12) == 2);
  CHECK(vae->latent_frames(16) == 2);
  CHECK(vae->latent_frames(17) == 3);
  CHECK(vae->latent_frames(105) == 14);  // the release's 5 s clip
  CHECK(vae->video_frames(13) == 104);   // its decode after the reference latent
  CHECK(expect_error([&] { (void)vae->latent_frames(0); }).subject() == "frames");
  CHECK(expect_error([&] { (void)vae->video_frames(0); }).subject() == "latent_frames");
}

TEST_CASE("MUG-V VAE: encode and decode shapes", "[unit]") {
  torch::NoGradGuard no_grad;
  auto vae = tiny_vae();
  // 1 and 8k+1 frames (frame 0 repeated), 8k frames, others (zero frames in front), and 25 frames
  // across two micro chunks of 16.
  for (int64_t frames : {1, 8, 9, 16, 17, 5, 12, 25}) {
    INFO(frames << " frames");
    auto x = video(frames);
    auto z = vae->encode(x);
    CHECK(sizes(z) == std::vector<int64_t>{1, 4, vae->latent_frames(frames), 2, 3});
    CHECK(torch::isfinite(z).all().item<bool>());
    auto y = vae->decode(z, frames);
    CHECK(sizes(y) == sizes(x));
  }
  auto z = vae->encode(video(8, /*batch=*/2, 8, 32));
  CHECK(sizes(z) == std::vector<int64_t>{2, 4, 1, 1, 4});
  CHECK(sizes(vae->decode(z, 5)) == std::vector<int64_t>{2, 3, 5, 8, 32});
  CHECK(sizes(vae->decode(z, 8)) == std::vector<int64_t>{2, 3, 8, 8, 32});
}

TEST_CASE("MUG-V VAE: whole-clip passes (no micro chunks) give the same shapes", "[unit]") {
  torch::NoGradGuard no_grad;
  MugvVAEConfig c = tiny_config();
  c.micro_frame_size = 0;
  c.micro_batch_size = 0;
  torch::manual_seed(3);
  MugvVAE vae(c);
  for (int64_t frames : {1, 9, 20}) {
    INFO(frames << " frames");
    auto x = video(frames);
    auto z = vae->encode(x);
    CHECK(z.size(2) == vae->latent_frames(frames));
    CHECK(sizes(vae->decode(z, frames)) == sizes(x));
  }
}

TEST_CASE("MUG-V VAE: every latent frame depends only on its own chunk", "[unit]") {
  torch::NoGradGuard no_grad;
  auto vae = tiny_vae();
  auto x = video(16);
  auto z = vae->encode(x);

  auto changed = x.clone();
  changed.narrow(2, 8, 8).uniform_(-1, 1);
  auto z_changed = vae->encode(changed);
  CHECK(nearly_equal(z.narrow(2, 0, 1), z_changed.narrow(2, 0, 1)));
  CHECK_FALSE(nearly_equal(z.narrow(2, 1, 1), z_changed.narrow(2, 1, 1)));

  // Each chunk alone encodes to the same latent frame.
  CHECK(nearly_equal(vae->encode(x.narrow(2, 8, 8)), z.narrow(2, 1, 1)));
  // With 8k+1 frames the first latent is frame 0 on its own, as a 1-frame clip encodes.
  auto nine = video(9);
  CHECK(nearly_equal(vae->encode(nine).narrow(2, 0, 1), vae->encode(nine.narrow(2, 0, 1))));
  // Micro chunks of 16 frames are encoded independently too.
  auto long_clip = video(32);
  auto joined =
      torch::cat({vae->encode(long_clip.narrow(2, 0, 16)), vae->encode(long_clip.narrow(2, 16, 16))}, 2);
  CHECK(nearly_equal(vae->encode(long_clip), joined));
}

TEST_CASE("MUG-V VAE: posterior mean by default, sampling only with a generator", "[unit]") {
  torch::NoGradGuard no_grad;
  auto vae = tiny_vae();
  auto x = video(9);
  auto mean = vae->encode(x);
  CHECK(torch::equal(mean, vae->encode(x)));

  auto a = at::make_generator<at::CPUGeneratorImpl>(11);
  auto b = at::make_generator<at::CPUGeneratorImpl>(11);
  auto sampled = vae->encode(x, a);
  CHECK(torch::equal(sampled, vae->encode(x, b)));
  CHECK(sizes(sampled) == sizes(mean));
  CHECK_FALSE(torch::allclose(sampled, mean));
}

TEST_CASE("MUG-V VAE: normalize and denormalize use the scale and shift buffers", "[unit]") {
  auto vae = tiny_vae();
  auto z = torch::randn({2, 4, 3, 2, 2});
  CHECK(nearly_equal(vae->denormalize(vae->normalize(z)), z));
  auto at_mean = vae->shift.expand({1, 4, 2, 2, 2});
  CHECK(torch::allclose(vae->normalize(at_mean), torch::zeros({1, 4, 2, 2, 2})));
  CHECK(torch::allclose(vae->denormalize(torch::ones({1, 4, 1, 1, 1})), vae->scale + vae->shift));
}

TEST_CASE("MUG-V VAE: save_module / load_module round-trip bit-exactly", "[unit]") {
  torch::NoGradGuard no_grad;
  test::TempDir dir("mugv-vae");
  auto a = tiny_vae(1);
  {
    // Give the buffers and logvar values of their own, so that loading them is visible.
    a->logvar.fill_(-1.25);
    a->shift.uniform_(-1, 1);
  }
  save_module(*a, dir / "vae.safetensors");
  auto b = tiny_vae(2);
  const LoadReport report = load_module(*b, dir / "vae.safetensors");
  const auto state_a = module_state(*a);
  const auto state_b = module_state(*b);
  CHECK(report.loaded == int64_t(state_a.size()));
  REQUIRE(state_a.size() == state_b.size());
  for (size_t i = 0; i < state_a.size(); ++i) {
    INFO(state_a[i].first);
    CHECK(state_a[i].first == state_b[i].first);
    CHECK(torch::equal(state_a[i].second, state_b[i].second));
  }
  auto z = torch::randn({1, 4, 2, 2, 3});
  CHECK(torch::equal(a->decode(z, 12), b->decode(z, 12)));
}

TEST_CASE("MUG-V VAE: bad inputs name the argument", "[unit]") {
  torch::NoGradGuard no_grad;
  auto vae = tiny_vae();
  auto check = [](Error e, const std::string& subject, const std::string& words) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == subject);
    CHECK_THAT(e.message(), Catch::Contains(words));
  };
  check(expect_error([&] { (void)vae->encode(torch::zeros({3, 8, 16, 16})); }), "video", "[B, 3, T, H, W]");
  check(expect_error([&] {
          (void)vae->encode(torch::zeros({1, 4, 8, 16, 16}));
        }),
        "video", "[1, 4, 8, 16, 16]");
  check(expect_error([&] { (void)vae->encode(torch::zeros({1, 3, 8, 12, 16})); }), "video", "height 12");
  check(expect_error([&] { (void)vae->encode(torch::zeros({1, 3, 8, 16, 20})); }), "video", "width 20");
  check(expect_error([&] { (void)vae->encode(torch::zeros({1, 3, 0, 16, 16})); }), "video", "one frame");
  check(expect_error([&] {
          (void)vae->decode(torch::zeros({1, 5, 2, 2, 2}), 16);
        }),
        "latent", "[1, 5, 2, 2, 2]");
  check(expect_error([&] {
          (void)vae->decode(torch::zeros({1, 4, 2, 2}), 16);
        }),
        "latent", "[B, 4, T', h, w]");
  check(expect_error([&] { (void)vae->decode(torch::zeros({1, 4, 2, 2, 2}), 8); }), "num_frames", "9 to 16");
  check(expect_error([&] { (void)vae->decode(torch::zeros({1, 4, 2, 2, 2}), 0); }), "num_frames", "0 frames");

  MugvVAEConfig c = tiny_config();
  c.temporal_groups = 3;
  check(expect_error([&] { validate(c); }), "mugv_vae.temporal_multipliers", "3 groups");
  c = tiny_config();
  c.micro_frame_size = 12;
  check(expect_error([&] { validate(c); }), "mugv_vae.micro_frame_size", "12");
  c = tiny_config();
  c.decoder_temporal_upsample = {true, true, true};
  check(expect_error([&] { (void)MugvVAE(c); }), "mugv_vae.decoder_temporal_upsample", "16");
  c = tiny_config();
  c.latent_std = {1.0, 1.0};
  check(expect_error([&] { validate(c); }), "mugv_vae.latent_std", "2 values");
}

TEST_CASE("MUG-V VAE: decoding drops leading frames and runs micro chunks on their own", "[unit]") {
  torch::NoGradGuard no_grad;
  auto vae = tiny_vae();
  // Two latents fill one micro chunk of 16 frames; 12 frames are its last 12.
  auto z = torch::randn({1, 4, 2, 2, 3});
  CHECK(nearly_equal(vae->decode(z, 12), vae->decode(z, 16).narrow(2, 4, 12)));

  // Four latents are two micro chunks of two, decoded apart; the frame count trims the last one.
  auto four = torch::randn({1, 4, 4, 2, 3});
  auto first = vae->decode(four.narrow(2, 0, 2), 16);
  CHECK(nearly_equal(vae->decode(four, 32), torch::cat({first, vae->decode(four.narrow(2, 2, 2), 16)}, 2)));
  CHECK(nearly_equal(vae->decode(four, 30), torch::cat({first, vae->decode(four.narrow(2, 2, 2), 14)}, 2)));
}

TEST_CASE("MUG-V VAE: one micro chunk gives what the whole-clip pass gives", "[unit]") {
  torch::NoGradGuard no_grad;
  auto chunked = tiny_vae(5);
  MugvVAEConfig c = tiny_config();
  c.micro_frame_size = 0;
  c.micro_batch_size = 0;
  MugvVAE whole(c);
  {
    auto src = module_state(*chunked);
    auto dst = module_state(*whole);
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  auto x = video(12);
  auto z = chunked->encode(x);
  CHECK(nearly_equal(z, whole->encode(x)));
  CHECK(nearly_equal(chunked->decode(z, 12), whole->decode(z, 12)));
}
