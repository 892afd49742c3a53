// The fused operations (model/fused_ops.h) against the reference compositions they replace, on the CPU: the
// same numbers in fp32 and float64, within bf16's rounding in bf16, the same gradients, and the inputs they
// leave to the reference.
#include "model/dit.h"
#include "model/fused_ops.h"
#include "support/model_fixtures.h"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>

using namespace mugv;

namespace {

// Restores the process-wide switch when a test ends.
struct FusedSwitch {
  explicit FusedSwitch(bool enabled) : previous(fused_kernels_enabled()) { set_fused_kernels(enabled); }
  ~FusedSwitch() { set_fused_kernels(previous); }
  bool previous;
};

double largest_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

torch::Tensor random_angles(std::vector<int64_t> leading, int64_t pairs) {
  leading.push_back(pairs);
  return torch::rand(leading) * 40.0;  // positions up to tens of steps times frequencies up to 1
}

// Output and input gradient of `rope` for x (as a fresh leaf) and the upstream gradient `grad`.
template <class Rope>
std::pair<torch::Tensor, torch::Tensor> forward_backward(Rope rope, const torch::Tensor& x,
                                                         const torch::Tensor& grad) {
  auto input = x.detach().requires_grad_(true);
  auto y = rope(input);
  y.backward(grad);
  return {y.detach(), input.grad()};
}

}  // namespace

TEST_CASE("fused RoPE equals the reference forward and backward in fp32", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(21);
  struct Case {
    const char* what;
    torch::Tensor x, angles;
  };
  const std::vector<Case> cases = {
      {"shared angles, every pair rotated", torch::randn({2, 3, 7, 12}), random_angles({7}, 6)},
      {"shared angles, trailing pairs passed through", torch::randn({2, 3, 7, 14}), random_angles({7}, 6)},
      {"per-sample angles", torch::randn({2, 3, 7, 12}), random_angles({2, 7}, 6)},
      {"the attention's strided layout", torch::randn({2, 7, 3, 12}).transpose(1, 2),
       random_angles({2, 7}, 6)},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    REQUIRE(fused_rope_applies(c.x, c.angles));
    const auto grad = torch::randn({c.x.size(0), c.x.size(1), c.x.size(2), c.x.size(3)});
    const auto [y, g] =
        forward_backward([&](const torch::Tensor& v) { return fused_rope(v, c.angles); }, c.x, grad);
    const auto [y_ref, g_ref] = forward_backward(
        [&](const torch::Tensor& v) { return apply_rope_reference(v, c.angles); }, c.x, grad);
    CHECK(y.is_contiguous());
    CHECK(y.sizes() == y_ref.sizes());
    CHECK(largest_diff(y, y_ref) <= 1e-6);
    CHECK(largest_diff(g, g_ref) <= 1e-6);
    // The rotation keeps each pair's length, so the whole row's norm.
    CHECK(y.norm().item<double>() == Approx(c.x.norm().item<double>()).epsilon(1e-5));
  }
}

TEST_CASE("fused RoPE in float64 and bf16", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(22);
  const auto angles = random_angles({2, 9}, 12);
  const auto x64 = torch::randn({2, 4, 9, 24}, torch::kFloat64);
  // float64 x with float32 angles: the loop computes in double from the float tables.
  REQUIRE(fused_rope_applies(x64, angles));
  CHECK(largest_diff(fused_rope(x64, angles), apply_rope_reference(x64, angles)) <= 1e-12);

  // bf16: both forms against the float64 rotation of the same bf16 values. The fused form rounds once, so
  // its error is within bf16's unit roundoff (2^-8) of each output; the reference rounds cos, sin and each
  // product as well.
  const auto x = x64.to(torch::kBFloat16);
  const auto grad = torch::randn({2, 4, 9, 24}).to(torch::kBFloat16);
  const auto [y, g] =
      forward_backward([&](const torch::Tensor& v) { return fused_rope(v, angles); }, x, grad);
  const auto [y_ref, g_ref] =
      forward_backward([&](const torch::Tensor& v) { return apply_rope_reference(v, angles); }, x, grad);
  CHECK(y.scalar_type() == torch::kBFloat16);
  CHECK(g.scalar_type() == torch::kBFloat16);
  const auto angles64 = angles.to(torch::kFloat64);
  const auto y_true = apply_rope_reference(x.to(torch::kFloat64), angles64);
  const auto g_true = apply_rope_reference(grad.to(torch::kFloat64), -angles64);
  const double u = std::ldexp(1.0, -8);
  CHECK(((y.to(torch::kFloat64) - y_true).abs() <= u * y_true.abs() + 1e-12).all().item<bool>());
  CHECK(((g.to(torch::kFloat64) - g_true).abs() <= u * g_true.abs() + 1e-12).all().item<bool>());
  CHECK(largest_diff(y, y_true) <= largest_diff(y_ref, y_true));
}

