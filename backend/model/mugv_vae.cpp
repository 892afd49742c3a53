#include "model/mugv_vae.h"
#include "core/strings.h"

#include "model/dit.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mugv {

namespace F = torch::nn::functional;

namespace {

// Spatial norms follow diffusers (eps 1e-6), the temporal ones torch's GroupNorm default.
constexpr double kSpatialNormEps = 1e-6;
constexpr double kTemporalNormEps = 1e-5;
// The reference's posterior clamps its log-variance to this range before exp().
constexpr double kMinLogVariance = -30.0;
constexpr double kMaxLogVariance = 20.0;
// The value the reference's pipeline gives its `logvar` parameter at construction.
constexpr double kInitialLogvar = 4.0;

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

torch::nn::Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = -1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding < 0 ? kernel / 2 : padding));
}

}  // namespace

// ---- Spatial ----------------------------------------------------------------------------------

MugvResnet2dImpl::MugvResnet2dImpl(int64_t in_channels, int64_t out_channels, int64_t groups) {
  norm1 = register_module("norm1", group_norm(groups, in_channels, kSpatialNormEps));
  conv1 = register_module("conv1", conv2d(in_channels, out_channels, 3));
  norm2 = register_module("norm2", group_norm(groups, out_channels, kSpatialNormEps));
  conv2 = register_module("conv2", conv2d(out_channels, out_channels, 3));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut", conv2d(in_channels, out_channels, 1));
}

torch::Tensor MugvResnet2dImpl::forward(const torch::Tensor& x) {
  auto h = conv1(torch::silu(norm1(x)));
  h = conv2(torch::silu(norm2(h)));
  return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

MugvAttention2dImpl::MugvAttention2dImpl(int64_t channels, int64_t groups) {
  group_norm = register_module("group_norm", mugv::group_norm(groups, channels, kSpatialNormEps));
  to_q = register_module("to_q", torch::nn::Linear(channels, channels));
  to_k = register_module("to_k", torch::nn::Linear(channels, channels));
  to_v = register_module("to_v", torch::nn::Linear(channels, channels));
  to_out =
      register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(channels, channels),
                                                      torch::nn::Dropout(torch::nn::DropoutOptions(0.0))));
}

torch::Tensor MugvAttention2dImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  // Pixels as a sequence [N, H·W, C], normalised over channels; one head spanning all C channels.
  auto seq = group_norm(x.reshape({n, c, h * w})).transpose(1, 2);
  auto q = to_q(seq).unsqueeze(1);
  auto k = to_k(seq).unsqueeze(1);
  auto v = to_v(seq).unsqueeze(1);
  // Fused on LibTorch >= 2 (model/dit.h attention()); on 1.x it holds an [H·W]² score matrix per frame
  // (about 0.8 GB in f32 for a 720p frame's 90 × 160 features).
  auto attended = attention(q, k, v).squeeze(1);
  auto out = to_out->at<torch::nn::LinearImpl>(0).forward(attended);
  return out.transpose(1, 2).reshape({n, c, h, w}) + x;
}

MugvMidBlock2dImpl::MugvMidBlock2dImpl(int64_t channels, int64_t groups) {
  // diffusers registers the attentions before the resnets; the state dict keeps that order.
  attentions = register_module("attentions", torch::nn::ModuleList(MugvAttention2d(channels, groups)));
  resnets = register_module("resnets", torch::nn::ModuleList(MugvResnet2d(channels, channels, groups),
                                                             MugvResnet2d(channels, channels, groups)));
}

torch::Tensor MugvMidBlock2dImpl::forward(const torch::Tensor& x) {
  auto h = resnets->at<MugvResnet2dImpl>(0).forward(x);
  h = attentions->at<MugvAttention2dImpl>(0).forward(h);
  return resnets->at<MugvResnet2dImpl>(1).forward(h);
}

