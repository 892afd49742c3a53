#include "core/error.h"
#include "core/presets.h"
#include "core/safetensors.h"
#include "model/compute.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/text_encoder.h"
#include "model/vae.h"
#include "model/weights.h"
#include "support/model_fixtures.h"
#include "support/test_support.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <string>

using namespace mugv;
using mugv::test::expect_error;

namespace {

ModelPreset preset(const std::string& name) {
  const std::filesystem::path path = std::filesystem::path(MUGV_MODEL_PRESETS_DIR) / (name + ".toml");
  return model_preset_from_json(load_preset_file(path, "models"), name, path.string());
}

DiTConfig micro_dit() {
  return test::micro_dit_config();
}

VAEConfig micro_vae() {
  VAEConfig c;
  c.latent_channels = 4;
  c.compress_t = 4;
  c.compress_h = 8;
  c.compress_w = 8;
  c.base_channels = 8;
  c.channel_mult = {1, 2, 2};
  return c;
}

TextEncoderConfig micro_t5() {
  TextEncoderConfig c;
  c.kind = TextEncoderKind::t5;
  c.vocab_size = 40;
  c.dim = 16;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 8;
  c.ff_dim = 24;
  c.max_tokens = 12;
  c.relative_buckets = 8;
  c.relative_max_distance = 16;
  return c;
}

// Gives every zero-initialised parameter small random values, so a model is no longer the identity.
void perturb(torch::nn::Module& module, double std = 0.05) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(torch::randn_like(p) * std);
}

struct DiTInputs {
  torch::Tensor x, t, text, mask, fps;
};

DiTInputs dit_inputs(const DiTConfig& c, int64_t batch, int64_t frames, int64_t h, int64_t w) {
  DiTInputs in;
  in.x = torch::randn({batch, c.in_channels, frames, h, w});
  in.t = torch::rand({batch}) * kDiTTimesteps;
  in.text = torch::randn({batch, c.text_tokens, c.text_dim});
  in.mask = torch::ones({batch, c.text_tokens});
  in.mask.narrow(1, c.text_tokens - 2, 2).zero_();
  in.fps = torch::full({batch}, 24.0);
  return in;
}

}  // namespace

TEST_CASE("analytic parameter counts equal the instantiated modules", "[unit][model]") {
  torch::manual_seed(0);
  for (const char* name : {"tiny", "small"}) {
    INFO(name);
    ModelPreset p = preset(name);
    DiT dit(p.dit);
    CHECK(parameter_count(*dit) == dit_parameter_count(p.dit));
    VideoVAE vae(p.vae);
    CHECK(parameter_count(*vae) == vae_parameter_count(p.vae));
    auto text = make_text_encoder(p.text);
    CHECK(parameter_count(*text) == text_encoder_parameter_count(p.text));
  }
  DiTConfig patched = micro_dit();
  patched.patch_t = 2;
  CHECK(parameter_count(*DiT(patched)) == dit_parameter_count(patched));
  VAEConfig mixed = micro_vae();
  mixed.res_blocks = 2;
  mixed.decoder_window = 2;
  mixed.channel_mult = {1, 2, 2, 4};
  CHECK(parameter_count(*VideoVAE(mixed)) == vae_parameter_count(mixed));
  CHECK(parameter_count(*T5Encoder(micro_t5())) == text_encoder_parameter_count(micro_t5()));
}