TEST_CASE("inputs the fused RoPE leaves to the reference", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(23);
  const auto x = torch::randn({1, 2, 5, 12});
  const auto angles = random_angles({5}, 6);
  CHECK(fused_rope_applies(x, angles));
  CHECK_FALSE(fused_rope_applies(x, angles.to(torch::kFloat64)));           // angles not float32
  CHECK_FALSE(fused_rope_applies(x, angles.clone().requires_grad_(true)));  // a gradient for the angles
  CHECK_FALSE(fused_rope_applies(x.view({2, 5, 12}), angles));              // not [B, H, N, hd]
  CHECK_FALSE(fused_rope_applies(torch::randn({1, 2, 5, 11}), random_angles({5}, 5)));  // odd head width
  CHECK_FALSE(fused_rope_applies(x, random_angles({6}, 6)));                            // another token count
  CHECK_FALSE(fused_rope_applies(x, random_angles({5}, 7)));     // more pairs than the head has
  CHECK_FALSE(fused_rope_applies(x, random_angles({3, 5}, 6)));  // another batch
  CHECK_FALSE(fused_rope_applies(x.to(torch::kInt32), angles));
  CHECK_THROWS(fused_rope(x, angles.to(torch::kFloat64)));
  // apply_rope takes the fused form where it applies, the reference for the rest, and the reference for
  // everything when switched off.
  int64_t calls = fused_rope_calls();
  CHECK(torch::equal(apply_rope(x, angles), fused_rope(x, angles)));
  CHECK(fused_rope_calls() - calls == 2);
  calls = fused_rope_calls();
  CHECK(largest_diff(apply_rope(x, angles.to(torch::kFloat64)), apply_rope_reference(x, angles)) <= 1e-6);
  CHECK(fused_rope_calls() == calls);
  set_fused_kernels(false);
  CHECK_FALSE(fused_rope_applies(x, angles));
  CHECK(torch::equal(apply_rope(x, angles), apply_rope_reference(x, angles)));
  CHECK(fused_rope_calls() == calls);
}

// The unfused query / key path of the attention: RMSNorm (with its weight), the multiplier, RoPE.
torch::Tensor unfused_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, double multiplier,
                                const torch::Tensor& angles) {
  auto xf = x.to(torch::kFloat64);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-6);
  // The angles' float cos / sin tables, as the fused form uses them, in float64 arithmetic.
  return apply_rope_reference(weight.to(torch::kFloat64) * normed * multiplier, angles);
}