MugvResampleBlock2dImpl::MugvResampleBlock2dImpl(int64_t in_channels, int64_t out_channels, int64_t layers,
                                                 int64_t groups, bool down, bool resample)
    : down_(down) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t j = 0; j < layers; ++j)
    resnets->push_back(MugvResnet2d(j == 0 ? in_channels : out_channels, out_channels, groups));
  if (resample) {
    // A module named `conv` inside, as diffusers' Downsample2D / Upsample2D name theirs.
    auto sampler = std::make_shared<torch::nn::Module>();
    sampler_conv_ = sampler->register_module(
        "conv", down ? conv2d(out_channels, out_channels, 3, 2, 0) : conv2d(out_channels, out_channels, 3));
    samplers = register_module(down ? "downsamplers" : "upsamplers", torch::nn::ModuleList(sampler));
  }
}

torch::Tensor MugvResampleBlock2dImpl::forward(const torch::Tensor& x) {
  auto h = x;
  for (const auto& resnet : *resnets) h = resnet->as<MugvResnet2dImpl>()->forward(h);
  if (!samplers) return h;
  // diffusers' Downsample2D pads one zero row and column after (padding 0 otherwise); Upsample2D
  // repeats every pixel 2×2.
  if (down_) return sampler_conv_(F::pad(h, F::PadFuncOptions({0, 1, 0, 1})));
  return sampler_conv_(F::interpolate(
      h, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
}

MugvSpatialEncoderImpl::MugvSpatialEncoderImpl(const MugvVAEConfig& c) {
  const auto& ch = c.spatial_channels;
  const size_t levels = ch.size();
  conv_in = register_module("conv_in", conv2d(c.image_channels, ch[0], 3));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < levels; ++i) {
    down_blocks->push_back(MugvResampleBlock2d(i == 0 ? ch[0] : ch[i - 1], ch[i], c.spatial_layers_per_block,
                                               c.spatial_groups, /*down=*/true, /*resample=*/i + 1 < levels));
  }
  mid_block = register_module("mid_block", MugvMidBlock2d(ch.back(), c.spatial_groups));
  conv_norm_out = register_module("conv_norm_out", group_norm(c.spatial_groups, ch.back(), kSpatialNormEps));
  conv_out = register_module("conv_out", conv2d(ch.back(), 2 * c.spatial_latent_channels, 3));
}

torch::Tensor MugvSpatialEncoderImpl::forward(const torch::Tensor& x) {
  // The release stops after the mid block: conv_norm_out and conv_out are loaded but never run.
  auto h = conv_in(x);
  for (const auto& block : *down_blocks) h = block->as<MugvResampleBlock2dImpl>()->forward(h);
  return mid_block(h);
}

MugvSpatialDecoderImpl::MugvSpatialDecoderImpl(const MugvVAEConfig& c) {
  const auto& ch = c.spatial_channels;
  const size_t levels = ch.size();
  conv_in = register_module("conv_in", conv2d(c.spatial_latent_channels, ch.back(), 3));
  // diffusers registers up_blocks (empty) before mid_block, so the state dict lists them first.
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  mid_block = register_module("mid_block", MugvMidBlock2d(ch.back(), c.spatial_groups));
  for (size_t i = 0; i < levels; ++i) {
    const int64_t in = ch[levels - std::max<size_t>(i, 1)];
    up_blocks->push_back(MugvResampleBlock2d(in, ch[levels - 1 - i], c.spatial_layers_per_block + 1,
                                             c.spatial_groups,
                                             /*down=*/false, /*resample=*/i + 1 < levels));
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c.spatial_groups, ch[0], kSpatialNormEps));
  conv_out = register_module("conv_out", conv2d(ch[0], c.image_channels, 3));
}

torch::Tensor MugvSpatialDecoderImpl::forward(const torch::Tensor& x) {
  // The release starts at the mid block: conv_in is loaded but never run.
  auto h = mid_block(x);
  for (const auto& block : *up_blocks) h = block->as<MugvResampleBlock2dImpl>()->forward(h);
  return conv_out(torch::silu(conv_norm_out(h)));
}

