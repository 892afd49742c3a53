#include "train/flow.h"

#include "core/error.h"
#include "core/hash.h"
#include "model/timestep_shift.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace mugv {

uint64_t sample_seed(uint64_t seed, int64_t step, int64_t sample) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(step)) ^
                    static_cast<uint64_t>(sample));
}

FlowBatch make_flow_batch(const torch::Tensor& x0, uint64_t seed, int64_t step, int64_t height_px,
                          int64_t width_px, const FlowOptions& options, int64_t first_sample) {
  if (x0.dim() != 5) throw Error(ErrorCode::invalid_argument, "x0", "expected a latent batch [B,C,T,H,W]");
  const int64_t batch = x0.size(0), frames = x0.size(2);
  const double ratio = timestep_shift_ratio(frames, height_px, width_px, options.shift_base_px);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  std::vector<torch::Tensor> noise;
  std::vector<float> times;
  auto cond = torch::zeros({batch, frames}, torch::kBool);
  auto drop = torch::zeros({batch}, torch::kBool);
  auto cond_a = cond.accessor<bool, 2>();
  auto drop_a = drop.accessor<bool, 1>();
  for (int64_t b = 0; b < batch; ++b) {
    auto gen = at::detail::createCPUGenerator(sample_seed(seed, step, first_sample + b));
    // Fixed draw order per sample: t, then the two coins, then the noise.
    auto u = at::randn({1}, gen, f32);
    auto coins = at::rand({2}, gen, f32);
    noise.push_back(at::randn(x0[b].sizes(), gen, f32));
    times.push_back(static_cast<float>(shift_timestep(torch::sigmoid(u).item<double>(), ratio)));
    cond_a[b][0] = frames > 1 && coins[0].item<float>() < options.p_first_frame;
    drop_a[b] = coins[1].item<float>() < options.p_caption_dropout;
  }
  auto eps = torch::stack(noise).to(x0.dtype());
  auto t = torch::tensor(times, f32).to(x0.dtype());
  auto tb = t.view({batch, 1, 1, 1, 1});
  auto x_t = (1.0 - tb) * x0 + tb * eps;
  auto keep = cond.view({batch, 1, frames, 1, 1});
  x_t = torch::where(keep, x0, x_t);
  return FlowBatch{x_t, t, x0 - eps, cond, drop};
}

FlowBatch to_device(const FlowBatch& b, const torch::Device& device) {
  return FlowBatch{b.x_t.to(device), b.t.to(device), b.target.to(device), b.cond_mask.to(device),
                   b.drop_caption.to(device)};
}

torch::Tensor masked_flow_loss(const torch::Tensor& prediction, const torch::Tensor& target,
                               const torch::Tensor& cond_mask) {
  auto err = (prediction - target).pow(2);
  if (!cond_mask.defined()) return err.mean();
  const int64_t batch = err.size(0), frames = err.size(2);
  auto weight = (~cond_mask.to(torch::kBool)).to(err.dtype()).view({batch, 1, frames, 1, 1});
  auto counted = weight.sum() * (err.numel() / (batch * frames));
  return (err * weight).sum() / counted.clamp_min(1.0);
}

double flow_loss_elements(const torch::Tensor& target, const torch::Tensor& cond_mask) {
  if (!cond_mask.defined()) return double(target.numel());
  const int64_t batch = target.size(0), frames = target.size(2);
  const double kept = (~cond_mask.to(torch::kBool)).sum().item<double>();
  return kept * double(target.numel() / (batch * frames));
}

FlowLossParts masked_flow_loss_parts(const torch::Tensor& prediction, const torch::Tensor& target,
                                     const torch::Tensor& cond_mask) {
  auto err = (prediction - target).pow(2);
  const double counted = flow_loss_elements(target, cond_mask);
  if (!cond_mask.defined()) return {err.sum(), counted};
  const int64_t batch = err.size(0), frames = err.size(2);
  auto weight = (~cond_mask.to(torch::kBool)).to(err.dtype()).view({batch, 1, frames, 1, 1});
  return {(err * weight).sum(), counted};
}

torch::Tensor per_sample_flow_error(const torch::Tensor& prediction, const torch::Tensor& target,
                                    const torch::Tensor& cond_mask) {
  auto err = (prediction - target).pow(2);
  const int64_t batch = err.size(0);
  if (!cond_mask.defined()) return err.reshape({batch, -1}).mean(1);
  const int64_t frames = err.size(2);
  auto weight = (~cond_mask.to(torch::kBool)).to(err.dtype()).view({batch, 1, frames, 1, 1});
  auto counted = weight.reshape({batch, -1}).sum(1) * double(err.numel() / (batch * frames));
  return (err * weight).reshape({batch, -1}).sum(1) / counted.clamp_min(1.0);
}

FlowBatch concat(const FlowBatch& a, const FlowBatch& b) {
  return FlowBatch{torch::cat({a.x_t, b.x_t}), torch::cat({a.t, b.t}), torch::cat({a.target, b.target}),
                   torch::cat({a.cond_mask, b.cond_mask}), torch::cat({a.drop_caption, b.drop_caption})};
}

}  // namespace mugv