TEST_CASE("fused RMSNorm and RoPE equal the three steps forward and backward", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(25);
  RMSNorm norm(12);
  {
    torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  const auto x = (torch::randn({2, 7, 3, 12}) * 3.0).transpose(1, 2);  // the attention's strided layout
  const auto angles = random_angles({2, 7}, 5);                        // per sample; one pair passed through
  const auto grad = torch::randn({2, 3, 7, 12});
  REQUIRE(fused_norm_rope_applies(x, norm->weight, angles));
  for (const double multiplier : {1.0, 0.7}) {
    INFO("multiplier " << multiplier);
    norm->weight.mutable_grad() = torch::Tensor();
    const auto [y, gx] = forward_backward(
        [&](const torch::Tensor& v) { return fused_norm_rope(v, norm->weight, 1e-6, multiplier, angles); }, x,
        grad);
    const auto gw = norm->weight.grad().clone();
    norm->weight.mutable_grad() = torch::Tensor();
    const auto [y_ref, gx_ref] = forward_backward(
        [&](const torch::Tensor& v) { return apply_rope_reference(norm(v) * multiplier, angles); }, x, grad);
    const auto gw_ref = norm->weight.grad().clone();
    CHECK(y.is_contiguous());
    CHECK(largest_diff(y, y_ref) <= 1e-5);
    CHECK(largest_diff(gx, gx_ref) <= 1e-5);
    CHECK(largest_diff(gw, gw_ref) <= 1e-4);
    // float64: the row functions in double against the formula in double.
    const auto x64 = x.to(torch::kFloat64);
    CHECK(largest_diff(fused_norm_rope(x64, norm->weight, 1e-6, multiplier, angles),
                       unfused_norm_rope(x64, norm->weight.detach(), multiplier, angles)) <= 1e-12);
  }
  // A frozen weight (LoRA, a frozen base) gets no gradient; x's is unchanged.
  norm->weight.mutable_grad() = torch::Tensor();
  norm->weight.set_requires_grad(false);
  const auto [y, gx] = forward_backward(
      [&](const torch::Tensor& v) { return fused_norm_rope(v, norm->weight, 1e-6, 1.0, angles); }, x, grad);
  CHECK_FALSE(norm->weight.grad().defined());
  const auto [y_ref, gx_ref] = forward_backward(
      [&](const torch::Tensor& v) { return apply_rope_reference(norm(v), angles); }, x, grad);
  CHECK(largest_diff(gx, gx_ref) <= 1e-5);
  CHECK_FALSE(fused_norm_rope_applies(x, norm->weight.to(torch::kFloat64), angles));
  CHECK_FALSE(fused_norm_rope_applies(x, torch::ones({10}), angles));
}

TEST_CASE("fused RMSNorm and RoPE in bf16 round once", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(26);
  const auto weight = torch::rand({24}) + 0.5;
  const auto x = (torch::randn({2, 4, 9, 24}) * 2.0).to(torch::kBFloat16);
  const auto grad = torch::randn({2, 4, 9, 24}).to(torch::kBFloat16);
  const auto angles = random_angles({9}, 12);
  const auto [y, gx] = forward_backward(
      [&](const torch::Tensor& v) { return fused_norm_rope(v, weight, 1e-6, 0.9, angles); }, x, grad);
  CHECK(y.scalar_type() == torch::kBFloat16);
  CHECK(gx.scalar_type() == torch::kBFloat16);
  // The truth in float64 from the same bf16 values: forward and input gradient via autograd.
  auto x64 = x.to(torch::kFloat64).requires_grad_(true);
  auto y_true = unfused_norm_rope(x64, weight, 0.9, angles);
  y_true.backward(grad.to(torch::kFloat64));
  const auto g_true = x64.grad();
  // Arithmetic in float, then one rounding to bf16: within its unit roundoff 2^-8 of each value, plus the
  // float arithmetic's own error (1e-5 of the largest value covers it with room).
  const double u = std::ldexp(1.0, -8);
  auto within = [&](const torch::Tensor& got, const torch::Tensor& truth) {
    const auto t = truth.detach();
    return ((got.to(torch::kFloat64) - t).abs() <= u * t.abs() + 1e-5 * t.abs().max()).all().item<bool>();
  };
  CHECK(within(y, y_true));
  CHECK(within(gx, g_true));
}

TEST_CASE("a DiT trains the same with and without the fused operations", "[unit][model][fused]") {
  torch::manual_seed(24);
  DiT dit(test::micro_dit_config());
  const auto x = torch::randn({2, 4, 3, 4, 4});
  const auto t = torch::tensor({300.0f, 800.0f});
  const auto text = torch::randn({2, 6, 16});
  const auto mask = torch::ones({2, 6});
  const auto fps = torch::full({2}, 24.0);
  const auto cond = torch::tensor({true, false, false}).view({1, 3}).expand({2, 3}).contiguous();
  const auto frames = torch::tensor({0, 1, 5, 9, 10}).view({1, 5}).expand({2, 5}).contiguous();
  auto loss_and_grads = [&](bool fused) {
    const FusedSwitch with(fused);
    dit->zero_grad();
    const int64_t calls = fused_norm_rope_calls(), modulate_calls = fused_norm_modulate_calls(),
                  residual_calls = fused_gated_residual_calls();
    auto loss = dit->forward(x, t, text, mask, fps, cond, frames).square().mean();
    // q and k, the attention's and the MLP's inputs and their gated outputs, of each of the two blocks: the
    // fused forms ran where they were on, and only there.
    CHECK(fused_norm_rope_calls() - calls == (fused ? 4 : 0));
    CHECK(fused_norm_modulate_calls() - modulate_calls == (fused ? 4 : 0));
    CHECK(fused_gated_residual_calls() - residual_calls == (fused ? 4 : 0));
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : dit->parameters())
      if (p.grad().defined()) grads.push_back(p.grad().clone());
    return std::pair{loss.item<double>(), grads};
  };
  // The adaLN-zero start has zero gates, so no gradient reaches the attention: give the blocks weights.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : dit->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  const auto [loss_fused, grads_fused] = loss_and_grads(true);
  const auto [loss_ref, grads_ref] = loss_and_grads(false);
  CHECK(loss_fused == Approx(loss_ref).epsilon(1e-6));
  REQUIRE(grads_fused.size() == grads_ref.size());
  for (size_t i = 0; i < grads_fused.size(); ++i) {
    INFO("parameter " << i);
    CHECK(largest_diff(grads_fused[i], grads_ref[i]) <= 1e-5 * (1 + grads_ref[i].abs().max().item<double>()));
  }
}