MugvAutoencoderKLImpl::MugvAutoencoderKLImpl(const MugvVAEConfig& c) {
  encoder = register_module("encoder", MugvSpatialEncoder(c));
  decoder = register_module("decoder", MugvSpatialDecoder(c));
}

MugvSpatialVAEImpl::MugvSpatialVAEImpl(const MugvVAEConfig& c) {
  module = register_module("module", MugvAutoencoderKL(c));
}

// ---- Temporal ---------------------------------------------------------------------------------

MugvPaddedConv3dImpl::MugvPaddedConv3dImpl(int64_t in_channels, int64_t out_channels,
                                           std::vector<int64_t> kernel, int64_t time_stride, bool bias) {
  const int64_t time_pad = (kernel[0] - 1) + (1 - time_stride);
  pad_ = {kernel[2] / 2, kernel[2] / 2, kernel[1] / 2, kernel[1] / 2, time_pad / 2, time_pad - time_pad / 2};
  conv = register_module(
      "conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(in_channels, out_channels, at::IntArrayRef(kernel))
                                    .stride({time_stride, 1, 1})
                                    .bias(bias)));
}

torch::Tensor MugvPaddedConv3dImpl::forward(const torch::Tensor& x) {
  const bool no_pad = std::all_of(pad_.begin(), pad_.end(), [](int64_t p) { return p == 0; });
  return conv(no_pad ? x : F::pad(x, F::PadFuncOptions(pad_)));
}

namespace {

MugvPaddedConv3d padded_conv(int64_t in, int64_t out, int64_t kernel, bool bias, int64_t time_stride = 1) {
  return MugvPaddedConv3d(in, out, std::vector<int64_t>{kernel, kernel, kernel}, time_stride, bias);
}

torch::Tensor run_res_blocks(torch::nn::ModuleListImpl& blocks, torch::Tensor x) {
  for (const auto& block : blocks) x = block->as<MugvTemporalResBlockImpl>()->forward(x);
  return x;
}

}  // namespace

MugvTemporalResBlockImpl::MugvTemporalResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t groups,
                                                   bool upsample_time)
    : upsample_time_(upsample_time) {
  norm1 = register_module("norm1", group_norm(groups, in_channels, kTemporalNormEps));
  conv1 = register_module("conv1", padded_conv(in_channels, out_channels, 3, false));
  norm2 = register_module("norm2", group_norm(groups, out_channels, kTemporalNormEps));
  conv2 = register_module("conv2", padded_conv(out_channels, out_channels, 3, false));
  if (in_channels != out_channels)
    conv3 = register_module("conv3", padded_conv(in_channels, out_channels, 1, false));
}

torch::Tensor MugvTemporalResBlockImpl::forward(const torch::Tensor& input) {
  // Nearest ×2 in time repeats every frame twice.
  const auto x = upsample_time_ ? input.repeat_interleave(2, 2) : input;
  auto h = conv1(torch::silu(norm1(x)));
  h = conv2(torch::silu(norm2(h)));
  return h + (conv3 ? conv3(x) : x);
}