TEST_CASE("DiT forward: shapes, zero start, conditioning frames", "[unit][model]") {
  torch::manual_seed(1);
  ModelPreset p = preset("tiny");
  DiT dit(p.dit);
  DiTInputs in = dit_inputs(p.dit, 2, 5, 8, 8);
  torch::NoGradGuard no_grad;
  auto v = dit(in.x, in.t, in.text, in.mask, in.fps);
  CHECK(v.sizes() == in.x.sizes());
  CHECK(v.abs().max().item<float>() == 0.0f);  // adaLN-zero: a fresh model predicts zero velocity

  perturb(*dit);
  v = dit(in.x, in.t, in.text, in.mask, in.fps);
  CHECK(v.sizes() == in.x.sizes());
  CHECK(v.abs().max().item<float>() > 0.0f);
  CHECK(torch::isfinite(v).all().item<bool>());

  // An all-false cond_mask is the same as none; marking frames changes exactly those frames' modulation.
  auto none = torch::zeros({2, 5}, torch::kBool);
  CHECK(torch::allclose(dit(in.x, in.t, in.text, in.mask, in.fps, none), v, 1e-5, 1e-6));
  auto cond = none.clone();
  cond.select(1, 0).fill_(true);
  auto vc = dit(in.x, in.t, in.text, in.mask, in.fps, cond);
  CHECK(vc.sizes() == in.x.sizes());
  CHECK_FALSE(torch::allclose(vc, v, 1e-4, 1e-5));
  // Modulation is per sample: conditioning frames of sample 1 leave sample 0 untouched.
  auto cond1 = none.clone();
  cond1[1][2] = true;
  auto v1 = dit(in.x, in.t, in.text, in.mask, in.fps, cond1);
  CHECK(torch::allclose(v1[0], v[0], 1e-5, 1e-6));
  CHECK_FALSE(torch::allclose(v1[1], v[1], 1e-4, 1e-5));
  // Padded text tokens are ignored.
  auto text2 = in.text.clone();
  text2.narrow(1, p.dit.text_tokens - 2, 2).normal_();
  CHECK(torch::allclose(dit(in.x, in.t, text2, in.mask, in.fps), v, 1e-5, 1e-6));
  // Odd sizes are padded to the patch and cropped back.
  auto odd = torch::randn({1, p.dit.in_channels, 3, 7, 5});
  DiTInputs one = dit_inputs(p.dit, 1, 3, 7, 5);
  CHECK(dit(odd, one.t, one.text, one.mask, one.fps).sizes() == odd.sizes());

  Error e = expect_error([&] { (void)dit(torch::randn({2, 3, 5, 8, 8}), in.t, in.text, in.mask, in.fps); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(e.subject() == "x");
}

TEST_CASE("null caption replaces dropped captions", "[unit][model]") {
  torch::manual_seed(2);
  DiT dit(micro_dit());
  DiTInputs in = dit_inputs(micro_dit(), 3, 2, 4, 4);
  auto drop = torch::tensor({false, true, false});
  auto [text, mask] = dit->drop_captions(in.text, in.mask, drop);
  CHECK(torch::equal(text[0], in.text[0]));
  CHECK(torch::equal(text[1], dit->null_caption.detach()));
  CHECK(mask[1].sum().item<float>() == micro_dit().text_tokens);
  CHECK(torch::equal(mask[2], in.mask[2]));
}

TEST_CASE("3D RoPE: q.k depends only on the position difference", "[unit][model]") {
  torch::manual_seed(3);
  const int64_t head_dim = 48;
  auto q = torch::randn({1, 1, 1, head_dim}, torch::kFloat64);
  auto k = torch::randn({1, 1, 1, head_dim}, torch::kFloat64);
  auto score = [&](std::vector<double> pq, std::vector<double> pk) {
    auto angles_q =
        rope_angles(torch::tensor(pq, torch::kFloat64).view({1, 3}), head_dim, 10000.0).to(torch::kFloat64);
    auto angles_k =
        rope_angles(torch::tensor(pk, torch::kFloat64).view({1, 3}), head_dim, 10000.0).to(torch::kFloat64);
    return (apply_rope(q, angles_q) * apply_rope(k, angles_k)).sum().item<double>();
  };
  const double base = score({0, 0, 0}, {2, 3, 1});
  CHECK(score({5, 7, 11}, {7, 10, 12}) == Approx(base).epsilon(1e-6));
  CHECK(score({1, 1, 1}, {3, 4, 2}) == Approx(base).epsilon(1e-6));
  CHECK(std::abs(score({0, 0, 0}, {2, 3, 2}) - base) > 1e-3);  // a different offset differs
  CHECK(std::abs(score({0, 0, 0}, {3, 2, 1}) - base) > 1e-3);  // and the axes are not interchangeable
  // Rotation keeps norms, and head dims beyond 6 * (head_dim / 6) pass through untouched.
  auto angles = rope_angles(torch::tensor({3.0, 4.0, 5.0}).view({1, 3}), 64, 10000.0);
  CHECK(angles.size(1) == 30);
  auto x = torch::randn({1, 1, 1, 64});
  auto r = apply_rope(x, angles);
  CHECK(r.norm().item<float>() == Approx(x.norm().item<float>()).epsilon(1e-5));
  CHECK(torch::equal(r.narrow(-1, 60, 4), x.narrow(-1, 60, 4)));
  CHECK_FALSE(torch::allclose(r.narrow(-1, 0, 60), x.narrow(-1, 0, 60)));

  auto pos = dit_token_positions(2, 3, 4);
  REQUIRE(pos.size(0) == 2 + 2 * 3 * 4);
  CHECK(torch::equal(pos[0], torch::tensor({0.0f, 0.0f, 0.0f})));
  CHECK(torch::equal(pos[1], torch::tensor({0.0f, 0.0f, 1.0f})));                // frames start at 1
  CHECK(torch::equal(pos[2], torch::tensor({0.0f, 1.0f, 1.0f})));                // width varies fastest
  CHECK(torch::equal(pos[pos.size(0) - 1], torch::tensor({2.0f, 3.0f, 3.0f})));  // end token at T + 1
}

TEST_CASE("a fresh DiT block is the identity (adaLN-zero)", "[unit][model]") {
  torch::manual_seed(4);
  DiTConfig c = micro_dit();
  DiT dit(c);
  auto cond = dit->condition(torch::rand({2}) * kDiTTimesteps, torch::full({2}, 24.0));
  auto modulation = dit->t_block->forward(cond).view({2, 1, 6, c.hidden});
  const int64_t tokens = 2 + 2 * 2 * 2;
  auto x = torch::randn({2, tokens, c.hidden});
  BlockContext context{modulation,
                       rope_angles(dit_token_positions(2, 2, 2), c.head_dim, c.rope_theta),
                       torch::randn({2, c.text_tokens, c.hidden}),
                       torch::Tensor(),
                       2,
                       0,
                       {}};
  auto block = dit->blocks->ptr<DiTBlockImpl>(0);
  CHECK(torch::equal(block->forward(x, context), x));
  perturb(*block);
  CHECK_FALSE(torch::allclose(block->forward(x, context), x));
}

TEST_CASE("timestep and fps embedders", "[unit][model]") {
  auto e = timestep_embedding(torch::tensor({0.0f, 500.0f}), 256);
  REQUIRE(e.sizes() == torch::IntArrayRef({2, 256}));
  CHECK(torch::allclose(e[0].narrow(0, 0, 128), torch::ones({128})));     // cos(0)
  CHECK(torch::allclose(e[0].narrow(0, 128, 128), torch::zeros({128})));  // sin(0)
  CHECK(e[1][0].item<float>() == Approx(std::cos(500.0f)).margin(1e-4));
  CHECK(e[1][128].item<float>() == Approx(std::sin(500.0f)).margin(1e-4));
  CHECK(timestep_embedding(torch::tensor({1.0f}), 7).size(1) == 7);

  torch::manual_seed(5);
  DiT dit(micro_dit());
  auto c = dit->condition(torch::tensor({500.0f, 500.0f, 100.0f}), torch::tensor({24.0f, 8.0f, 24.0f}));
  REQUIRE(c.sizes() == torch::IntArrayRef({3, 48}));
  CHECK_FALSE(torch::allclose(c[0], c[1]));  // fps matters
  CHECK_FALSE(torch::allclose(c[0], c[2]));  // t matters
  // The condition is the sum of the two embedders.
  auto sum = dit->t_embedder(torch::tensor({500.0f})) + dit->fps_embedder(torch::tensor({24.0f}));
  CHECK(torch::allclose(c[0], sum[0], 1e-5, 1e-6));
}

TEST_CASE("selective and full recomputation give the same gradients on every block or on some",
          "[unit][model]") {
  torch::manual_seed(6);
  DiT dit(micro_dit());
  perturb(*dit);
  DiTInputs in = dit_inputs(micro_dit(), 2, 2, 4, 4);
  auto grads = [&](Recompute mode) {
    dit->set_recompute(mode);
    dit->zero_grad();
    dit(in.x, in.t, in.text, in.mask, in.fps).pow(2).sum().backward();
    std::vector<torch::Tensor> out;
    for (auto& p : dit->parameters())
      out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    return out;
  };
  auto plain = grads(Recompute::none);
  for (Recompute mode : {Recompute::selective, Recompute::full}) {
    INFO(to_string(mode));
    auto recomputed = grads(mode);
    // Partial: the mode on block 1 only, block 0 keeping its activations.
    dit->set_recompute(mode, {1});
    CHECK(dit->recompute_of(0) == Recompute::none);
    CHECK(dit->recompute_of(1) == mode);
    dit->zero_grad();
    dit(in.x, in.t, in.text, in.mask, in.fps).pow(2).sum().backward();
    std::vector<torch::Tensor> partial;
    for (auto& p : dit->parameters())
      partial.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    REQUIRE(partial.size() == plain.size());
    for (size_t i = 0; i < plain.size(); ++i) CHECK(torch::allclose(plain[i], partial[i], 1e-4, 1e-6));
    REQUIRE(plain.size() == recomputed.size());
    double largest = 0;
    for (size_t i = 0; i < plain.size(); ++i) {
      CHECK(torch::allclose(plain[i], recomputed[i], 1e-4, 1e-6));
      largest = std::max(largest, plain[i].abs().max().item<double>());
    }
    CHECK(largest > 0);
  }
}

TEST_CASE("VAE encode/decode shapes and chunk independence", "[unit][model]") {
  torch::manual_seed(7);
  ModelPreset p = preset("tiny");
  VideoVAE vae(p.vae);
  vae->eval();
  torch::NoGradGuard no_grad;
  auto video17 = torch::rand({1, 3, 17, 32, 32}) * 2 - 1;
  auto [mean, logvar] = vae->encode(video17);
  CHECK(mean.sizes() == torch::IntArrayRef({1, p.vae.latent_channels, 5, 4, 4}));
  CHECK(logvar.sizes() == mean.sizes());
  CHECK(vae->decode(mean, 17).sizes() == video17.sizes());
  CHECK(vae->decode(mean).size(2) == 20);

  auto video16 = torch::rand({1, 3, 16, 32, 32}) * 2 - 1;
  auto [mean16, logvar16] = vae->encode(video16);
  CHECK(mean16.size(2) == 4);
  CHECK(vae->decode(mean16, 16).sizes() == video16.sizes());

  // Frames of chunk 2 (frames 8..11 of 16) do not reach latent 0; latent 2 does change.
  auto changed = video16.clone();
  changed.narrow(2, 8, 4).uniform_(-1, 1);
  auto [mean_changed, unused] = vae->encode(changed);
  CHECK(torch::equal(mean_changed.select(2, 0), mean16.select(2, 0)));
  CHECK(torch::equal(mean_changed.select(2, 1), mean16.select(2, 1)));
  CHECK_FALSE(torch::allclose(mean_changed.select(2, 2), mean16.select(2, 2)));

  // 8x8x8 compression: 17 frames repeat frame 0 to fill the first chunk -> 3 latents.
  VAEConfig eight = micro_vae();
  eight.compress_t = 8;
  VideoVAE vae8(eight);
  CHECK(vae8->encode(torch::zeros({1, 3, 17, 16, 16})).first.size(2) == 3);

  Error e = expect_error([&] { (void)vae->encode(torch::zeros({1, 3, 16, 70, 64})); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(std::string(e.what()).find("height 70 is not a multiple of 8") != std::string::npos);
  e = expect_error([&] { (void)vae->encode(torch::zeros({1, 3, 18, 64, 64})); });
  CHECK(std::string(e.what()).find("frames 18") != std::string::npos);
  e = expect_error([&] { (void)vae->decode(mean16, 15); });
  CHECK(e.code() == ErrorCode::invalid_argument);
}

TEST_CASE("FrameConv3d equals Conv3d, with its fast path on one-frame inputs", "[unit][model]") {
  torch::manual_seed(3);
  namespace F = torch::nn::functional;
  struct Case {
    int64_t kernel, padding;
    std::vector<int64_t> stride;
    int64_t frames;
  };
  // One frame with the 3x3x3 kernel (the 2D path), strided in time, a 1x1x1 kernel, and two frames (Conv3d).
  for (const Case& c : {Case{3, 1, {1, 1, 1}, 1}, Case{3, 1, {2, 2, 2}, 1}, Case{1, 0, {1, 1, 1}, 1},
                        Case{3, 1, {1, 1, 1}, 2}}) {
    FrameConv3d conv(torch::nn::Conv3dOptions(5, 7, c.kernel).stride(c.stride).padding(c.padding));
    auto x = torch::randn({2, 5, c.frames, 6, 6}, torch::requires_grad());
    auto y = conv(x);
    auto reference = F::conv3d(x, conv->weight,
                               F::Conv3dFuncOptions().bias(conv->bias).stride(c.stride).padding(c.padding));
    REQUIRE(y.sizes() == reference.sizes());
    CHECK(torch::allclose(y, reference, 1e-5, 1e-5));
    auto g = torch::randn_like(y);
    auto grads = torch::autograd::grad({y}, {x, conv->weight}, {g});
    auto expected = torch::autograd::grad({reference}, {x, conv->weight}, {g});
    CHECK(torch::allclose(grads[0], expected[0], 1e-5, 1e-5));
    CHECK(torch::allclose(grads[1], expected[1], 1e-4, 1e-5));
  }
}

TEST_CASE("VAE tiled decoding, loss and latent statistics", "[unit][model]") {
  torch::manual_seed(8);
  VideoVAE vae(micro_vae());
  torch::Tensor latent;
  {
    torch::NoGradGuard no_grad;
    latent = torch::randn({1, 4, 2, 6, 5});
    auto whole = vae->decode(latent);
    CHECK(torch::allclose(vae->decode_tiled(latent, 0, 8, 2), whole));  // fits one tile
    auto tiled = vae->decode_tiled(latent, 0, 3, 1);
    CHECK(tiled.sizes() == whole.sizes());
    CHECK(torch::isfinite(tiled).all().item<bool>());
    // Tiles see less context at their borders, but away from the seams they agree with the whole.
    CHECK(torch::allclose(tiled.narrow(3, 0, 8).narrow(4, 0, 8), whole.narrow(3, 0, 8).narrow(4, 0, 8), 1e-4,
                          1e-5) == false);
    CHECK((tiled - whole).abs().mean().item<float>() < whole.abs().mean().item<float>());
  }

  auto video = torch::rand({2, 3, 8, 16, 16}) * 2 - 1;
  VAELoss loss = vae->loss(video);
  CHECK(loss.total.dim() == 0);
  CHECK(torch::isfinite(loss.total).item<bool>());
  CHECK(loss.total.item<float>() >= loss.mse.item<float>() + loss.l1.item<float>());
  loss.total.backward();
  auto grad = vae->encoder->parameters().front().grad();
  REQUIRE(grad.defined());
  CHECK(grad.abs().sum().item<float>() > 0);

  torch::NoGradGuard no_grad;
  auto z = torch::randn({3, 4, 2, 3, 3}) * torch::tensor({1.0, 2.0, 3.0, 4.0}).view({1, 4, 1, 1, 1}) +
           torch::tensor({0.5, -1.0, 2.0, 0.0}).view({1, 4, 1, 1, 1});
  vae->measure_latent_stats({z});
  auto n = vae->normalize(z);
  auto per_channel = n.transpose(0, 1).reshape({4, -1});
  CHECK(torch::allclose(per_channel.mean(1), torch::zeros({4}), 1e-4, 1e-4));
  CHECK(torch::allclose(per_channel.std(1, false), torch::ones({4}), 1e-4, 1e-4));
  CHECK(torch::allclose(vae->denormalize(n), z, 1e-5, 1e-5));
  CHECK(expect_error([&] { vae->set_latent_stats(torch::zeros({4}), torch::zeros({4})); }).code() ==
        ErrorCode::invalid_argument);
}

TEST_CASE("compute precision: auto, explicit and unknown choices", "[unit][model]") {
  CHECK(choose_compute_precision("fp32", torch::kCPU).precision == ComputePrecision::fp32);
  CHECK(choose_compute_precision("bf16", torch::kCPU).precision == ComputePrecision::bf16);
  CHECK(choose_compute_precision("auto", torch::kCUDA).precision == ComputePrecision::bf16);
  const PrecisionChoice cpu = choose_compute_precision("auto", torch::kCPU);
  CHECK(cpu.precision == ComputePrecision::fp32);
  CHECK(cpu.reason.rfind("auto: ", 0) == 0);
  CHECK((cpu.reason.find("--precision bf16 is faster") != std::string::npos) == cpu_has_native_bf16());
  const Error bad = expect_error([] { (void)choose_compute_precision("fp16", torch::kCPU, "--precision"); });
  CHECK(bad.code() == ErrorCode::usage);
  CHECK(std::string(bad.what()).find("--precision") != std::string::npos);
  CHECK(std::string(bad.what()).find("fp16") != std::string::npos);
  for (auto p : {ComputePrecision::fp32, ComputePrecision::bf16})
    CHECK(compute_precision_from_string(to_string(p)) == p);
}

TEST_CASE("compute device: cpu, auto and cuda follow the visible GPUs", "[unit][model]") {
  CHECK(choose_compute_device("cpu", 3) == torch::Device(torch::kCPU));
  const Error bad = expect_error([] { (void)choose_compute_device("gpu", 0, "--device"); });
  CHECK(bad.code() == ErrorCode::usage);
  CHECK(std::string(bad.what()).find("--device") != std::string::npos);
  if (!torch::cuda::is_available()) {
    CHECK(choose_compute_device("auto", 0) == torch::Device(torch::kCPU));
    const Error none = expect_error([] { (void)choose_compute_device("cuda", 0); });
    CHECK(none.code() == ErrorCode::unsupported);
    CHECK(std::string(none.what()).find("no CUDA device") != std::string::npos);
  } else {
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    const auto second_rank_gpu = static_cast<c10::DeviceIndex>(1 % gpus);
    CHECK(choose_compute_device("auto", gpus + 1) == torch::Device(torch::kCUDA, second_rank_gpu));
    CHECK(choose_compute_device("cuda", 0) == torch::Device(torch::kCUDA, 0));
  }
}

TEST_CASE("bf16 autocast scopes: products in bf16 inside, fresh weight casts each scope, fp32 after",
          "[unit][model]") {
  torch::manual_seed(11);
  torch::nn::Linear linear(16, 8);
  auto x = torch::randn({4, 16});
  {
    AutocastScope fp32(ComputePrecision::fp32, torch::kCPU);
    CHECK(linear(x).scalar_type() == torch::kFloat32);
  }
  {
    AutocastScope outer(ComputePrecision::bf16, torch::kCPU);
    CHECK(linear(x).scalar_type() == torch::kBFloat16);
    {
      AutocastScope inner(ComputePrecision::bf16, torch::kCPU);
      CHECK(linear(x).scalar_type() == torch::kBFloat16);
    }
    CHECK(linear(x).scalar_type() == torch::kBFloat16);  // the inner scope restored the outer one
  }
  CHECK(linear(x).scalar_type() == torch::kFloat32);

  // An optimizer step between two scopes changes the weights: the second scope must not reuse the
  // first one's bf16 copy of them.
  torch::Tensor before;
  {
    AutocastScope scope(ComputePrecision::bf16, torch::kCPU);
    before = linear(x).to(torch::kFloat32);
  }
  {
    torch::NoGradGuard no_grad;
    linear->weight.add_(1.0);
  }
  const auto expected = linear(x);
  AutocastScope scope(ComputePrecision::bf16, torch::kCPU);
  const auto after = linear(x).to(torch::kFloat32);
  CHECK(torch::allclose(after, expected, 0.02, 0.05));
  CHECK_FALSE(torch::allclose(after, before, 0.02, 0.05));
}

TEST_CASE("bf16 mixed precision: DiT and VAE match fp32 closely, gradients stay fp32", "[unit][model]") {
  torch::manual_seed(12);
  const DiTConfig c = micro_dit();
  DiT dit(c);
  perturb(*dit);
  DiTInputs in = dit_inputs(c, 2, 3, 4, 4);
  const auto reference = dit(in.x, in.t, in.text, in.mask, in.fps);
  torch::Tensor mixed;
  {
    AutocastScope scope(ComputePrecision::bf16, torch::kCPU);
    mixed = dit(in.x, in.t, in.text, in.mask, in.fps).to(torch::kFloat32);
  }
  INFO("max |bf16 - fp32| " << (mixed - reference).abs().max().item<float>() << " of max "
                            << reference.abs().max().item<float>());
  CHECK((mixed - reference).abs().max().item<float>() < 0.03 * reference.abs().max().item<float>());
  mixed.pow(2).mean().backward();
  for (const auto& p : dit->parameters()) {
    if (!p.grad().defined()) continue;
    CHECK(p.grad().scalar_type() == torch::kFloat32);
    CHECK(torch::isfinite(p.grad()).all().item<bool>());
  }

  VideoVAE vae(micro_vae());
  auto video = torch::rand({1, 3, 8, 16, 16}) * 2 - 1;
  torch::manual_seed(13);
  const VAELoss fp32 = vae->loss(video);
  torch::manual_seed(13);  // the same posterior sample
  AutocastScope scope(ComputePrecision::bf16, torch::kCPU);
  const VAELoss bf16 = vae->loss(video);
  CHECK(bf16.total.scalar_type() == torch::kFloat32);
  CHECK(bf16.mse.item<double>() == Approx(fp32.mse.item<double>()).epsilon(0.05));
  CHECK(bf16.kl.item<double>() == Approx(fp32.kl.item<double>()).epsilon(0.05));
}

TEST_CASE("gelu computes bf16 CPU inputs in fp32 and returns bf16", "[unit][model]") {
  auto x = torch::linspace(-4, 4, 101);
  for (bool tanh_approximation : {true, false}) {
    auto options = torch::nn::functional::GELUFuncOptions().approximate(tanh_approximation ? "tanh" : "none");
    CHECK(torch::equal(gelu(x, tanh_approximation), torch::nn::functional::gelu(x, options)));
    auto low = gelu(x.to(torch::kBFloat16), tanh_approximation);
    CHECK(low.scalar_type() == torch::kBFloat16);
    CHECK(torch::allclose(low.to(torch::kFloat32), torch::nn::functional::gelu(x, options), 0.01, 0.02));
  }
}

TEST_CASE("VAE patchify, pixel shortcut and normalisation choices", "[unit][model]") {
  torch::manual_seed(9);
  torch::NoGradGuard no_grad;
  // Pixel shuffle and its inverse are exact inverses and keep each r x r block in one voxel.
  auto x = torch::randn({2, 3, 4, 8, 12});
  auto folded = PixelShuffle3d(4, /*inverse=*/true)(x);
  CHECK(folded.sizes() == torch::IntArrayRef({2, 48, 4, 2, 3}));
  CHECK(torch::equal(PixelShuffle3d(4, /*inverse=*/false)(folded), x));
  CHECK(torch::equal(folded[0][5][1][1][2],
                     x[0][0][1][1 * 4 + 1][2 * 4 + 1]));  // channel 5 = (dy 1, dx 1) of colour 0

  VAEConfig c = micro_vae();
  c.patch = 4;
  c.pixel_shortcut = true;
  for (VAENorm norm : {VAENorm::group, VAENorm::channel_rms, VAENorm::none}) {
    INFO(to_string(norm));
    c.norm = norm;
    VideoVAE vae(c);
    CHECK(parameter_count(*vae) == vae_parameter_count(c));
    auto video = torch::rand({1, 3, 9, 16, 24}) * 2 - 1;
    auto [mean, logvar] = vae->encode(video);
    CHECK(mean.sizes() == torch::IntArrayRef({1, 4, 3, 2, 3}));
    CHECK(vae->decode(mean, 9).sizes() == video.sizes());
    // The posterior starts narrow, so training is not drowned in sampling noise.
    CHECK(logvar.mean().item<double>() < -3.0);
  }

  // With every weight zero the shortcut alone remains: a block-average codec. Video that is constant
  // over each (4 x 8 x 8) block comes back exactly, and latent channels 0-2 hold the blocks' RGB.
  VideoVAE vae(c);
  for (auto& p : vae->parameters()) p.zero_();
  auto blocks = torch::rand({1, 3, 2, 2, 3}) * 2 - 1;
  auto video = blocks.repeat_interleave(4, 2).repeat_interleave(8, 3).repeat_interleave(8, 4);
  auto mean = vae->encode(video).first;
  CHECK(torch::allclose(mean.narrow(1, 0, 3), blocks, 1e-5, 1e-5));  // a mean of 256 floats
  CHECK(mean.narrow(1, 3, 1).abs().max().item<float>() == 0.0f);
  CHECK(torch::allclose(vae->decode(mean), video, 1e-5, 1e-5));
}

TEST_CASE("text encoders: shapes and padding", "[unit][model]") {
  torch::manual_seed(9);
  ModelPreset p = preset("tiny");
  auto small = make_text_encoder(p.text);
  auto t5 = make_text_encoder(micro_t5());
  torch::NoGradGuard no_grad;
  for (auto& encoder : {small, t5}) {
    const auto& c = encoder->config();
    INFO(to_string(c.kind));
    auto ids = torch::randint(3, c.vocab_size, {2, c.max_tokens}, torch::kInt64);
    auto mask = torch::ones({2, c.max_tokens}, torch::kInt64);
    mask.narrow(1, 5, c.max_tokens - 5).zero_();
    auto out = encoder->forward(ids, mask);
    CHECK(out.sizes() == torch::IntArrayRef({2, c.max_tokens, c.dim}));
    // Changing padded ids leaves the real tokens' features unchanged.
    auto ids2 = ids.clone();
    ids2.narrow(1, 5, c.max_tokens - 5).fill_(0);
    auto out2 = encoder->forward(ids2, mask);
    CHECK(torch::allclose(out.narrow(1, 0, 5), out2.narrow(1, 0, 5), 1e-5, 1e-6));
    CHECK(expect_error([&] {
            (void)encoder->forward(torch::zeros({1, c.max_tokens + 1}, torch::kInt64), {});
          }).code() == ErrorCode::invalid_argument);
  }
  auto buckets = t5_relative_position_bucket(torch::tensor({-200, -3, 0, 3, 200}), 32, 128);
  CHECK(buckets[2].item<int64_t>() == 0);
  CHECK(buckets[3].item<int64_t>() == 16 + 3);
  CHECK(buckets[1].item<int64_t>() == 3);
  CHECK(buckets[4].item<int64_t>() == 31);
  CHECK(buckets[0].item<int64_t>() == 15);
}

TEST_CASE("T5 encoder loads Hugging Face tensor names", "[unit][model]") {
  torch::manual_seed(10);
  test::TempDir dir("mugv-t5");
  TextEncoderConfig c = micro_t5();
  std::map<std::string, torch::Tensor> tensors;
  const int64_t inner = c.heads * c.head_dim;
  tensors["shared.weight"] = torch::randn({c.vocab_size, c.dim});
  for (int i = 0; i < c.layers; ++i) {
    const std::string b = "encoder.block." + std::to_string(i) + ".";
    for (const char* n : {"q", "k", "v"})
      tensors[b + "layer.0.SelfAttention." + n + ".weight"] = torch::randn({inner, c.dim});
    tensors[b + "layer.0.SelfAttention.o.weight"] = torch::randn({c.dim, inner});
    tensors[b + "layer.0.layer_norm.weight"] = torch::rand({c.dim}) + 0.5;
    tensors[b + "layer.1.DenseReluDense.wi_0.weight"] = torch::randn({c.ff_dim, c.dim});
    tensors[b + "layer.1.DenseReluDense.wi_1.weight"] = torch::randn({c.ff_dim, c.dim});
    tensors[b + "layer.1.DenseReluDense.wo.weight"] = torch::randn({c.dim, c.ff_dim});
    tensors[b + "layer.1.layer_norm.weight"] = torch::rand({c.dim}) + 0.5;
  }
  tensors["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] =
      torch::randn({c.relative_buckets, c.heads});
  tensors["encoder.final_layer_norm.weight"] = torch::rand({c.dim}) + 0.5;
  tensors["decoder.final_layer_norm.weight"] = torch::ones({c.dim});  // a full T5 file has a decoder too

  auto write = [&](const std::map<std::string, torch::Tensor>& set, const std::filesystem::path& path) {
    SafetensorsWriter writer;
    for (const auto& [name, t] : set) {
      auto bf = t.to(torch::kBFloat16).contiguous();
      writer.add(name, DType::bf16, bf.sizes().vec(), bf.data_ptr(), bf.numel() * bf.element_size());
    }
    writer.write(path);
  };
  write(tensors, dir / "t5.safetensors");

  T5Encoder t5(c);
  LoadReport report = load_t5_encoder(*t5, dir / "t5.safetensors");
  CHECK(report.loaded == static_cast<int64_t>(tensors.size()) - 1);
  CHECK(report.ignored == std::vector<std::string>{"decoder.final_layer_norm.weight"});
  auto named = t5->named_parameters();
  CHECK(torch::allclose(
      named["block.1.layer.1.DenseReluDense.wo.weight"],
      tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"].to(torch::kBFloat16).to(torch::kFloat32)));
  CHECK(torch::allclose(named["embed_tokens.weight"],
                        tensors["shared.weight"].to(torch::kBFloat16).to(torch::kFloat32)));
  {
    torch::NoGradGuard no_grad;
    auto out = t5->forward(torch::randint(0, c.vocab_size, {1, 7}, torch::kInt64), {});
    CHECK(torch::isfinite(out).all().item<bool>());
  }

  auto missing = tensors;
  missing.erase("encoder.block.1.layer.0.SelfAttention.k.weight");
  write(missing, dir / "missing.safetensors");
  Error e = expect_error([&] { (void)load_t5_encoder(*t5, dir / "missing.safetensors"); });
  CHECK(e.code() == ErrorCode::not_found);
  CHECK(std::string(e.what()).find("encoder.block.1.layer.0.SelfAttention.k.weight") != std::string::npos);
}

TEST_CASE("weights save/load round trip and mismatch errors", "[unit][model]") {
  torch::manual_seed(11);
  test::TempDir dir("mugv-weights");
  DiT a(micro_dit());
  perturb(*a);
  save_module(*a, dir / "a.safetensors", {{"preset", "micro"}});
  SafetensorsFile file = SafetensorsFile::open(dir / "a.safetensors");
  CHECK(file.metadata().at("preset") == "micro");
  CHECK(file.contains("blocks.1.attn.qkv.weight"));
  CHECK(file.contains("null_caption"));

  DiT b(micro_dit());
  LoadReport report = load_module(*b, dir / "a.safetensors");
  CHECK(report.loaded == static_cast<int64_t>(file.size()));
  DiTInputs in = dit_inputs(micro_dit(), 1, 2, 4, 4);
  {
    torch::NoGradGuard no_grad;
    CHECK(torch::equal(a(in.x, in.t, in.text, in.mask, in.fps), b(in.x, in.t, in.text, in.mask, in.fps)));
  }

  // Buffers travel too (the VAE's latent statistics).
  VideoVAE vae(micro_vae());
  vae->set_latent_stats(torch::tensor({1.0, 2.0, 3.0, 4.0}), torch::tensor({0.5, 0.5, 2.0, 2.0}));
  save_module(*vae, dir / "vae.safetensors");
  VideoVAE vae2(micro_vae());
  (void)load_module(*vae2, dir / "vae.safetensors");
  CHECK(torch::equal(vae2->latent_mean, vae->latent_mean));

  DiTConfig wider = micro_dit();
  wider.hidden = 96;
  wider.head_dim = 48;
  DiT c(wider);
  auto before = c->start_token.clone();
  Error e = expect_error([&] { (void)load_module(*c, dir / "a.safetensors"); });
  CHECK(e.code() == ErrorCode::invalid_argument);
  CHECK(e.subject() == (dir / "a.safetensors").string());
  CHECK(std::string(e.what()).find("the model expects") != std::string::npos);
  CHECK(torch::equal(c->start_token, before));  // nothing copied

  DiTConfig deeper = micro_dit();
  deeper.depth = 3;
  DiT d(deeper);
  e = expect_error([&] { (void)load_module(*d, dir / "a.safetensors"); });
  CHECK(e.code() == ErrorCode::not_found);
  CHECK(std::string(e.what()).find("blocks.2.") != std::string::npos);

  DiTConfig shallower = micro_dit();
  shallower.depth = 1;
  DiT s(shallower);
  e = expect_error([&] { (void)load_module(*s, dir / "a.safetensors"); });
  CHECK(e.code() == ErrorCode::format);
  CHECK(std::string(e.what()).find("blocks.1.") != std::string::npos);
  CHECK(load_module(*s, dir / "a.safetensors", UnexpectedTensors::ignore).ignored.size() > 0);
}