namespace {

// The modulation group of each token of a sequence of `total` with `frames` frames (start token, frames, end
// token), written out plainly: the reference the fused operation's own group walk is checked against.
torch::Tensor token_groups(int64_t frames, int64_t total) {
  std::vector<int64_t> groups(size_t(total), 0);
  const int64_t per_frame = (total - 2) / frames;
  for (int64_t t = 1; t + 1 < total; ++t) groups[size_t(t)] = 1 + (t - 1) / per_frame;
  groups.back() = frames + 1;
  return torch::tensor(groups, torch::kLong);
}

// LayerNorm (no affine) · (1 + scale) + shift with every token's rows gathered: no group walk at all.
torch::Tensor unfused_norm_modulate(const torch::Tensor& x, const torch::Tensor& scale,
                                    const torch::Tensor& shift, const TokenLayout& layout) {
  auto per_token = [&](const torch::Tensor& m) {
    if (m.size(1) == 1) return m;
    return m.index_select(1, token_groups(layout.frames, layout.total).narrow(0, layout.offset, x.size(1)));
  };
  const auto normed = at::layer_norm(x, {x.size(2)}, {}, {}, 1e-6);
  return normed * (1 + per_token(scale)) + per_token(shift);
}

// Token layouts of the modulation groups: 3 frames of 4 tokens between the start and end tokens, 14 in all,
// whole or sliced as sequence / context parallel ranks hold them.
struct LayoutCase {
  const char* what;
  int64_t groups, tokens;
  TokenLayout layout;
};
std::vector<LayoutCase> layout_cases() {
  return {
      {"one group for every token", 1, 14, {3, 0, 14}},
      {"per-frame groups, the whole sequence", 5, 14, {3, 0, 14}},
      {"a slice from the start token into a frame", 5, 6, {3, 0, 14}},
      {"a slice inside the frames", 5, 7, {3, 3, 14}},
      {"a slice ending on the end token", 5, 5, {3, 9, 14}},
      {"a one-token slice", 5, 1, {3, 13, 14}},
  };
}

struct ModulateGrads {
  torch::Tensor y, x, scale, shift;
};
template <class Op>
ModulateGrads modulate_forward_backward(Op op, const torch::Tensor& x, const torch::Tensor& modulation,
                                        const torch::Tensor& grad) {
  auto input = x.detach().requires_grad_(true);
  auto m = modulation.detach().requires_grad_(true);  // [B, G, 2, d]: scale, shift
  auto y = op(input, m.select(2, 0), m.select(2, 1));
  y.backward(grad.to(y.scalar_type()));
  return {y.detach(), input.grad(), m.grad().select(2, 0), m.grad().select(2, 1)};
}

}  // namespace