MugvTemporalEncoderImpl::MugvTemporalEncoderImpl(const MugvVAEConfig& c)
    : downsample_(c.encoder_temporal_downsample) {
  const std::vector<int64_t> w = c.temporal_widths();
  const size_t n = w.size();
  const int64_t g = c.temporal_groups;
  conv_in = register_module("conv_in", padded_conv(c.feature_channels(), c.temporal_filters, 3, false));
  block_res_blocks = register_module("block_res_blocks", torch::nn::ModuleList());
  conv_blocks = register_module("conv_blocks", torch::nn::ModuleList());
  int64_t prev = c.temporal_filters;
  for (size_t i = 0; i < n; ++i) {
    torch::nn::ModuleList level;
    for (int64_t j = 0; j < c.temporal_res_blocks; ++j, prev = w[i])
      level->push_back(MugvTemporalResBlock(prev, w[i], g));
    block_res_blocks->push_back(level);
    if (i + 1 < n) {
      // A level without downsampling keeps its index with a parameter-free placeholder.
      if (downsample_[i]) {
        conv_blocks->push_back(padded_conv(w[i], w[i], 3, true, /*time_stride=*/2));
      } else {
        conv_blocks->push_back(torch::nn::Identity());
      }
    }
  }
  res_blocks = register_module("res_blocks", torch::nn::ModuleList());
  for (int64_t j = 0; j < c.temporal_res_blocks; ++j)
    res_blocks->push_back(MugvTemporalResBlock(w[n - 1], w[n - 1], g));
  norm1 = register_module("norm1", group_norm(g, w[n - 1], kTemporalNormEps));
  conv2 = register_module("conv2", padded_conv(w[n - 1], 2 * c.latent_channels, 1, true));
}

torch::Tensor MugvTemporalEncoderImpl::forward(const torch::Tensor& x) {
  auto h = conv_in(x);
  const size_t n = block_res_blocks->size();
  for (size_t i = 0; i < n; ++i) {
    h = run_res_blocks(block_res_blocks->at<torch::nn::ModuleListImpl>(i), h);
    if (i + 1 < n && downsample_[i]) h = conv_blocks->at<MugvPaddedConv3dImpl>(i).forward(h);
  }
  h = run_res_blocks(*res_blocks, h);
  return conv2(torch::silu(norm1(h)));
}

MugvTemporalDecoderImpl::MugvTemporalDecoderImpl(const MugvVAEConfig& c)
    : upsample_(c.decoder_temporal_upsample) {
  const std::vector<int64_t> w = c.temporal_widths();
  const size_t n = w.size();
  const int64_t g = c.temporal_groups;
  conv1 = register_module("conv1", padded_conv(c.latent_channels, w[n - 1], 3, true));
  res_blocks = register_module("res_blocks", torch::nn::ModuleList());
  for (int64_t j = 0; j < c.temporal_res_blocks; ++j)
    res_blocks->push_back(MugvTemporalResBlock(w[n - 1], w[n - 1], g));
  upsample_block =
      register_module("upsample_block", MugvTemporalResBlock(w[n - 1], w[n - 1], g, /*upsample_time=*/true));
  block_res_blocks = register_module("block_res_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < n; ++i) {
    torch::nn::ModuleList level;
    int64_t in = i + 1 < n ? w[i + 1] : w[n - 1];
    for (int64_t j = 0; j < c.temporal_res_blocks; ++j, in = w[i])
      level->push_back(MugvTemporalResBlock(in, w[i], g));
    block_res_blocks->push_back(level);
  }
  // conv_blocks[k] runs after level k + 1: a conv to twice the width, unfolded into time.
  conv_blocks = register_module("conv_blocks", torch::nn::ModuleList());
  for (size_t k = 0; k + 1 < n; ++k) {
    if (upsample_[k]) {
      conv_blocks->push_back(padded_conv(w[k + 1], 2 * w[k + 1], 3, true));
    } else {
      conv_blocks->push_back(torch::nn::Identity());
    }
  }
  norm1 = register_module("norm1", group_norm(g, w[0], kTemporalNormEps));
  conv_out = register_module("conv_out", padded_conv(w[0], c.feature_channels(), 3, true));
}

