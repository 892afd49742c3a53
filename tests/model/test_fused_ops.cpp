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
    const int64_t calls = fused_norm_rope_calls();
    auto loss = dit->forward(x, t, text, mask, fps, cond, frames).square().mean();
    // q and k of each of the two blocks: the fused form ran where it was on, and only there.
    CHECK(fused_norm_rope_calls() - calls == (fused ? 4 : 0));
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