TEST_CASE("fused LayerNorm + modulation equals the unfused ops for every token layout",
          "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(31);
  for (const auto& c : layout_cases()) {
    INFO(c.what);
    const int64_t batch = 2, dim = 24;
    const auto x = torch::randn({batch, c.tokens, dim}) * 3.0 + 1.0;
    const auto modulation = torch::randn({batch, c.groups, 2, dim}) * 0.5;
    const auto grad = torch::randn({batch, c.tokens, dim});
    REQUIRE(fused_norm_modulate_applies(x, modulation.select(2, 0), modulation.select(2, 1), c.layout));
    for (const auto type : {torch::kFloat32, torch::kFloat64}) {
      const auto fused = modulate_forward_backward(
          [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& b) {
            return fused_norm_modulate(v, s, b, 1e-6, c.layout);
          },
          x.to(type), modulation.to(type), grad);
      const auto reference = modulate_forward_backward(
          [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& b) {
            return unfused_norm_modulate(v, s, b, c.layout);
          },
          x.to(type), modulation.to(type), grad);
      // The kernel reads the modulation as float: float64 agrees to float's rounding of it.
      const double bound = type == torch::kFloat32 ? 1e-5 : 1e-6;
      auto close = [&](const torch::Tensor& a, const torch::Tensor& b) {
        return largest_diff(a, b) <= bound * (1 + b.abs().max().item<double>());
      };
      CHECK(fused.y.scalar_type() == type);
      CHECK(close(fused.y, reference.y));
      // The DiT's own unfused path (its group walk) too.
      CHECK(close(norm_modulate_reference(x.to(type), modulation.to(type).select(2, 0),
                                          modulation.to(type).select(2, 1), 1e-6, c.layout),
                  reference.y));
      CHECK(close(fused.x, reference.x));
      CHECK(close(fused.scale, reference.scale));
      CHECK(close(fused.shift, reference.shift));
      CHECK(fused.scale.scalar_type() == type);
    }
  }
}

TEST_CASE("fused LayerNorm + modulation in bf16 rounds once", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(32);
  const TokenLayout layout{3, 0, 14};
  const auto x = (torch::randn({2, 14, 64}) * 2.0).to(torch::kBFloat16);
  const auto modulation =
      torch::randn({2, 5, 2, 64}) * 0.5;  // float32, as the blocks' modulation under autocast
  const auto grad = torch::randn({2, 14, 64}).to(torch::kBFloat16);
  const auto fused = modulate_forward_backward(
      [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& b) {
        return fused_norm_modulate(v, s, b, 1e-6, layout);
      },
      x, modulation, grad);
  const auto truth = modulate_forward_backward(
      [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& b) {
        return unfused_norm_modulate(v, s, b, layout);
      },
      x.to(torch::kFloat64), modulation.to(torch::kFloat64), grad.to(torch::kFloat64));
  CHECK(fused.y.scalar_type() == torch::kBFloat16);
  CHECK(fused.scale.scalar_type() == torch::kFloat32);
  const double u = std::ldexp(1.0, -8);
  auto within = [&](const torch::Tensor& got, const torch::Tensor& t) {
    return ((got.to(torch::kFloat64) - t).abs() <= u * t.abs() + 1e-5 * t.abs().max()).all().item<bool>();
  };
  CHECK(within(fused.y, truth.y));
  CHECK(within(fused.x, truth.x));
  // The modulation's gradients are sums over tokens, kept in float: within float's summation error.
  CHECK(largest_diff(fused.scale, truth.scale) <= 1e-4 * (1 + truth.scale.abs().max().item<double>()));
  CHECK(largest_diff(fused.shift, truth.shift) <= 1e-4 * (1 + truth.shift.abs().max().item<double>()));
}