torch::Tensor MugvTemporalDecoderImpl::forward(const torch::Tensor& x) {
  auto h = run_res_blocks(*res_blocks, conv1(x));
  h = upsample_block(h);
  for (size_t i = block_res_blocks->size(); i-- > 0;) {
    h = run_res_blocks(block_res_blocks->at<torch::nn::ModuleListImpl>(i), h);
    if (i > 0 && upsample_[i - 1]) {
      h = conv_blocks->at<MugvPaddedConv3dImpl>(i - 1).forward(h);
      // Depth to time: channel 2c + k becomes channel c at frame 2t + k.
      const int64_t n = h.size(0), c = h.size(1) / 2, t = h.size(2), hh = h.size(3), ww = h.size(4);
      h = h.view({n, c, 2, t, hh, ww}).permute({0, 1, 3, 2, 4, 5}).reshape({n, c, 2 * t, hh, ww});
    }
  }
  return conv_out(torch::silu(norm1(h)));
}

MugvTemporalVAEImpl::MugvTemporalVAEImpl(const MugvVAEConfig& c) : factor_(c.temporal_factor()) {
  encoder = register_module("encoder", MugvTemporalEncoder(c));
  quant_conv =
      register_module("quant_conv", padded_conv(2 * c.latent_channels, 2 * c.latent_channels, 1, true));
  post_quant_conv =
      register_module("post_quant_conv", padded_conv(c.latent_channels, c.latent_channels, 1, true));
  decoder = register_module("decoder", MugvTemporalDecoder(c));
}

torch::Tensor MugvTemporalVAEImpl::encode_moments(const torch::Tensor& features) {
  const int64_t f = factor_;
  const int64_t pad = (f - features.size(2) % f) % f;
  const auto x = pad ? F::pad(features, F::PadFuncOptions({0, 0, 0, 0, pad, 0})) : features;
  const int64_t b = x.size(0), c = x.size(1), chunks = x.size(2) / f, h = x.size(3), w = x.size(4);
  // Every f-frame chunk becomes its own batch entry: this is what makes the encoding minimal.
  auto folded =
      x.reshape({b, c, chunks, f, h, w}).permute({0, 2, 1, 3, 4, 5}).reshape({b * chunks, c, f, h, w});
  auto moments = quant_conv(encoder(folded)).to(x.scalar_type());
  const int64_t m = moments.size(1);
  return moments.reshape({b, chunks, m, h, w}).permute({0, 2, 1, 3, 4});
}

torch::Tensor MugvTemporalVAEImpl::decode(const torch::Tensor& latent, int64_t num_frames) {
  const int64_t pad = (factor_ - num_frames % factor_) % factor_;
  auto x = decoder(post_quant_conv(latent));
  return x.narrow(2, pad, x.size(2) - pad);
}

// ---- Pipeline ---------------------------------------------------------------------------------

MugvVAEImpl::MugvVAEImpl(const MugvVAEConfig& config) : config_(config) {
  validate(config_);
  spatial_vae = register_module("spatial_vae", MugvSpatialVAE(config_));
  temporal_vae = register_module("temporal_vae", MugvTemporalVAE(config_));
  const int64_t latent = config_.latent_channels;
  auto stats = [&](const std::vector<double>& values, double fallback) {
    auto t = values.empty() ? torch::full({latent}, fallback)
                            : torch::tensor(values, torch::kDouble).to(torch::kFloat);
    return t.view({1, latent, 1, 1, 1});
  };
  scale = register_buffer("scale", stats(config_.latent_std, 1.0));
  shift = register_buffer("shift", stats(config_.latent_mean, 0.0));
  logvar = register_parameter("logvar", torch::full({}, kInitialLogvar));
}

int64_t MugvVAEImpl::latent_frames(int64_t frames) const {
  if (frames < 1)
    throw Error(ErrorCode::invalid_argument, "frames",
                "needs at least 1 frame, got " + std::to_string(frames));
  const int64_t f = config_.temporal_factor();
  return (frames + f - 1) / f;
}

int64_t MugvVAEImpl::video_frames(int64_t latent_frames) const {
  if (latent_frames < 1) {
    throw Error(ErrorCode::invalid_argument, "latent_frames",
                "needs at least 1 latent frame, got " + std::to_string(latent_frames));
  }
  return config_.temporal_factor() * latent_frames;
}