TEST_CASE("fused LayerNorm + modulation leaves what it does not cover to the unfused ops",
          "[unit][model][fused]") {
  const FusedSwitch on(true);
  const auto x = torch::randn({2, 14, 8});
  const auto one = torch::randn({2, 1, 8}), per_frame = torch::randn({2, 5, 8});
  const TokenLayout layout{3, 0, 14};
  CHECK(fused_norm_modulate_applies(x, one, one, layout));
  CHECK(fused_norm_modulate_applies(x, per_frame, per_frame, layout));
  CHECK_FALSE(fused_norm_modulate_applies(x, per_frame, one, layout));  // groups differ
  CHECK_FALSE(fused_norm_modulate_applies(x, torch::randn({2, 4, 8}), torch::randn({2, 4, 8}), layout));
  CHECK_FALSE(fused_norm_modulate_applies(x, per_frame, per_frame, {3, 0, 15}));      // frames uneven
  CHECK_FALSE(fused_norm_modulate_applies(x, per_frame, per_frame, {3, 1, 14}));      // past the end
  CHECK_FALSE(fused_norm_modulate_applies(x, torch::randn({1, 1, 8}), one, layout));  // another batch
  CHECK_FALSE(fused_norm_modulate_applies(x, torch::randn({2, 1, 9}), one, layout));  // another width
  CHECK_FALSE(fused_norm_modulate_applies(x.view({2, 14, 2, 4}), one, one, layout));  // not [B, n, d]
  CHECK_FALSE(fused_norm_modulate_applies(x.to(torch::kInt32), one, one, layout));
  CHECK_THROWS(fused_norm_modulate(x, per_frame, one, 1e-6, layout));
  const FusedSwitch off(false);
  CHECK_FALSE(fused_norm_modulate_applies(x, one, one, layout));
}

TEST_CASE("fused LayerNorm + modulation writes the autocast type from a float32 x", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(33);
  const TokenLayout layout{3, 0, 14};
  const auto x = torch::randn({2, 14, 64}) * 2.0;
  const auto modulation = torch::randn({2, 5, 2, 64}) * 0.5;
  const auto grad =
      torch::randn({2, 14, 64}).to(torch::kBFloat16);  // what the bf16 matrix product sends back
  auto op = [&](std::optional<torch::ScalarType> out_type) {
    return [&, out_type](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& b) {
      return fused_norm_modulate(v, s, b, 1e-6, layout, out_type);
    };
  };
  REQUIRE(fused_norm_modulate_applies(x, modulation.select(2, 0), modulation.select(2, 1), layout,
                                      torch::kBFloat16));
  const auto narrow = modulate_forward_backward(op(torch::kBFloat16), x, modulation, grad);
  const auto wide = modulate_forward_backward(op(std::nullopt), x, modulation, grad.to(torch::kFloat32));
  CHECK(narrow.y.scalar_type() == torch::kBFloat16);
  CHECK(narrow.x.scalar_type() == torch::kFloat32);
  // One rounding from float to bf16: the float result rounded, at most one bf16 step apart.
  const auto steps = (narrow.y.to(torch::kFloat64) - wide.y.to(torch::kBFloat16).to(torch::kFloat64)).abs() /
                     (wide.y.abs().to(torch::kFloat64) * std::ldexp(1.0, -7) + 1e-30);
  CHECK(steps.max().item<double>() <= 1.0);
  CHECK(largest_diff(narrow.x, wide.x) <= 1e-5 * (1 + wide.x.abs().max().item<double>()));
  CHECK(largest_diff(narrow.scale, wide.scale) <= 1e-5 * (1 + wide.scale.abs().max().item<double>()));
  CHECK(largest_diff(narrow.shift, wide.shift) <= 1e-5 * (1 + wide.shift.abs().max().item<double>()));
  // Only float32 narrows, and only to a 16-bit type.
  const auto m16 = modulation.to(torch::kBFloat16);
  CHECK_FALSE(fused_norm_modulate_applies(x.to(torch::kBFloat16), m16.select(2, 0), m16.select(2, 1), layout,
                                          torch::kFloat32));
  CHECK_FALSE(fused_norm_modulate_applies(x, modulation.select(2, 0), modulation.select(2, 1), layout,
                                          torch::kFloat64));
}

namespace {

// x, h and the gate's gradients of `op` (x + h·gate) for fresh leaves of x, h and gate and the upstream grad.
template <class Op>
std::vector<torch::Tensor> residual_forward_backward(Op op, const torch::Tensor& x, const torch::Tensor& h,
                                                     const torch::Tensor& gate, const torch::Tensor& grad) {
  std::vector<torch::Tensor> leaves{x.detach().requires_grad_(true), h.detach().requires_grad_(true),
                                    gate.detach().requires_grad_(true)};
  auto out = op(leaves[0], leaves[1], leaves[2]);
  out.backward(grad.to(out.scalar_type()));
  return {out.detach(), leaves[0].grad(), leaves[1].grad(), leaves[2].grad()};
}

}  // namespace

TEST_CASE("fused gated residual equals the unfused ops for every token layout", "[unit][model][fused]") {
  const FusedSwitch on(true);
  torch::manual_seed(34);
  auto fused = [](const TokenLayout& layout) {
    return [layout](const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& g) {
      return fused_gated_residual(x, h, g, layout);
    };
  };
  auto reference = [](const TokenLayout& layout) {
    return [layout](const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& g) {
      return gated_residual_reference(x, h, g, layout);
    };
  };
  for (const auto& c : layout_cases()) {
    INFO(c.what);
    const auto x = torch::randn({2, c.tokens, 24}), h = torch::randn({2, c.tokens, 24});
    const auto gate = torch::randn({2, c.groups, 24}), grad = torch::randn({2, c.tokens, 24});
    REQUIRE(fused_gated_residual_applies(x, h, gate, c.layout));
    for (const auto type : {torch::kFloat32, torch::kFloat64}) {
      const auto got =
          residual_forward_backward(fused(c.layout), x.to(type), h.to(type), gate.to(type), grad);
      const auto want =
          residual_forward_backward(reference(c.layout), x.to(type), h.to(type), gate.to(type), grad);
      // The kernel reads the gate as float: float64 agrees to float's rounding of it.
      const double bound = type == torch::kFloat32 ? 1e-5 : 1e-6;
      for (size_t i = 0; i < got.size(); ++i) {
        INFO("output, then the gradients of x, h and the gate: " << i);
        CHECK(got[i].scalar_type() == type);
        CHECK(largest_diff(got[i], want[i]) <= bound * (1 + want[i].abs().max().item<double>()));
      }
    }
  }
  // Under autocast: a float32 residual stream, a bf16 sublayer output, a float32 gate. The sum stays float32
  // and h's gradient is bf16, as autograd casts it for the unfused product.
  const TokenLayout layout{3, 0, 14};
  const auto x = torch::randn({2, 14, 32}), gate = torch::randn({2, 5, 32}), grad = torch::randn({2, 14, 32});
  const auto h = torch::randn({2, 14, 32}).to(torch::kBFloat16);
  REQUIRE(fused_gated_residual_applies(x, h, gate, layout));
  const auto got = residual_forward_backward(fused(layout), x, h, gate, grad);
  const auto want = residual_forward_backward(reference(layout), x, h, gate, grad);
  CHECK(got[0].scalar_type() == torch::kFloat32);
  CHECK(got[2].scalar_type() == torch::kBFloat16);
  CHECK(largest_diff(got[0], want[0]) <= 1e-5 * (1 + want[0].abs().max().item<double>()));
  CHECK(torch::equal(got[1], want[1]));  // dL/dx is the incoming gradient
  CHECK(torch::equal(got[2], want[2]));  // float products rounded once to bf16 either way
  CHECK(largest_diff(got[3], want[3]) <= 1e-5 * (1 + want[3].abs().max().item<double>()));
  // What it leaves to the unfused ops: another shape, a float64 h against a float32 x, a bf16 x with a
  // float32 h.
  CHECK_FALSE(fused_gated_residual_applies(x, h.narrow(1, 0, 13), gate, layout));
  CHECK_FALSE(fused_gated_residual_applies(x, h.to(torch::kFloat64), gate, layout));
  CHECK_FALSE(fused_gated_residual_applies(x.to(torch::kBFloat16), h.to(torch::kFloat32), gate, layout));
  CHECK_THROWS(fused_gated_residual(x, h.narrow(1, 0, 13), gate, layout));
}