torch::Tensor MugvVAEImpl::normalize(const torch::Tensor& latent) const {
  return (latent - shift) / scale;
}

torch::Tensor MugvVAEImpl::denormalize(const torch::Tensor& latent) const {
  return latent * scale.to(latent.scalar_type()) + shift.to(latent.scalar_type());
}

torch::Tensor MugvVAEImpl::encode_spatial(const torch::Tensor& video) {
  const int64_t b = video.size(0), c = video.size(1), t = video.size(2), h = video.size(3), w = video.size(4);
  auto frames = video.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
  const int64_t step = config_.micro_batch_size > 0 ? config_.micro_batch_size : b * t;
  auto& encoder = *spatial_vae->module->encoder;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < b * t; i += step) {
    out.push_back(
        encoder.forward(frames.narrow(0, i, std::min(step, b * t - i))).mul(config_.spatial_scaling));
  }
  auto features = torch::cat(out, 0);
  return features.view({b, t, features.size(1), features.size(2), features.size(3)}).permute({0, 2, 1, 3, 4});
}

torch::Tensor MugvVAEImpl::decode_spatial(const torch::Tensor& features) {
  const int64_t b = features.size(0), c = features.size(1), t = features.size(2), h = features.size(3),
                w = features.size(4);
  auto frames = features.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
  const int64_t step = config_.micro_batch_size > 0 ? config_.micro_batch_size : b * t;
  auto& decoder = *spatial_vae->module->decoder;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < b * t; i += step) {
    out.push_back(
        decoder.forward(frames.narrow(0, i, std::min(step, b * t - i)).div(config_.spatial_scaling)));
  }
  auto video = torch::cat(out, 0);
  return video.view({b, t, video.size(1), video.size(2), video.size(3)}).permute({0, 2, 1, 3, 4});
}

torch::Tensor MugvVAEImpl::posterior(const torch::Tensor& moments,
                                     const std::optional<at::Generator>& sample_with) const {
  const int64_t latent = config_.latent_channels;
  auto mean = moments.narrow(1, 0, latent);
  if (!sample_with) return mean;
  auto std = torch::exp(0.5 * moments.narrow(1, latent, latent).clamp(kMinLogVariance, kMaxLogVariance));
  auto noise = at::randn(mean.sizes(), *sample_with,
                         torch::TensorOptions().dtype(torch::kFloat).device(sample_with->device()));
  return mean + std * noise.to(mean.device(), mean.scalar_type());
}

torch::Tensor MugvVAEImpl::encode(const torch::Tensor& video,
                                  const std::optional<at::Generator>& sample_with) {
  if (video.dim() != 5 || video.size(1) != config_.image_channels) {
    throw Error(ErrorCode::invalid_argument, "video",
                "expected [B, " + std::to_string(config_.image_channels) + ", T, H, W], got " +
                    shape_string(video.sizes().vec()));
  }
  const int64_t s = config_.spatial_factor();
  if (video.size(0) < 1 || video.size(2) < 1) {
    throw Error(ErrorCode::invalid_argument, "video",
                "needs at least one clip and one frame, got " + shape_string(video.sizes().vec()));
  }
  if (video.size(3) < 1 || video.size(3) % s != 0) {
    throw Error(
        ErrorCode::invalid_argument, "video",
        "height " + std::to_string(video.size(3)) + " is not a positive multiple of " + std::to_string(s));
  }
  if (video.size(4) < 1 || video.size(4) % s != 0) {
    throw Error(
        ErrorCode::invalid_argument, "video",
        "width " + std::to_string(video.size(4)) + " is not a positive multiple of " + std::to_string(s));
  }
  auto features = encode_spatial(video.to(logvar.device(), logvar.scalar_type()));
  const int64_t f = config_.temporal_factor(), micro = config_.micro_frame_size;
  if (micro == 0) return normalize(posterior(temporal_vae->encode_moments(features), sample_with));

  // With micro chunks, T ≡ 1 (mod f) gets frame 0 repeated in front so that it fills a chunk alone.
  if (features.size(2) % f == 1) {
    features = torch::cat({features.narrow(2, 0, 1).repeat({1, 1, f - 1, 1, 1}), features}, 2);
  }
  std::vector<torch::Tensor> latents;
  for (int64_t i = 0; i < features.size(2); i += micro) {
    auto chunk = features.narrow(2, i, std::min(micro, features.size(2) - i));
    latents.push_back(posterior(temporal_vae->encode_moments(chunk), sample_with));
  }
  return normalize(torch::cat(latents, 2));
}

torch::Tensor MugvVAEImpl::decode(const torch::Tensor& latent, int64_t num_frames) {
  if (latent.dim() != 5 || latent.size(1) != config_.latent_channels || latent.size(0) < 1 ||
      latent.size(2) < 1 || latent.size(3) < 1 || latent.size(4) < 1) {
    throw Error(ErrorCode::invalid_argument, "latent",
                "expected [B, " + std::to_string(config_.latent_channels) +
                    ", T', h, w] with every size positive, got " + shape_string(latent.sizes().vec()));
  }
  const int64_t latents = latent.size(2);
  if (num_frames < 1 || latent_frames(num_frames) != latents) {
    throw Error(ErrorCode::invalid_argument, "num_frames",
                std::to_string(num_frames) + " frames do not fit " + std::to_string(latents) +
                    " latent frames (expected " +
                    std::to_string(video_frames(latents) - config_.temporal_factor() + 1) + " to " +
                    std::to_string(video_frames(latents)) + ")");
  }
  auto z = denormalize(latent.to(logvar.device(), logvar.scalar_type()));
  const int64_t micro = config_.micro_frame_size;
  if (micro == 0) return decode_spatial(temporal_vae->decode(z, num_frames));

  // Latent micro chunks match the encoder's frame chunks; each decodes at most `micro` frames and
  // drops the leading ones its remaining frame count leaves unfilled.
  const int64_t micro_latents = micro / config_.temporal_factor();
  std::vector<torch::Tensor> features;
  int64_t remaining = num_frames;
  for (int64_t i = 0; i < latents; i += micro_latents, remaining -= micro) {
    auto chunk = z.narrow(2, i, std::min(micro_latents, latents - i));
    features.push_back(temporal_vae->decode(chunk, std::min(micro, remaining)));
  }
  return decode_spatial(torch::cat(features, 2));
}

namespace {

class MugvVAECodec : public VideoCodec {
 public:
  explicit MugvVAECodec(MugvVAE vae) : vae_(std::move(vae)) {}
  int64_t latent_channels() const override { return vae_->config().latent_channels; }
  int compress_t() const override { return static_cast<int>(vae_->config().temporal_factor()); }
  int compress_h() const override { return static_cast<int>(vae_->config().spatial_factor()); }
  int compress_w() const override { return static_cast<int>(vae_->config().spatial_factor()); }
  int64_t latent_frames(int64_t frames) const override { return vae_->latent_frames(frames); }
  torch::Tensor encode(const torch::Tensor& video) override { return vae_->encode(video); }
  torch::Tensor decode(const torch::Tensor& latent, int64_t frames) override {
    return vae_->decode(latent, frames);
  }
  torch::Tensor denormalize(const torch::Tensor& latent) const override { return vae_->denormalize(latent); }
  bool decodes_after_condition_frame() const override { return true; }
  torch::nn::Module& module() override { return *vae_; }

 private:
  MugvVAE vae_;
};

}  // namespace

std::shared_ptr<VideoCodec> make_video_codec(MugvVAE vae) {
  return std::make_shared<MugvVAECodec>(std::move(vae));
}

}  // namespace mugv
