#include "model/vae.h"

#include "core/error.h"
#include "model/info.h"

#include <algorithm>
#include <string>

namespace mugv {

namespace F = torch::nn::functional;

namespace {

constexpr double kInitialLogVariance = -12.0;

int64_t group_count(int64_t channels) {
  for (int64_t g = std::min<int64_t>(32, channels); g > 1; --g) {
    if (channels % g == 0) return g;
  }
  return 1;
}

FrameConv3d conv3(int64_t in, int64_t out, std::vector<int64_t> stride = {1, 1, 1}) {
  return FrameConv3d(torch::nn::Conv3dOptions(in, out, 3).stride(stride).padding(1));
}

// [N, C·r², T, H, W] -> [N, C, T, rH, rW]: each group of r² channels becomes an r×r pixel block.
torch::Tensor depth_to_space(const torch::Tensor& x, int64_t r) {
  const int64_t n = x.size(0), c = x.size(1) / (r * r), t = x.size(2), h = x.size(3), w = x.size(4);
  return x.view({n, c, r, r, t, h, w}).permute({0, 1, 4, 5, 2, 6, 3}).reshape({n, c, t, r * h, r * w});
}

// The inverse: [N, C, T, rH, rW] -> [N, C·r², T, H, W].
torch::Tensor space_to_depth(const torch::Tensor& x, int64_t r) {
  const int64_t n = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3) / r, w = x.size(4) / r;
  return x.view({n, c, t, h, r, w, r}).permute({0, 1, 4, 6, 2, 3, 5}).reshape({n, c * r * r, t, h, w});
}

}  // namespace

torch::Tensor FrameConv3dImpl::forward(const torch::Tensor& x) {
  // Padding as torch keeps it: {w_left, w_right, h_left, h_right, t_left, t_right}.
  const auto& pad = _reversed_padding_repeated_twice;
  const auto& dilation = *options.dilation();
  const bool plain = options.groups() == 1 && options.padding_mode().index() == 0 && dilation[0] == 1 &&
                     dilation[1] == 1 && dilation[2] == 1 && pad.size() == 6 && pad[0] == pad[1] &&
                     pad[2] == pad[3];
  if (plain && x.dim() == 5 && x.size(2) == 1) {
    // One input frame: the output frame 0 reads input frame j - t_left with tap j, so only tap t_left is
    // real, and the output has one frame when 0 <= 1 + t_left + t_right - kernel_t < stride_t.
    const int64_t kt = (*options.kernel_size())[0], st = (*options.stride())[0];
    const int64_t spare = 1 + pad[4] + pad[5] - kt;
    if (pad[4] < kt && spare >= 0 && spare < st) {
      const auto& stride = *options.stride();
      return F::conv2d(
                 x.squeeze(2), weight.select(2, pad[4]),
                 F::Conv2dFuncOptions().bias(bias).stride({stride[1], stride[2]}).padding({pad[2], pad[0]}))
          .unsqueeze(2);
    }
  }
  return torch::nn::Conv3dImpl::forward(x);
}

PixelShuffle3dImpl::PixelShuffle3dImpl(int64_t factor, bool inverse) : factor_(factor), inverse_(inverse) {}

torch::Tensor PixelShuffle3dImpl::forward(const torch::Tensor& x) {
  return inverse_ ? space_to_depth(x, factor_) : depth_to_space(x, factor_);
}

VAENormLayerImpl::VAENormLayerImpl(VAENorm kind, int64_t channels)
    : kind_(kind), groups_(group_count(channels)) {
  if (kind == VAENorm::none) return;
  weight = register_parameter("weight", torch::ones({channels}));
  if (kind == VAENorm::group) bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor VAENormLayerImpl::forward(const torch::Tensor& input) {
  constexpr double eps = 1e-6;
  if (kind_ == VAENorm::none) return input;
  // Statistics in the weights' precision: under bf16 autocast the convolutions hand over bf16, and
  // group_norm refuses mixed input and weight types.
  const torch::Tensor x = input.to(weight.scalar_type());
  if (kind_ == VAENorm::group) return torch::group_norm(x, groups_, weight, bias, eps);
  auto inv_rms = torch::rsqrt(x.pow(2).mean(1, /*keepdim=*/true) + eps);
  return x * inv_rms * weight.view({1, -1, 1, 1, 1});
}

ResBlock3dImpl::ResBlock3dImpl(VAENorm norm, int64_t in_channels, int64_t out_channels) {
  norm1 = register_module("norm1", VAENormLayer(norm, in_channels));
  conv1 = register_module("conv1", conv3(in_channels, out_channels));
  norm2 = register_module("norm2", VAENormLayer(norm, out_channels));
  conv2 = register_module("conv2", conv3(out_channels, out_channels));
  if (norm == VAENorm::none) {
    // Without normalisation every residual branch would add its own variance; starting each branch
    // at zero keeps activations at the input's scale however deep the network (as in Fixup).
    torch::NoGradGuard no_grad;
    conv2->weight.zero_();
    conv2->bias.zero_();
  }
  if (in_channels != out_channels) {
    skip = register_module("skip", FrameConv3d(torch::nn::Conv3dOptions(in_channels, out_channels, 1)));
  }
}

torch::Tensor ResBlock3dImpl::forward(const torch::Tensor& x) {
  auto h = conv1(torch::silu(norm1(x)));
  h = conv2(torch::silu(norm2(h)));
  return (skip ? skip(x) : x) + h;
}

Upsample3dImpl::Upsample3dImpl(int64_t in_channels, int64_t out_channels, bool temporal, bool spatial)
    : temporal_(temporal), spatial_(spatial) {
  conv = register_module("conv", conv3(in_channels, spatial ? 4 * out_channels : out_channels));
}

torch::Tensor Upsample3dImpl::forward(const torch::Tensor& x) {
  auto h = temporal_ ? x.repeat_interleave(2, 2) : x;
  h = conv(h);
  return spatial_ ? depth_to_space(h, 2) : h;
}

VideoVAEImpl::VideoVAEImpl(const VAEConfig& config) : config_(config) {
  validate(config, "vae");
  const int levels = static_cast<int>(config.channel_mult.size());
  const int t_downs = vae_temporal_downsamples(config);
  const int s_downs = vae_spatial_downsamples(config);
  const int downs = std::max(t_downs, s_downs);
  const int64_t latent = config.latent_channels;
  const int64_t patch = config.patch;
  auto level_channels = [&](int i) { return int64_t(config.base_channels) * config.channel_mult[i]; };

  encoder = register_module("encoder", torch::nn::Sequential());
  int64_t ch = level_channels(0);
  if (patch > 1) encoder->push_back("patchify", PixelShuffle3d(patch, /*inverse=*/true));
  encoder->push_back("conv_in", conv3(3 * patch * patch, ch));
  for (int i = 0; i < levels; ++i) {
    const int64_t out = level_channels(i);
    for (int b = 0; b < config.res_blocks; ++b) {
      encoder->push_back("down" + std::to_string(i) + "_block" + std::to_string(b),
                         ResBlock3d(config.norm, ch, out));
      ch = out;
    }
    if (i < downs) {
      const int64_t st = i < t_downs ? 2 : 1, ss = i < s_downs ? 2 : 1;
      encoder->push_back("down" + std::to_string(i) + "_sample", conv3(ch, ch, {st, ss, ss}));
    }
  }
  encoder->push_back("mid", ResBlock3d(config.norm, ch, ch));
  encoder->push_back("norm_out", VAENormLayer(config.norm, ch));
  encoder->push_back("act_out", torch::nn::SiLU());
  auto moments_out = conv3(ch, 2 * latent);
  // Start the posterior narrow (log-variance -12, σ ≈ 0.0025): with the small KL weight nothing pulls σ up,
  // and the default σ ≈ 1 would drown the means in noise until the optimiser walks the bias down,
  // which at Adam's pace costs thousands of steps of blurry reconstructions.
  {
    torch::NoGradGuard no_grad;
    moments_out->bias.narrow(0, latent, latent).fill_(kInitialLogVariance);
  }
  encoder->push_back("conv_out", moments_out);

  decoder = register_module("decoder", torch::nn::Sequential());
  ch = level_channels(levels - 1);
  const int64_t window = 2 * int64_t(config.decoder_window) + 1;
  decoder->push_back(
      "conv_in", torch::nn::Conv3d(torch::nn::Conv3dOptions(latent, ch, {window, 3, 3}).padding({0, 1, 1})));
  decoder->push_back("mid", ResBlock3d(config.norm, ch, ch));
  // The mirror of the encoder: level i's blocks run at the resolution of the encoder's level i, so the
  // upsampling that undoes the encoder's downsampling after level i comes before them (and already
  // produces level i's channels). The finest blocks thus work at full (patch) resolution, where the
  // edges are drawn.
  for (int i = levels - 1; i >= 0; --i) {
    const int64_t out = level_channels(i);
    if (i < downs) {
      decoder->push_back("up" + std::to_string(i) + "_sample", Upsample3d(ch, out, i < t_downs, i < s_downs));
      ch = out;
    }
    for (int b = 0; b < config.res_blocks; ++b) {
      decoder->push_back("up" + std::to_string(i) + "_block" + std::to_string(b),
                         ResBlock3d(config.norm, ch, out));
      ch = out;
    }
  }
  decoder->push_back("norm_out", VAENormLayer(config.norm, ch));
  decoder->push_back("act_out", torch::nn::SiLU());
  decoder->push_back("conv_out", conv3(ch, 3 * patch * patch));
  if (patch > 1) decoder->push_back("unpatchify", PixelShuffle3d(patch, /*inverse=*/false));

  latent_mean = register_buffer("latent_mean", torch::zeros({latent}));
  latent_std = register_buffer("latent_std", torch::ones({latent}));
}

int64_t VideoVAEImpl::padded_frames(int64_t frames) const {
  const int64_t ct = config_.compress_t;
  return (ct > 1 && frames % ct == 1) ? ct - 1 : 0;
}

void VideoVAEImpl::check_video(const torch::Tensor& video) const {
  if (video.dim() != 5 || video.size(1) != 3) {
    std::string shape;
    for (int64_t i = 0; i < video.dim(); ++i) shape += (i ? ", " : "") + std::to_string(video.size(i));
    throw Error(ErrorCode::invalid_argument, "video", "expected [B, 3, T, H, W], got [" + shape + "]");
  }
  const int64_t frames = video.size(2), height = video.size(3), width = video.size(4);
  if (height % config_.compress_h != 0) {
    throw Error(
        ErrorCode::invalid_argument, "video",
        "height " + std::to_string(height) + " is not a multiple of " + std::to_string(config_.compress_h));
  }
  if (width % config_.compress_w != 0) {
    throw Error(
        ErrorCode::invalid_argument, "video",
        "width " + std::to_string(width) + " is not a multiple of " + std::to_string(config_.compress_w));
  }
  const int64_t ct = config_.compress_t;
  if (frames < 1 || (frames % ct != 0 && padded_frames(frames) == 0)) {
    throw Error(ErrorCode::invalid_argument, "video",
                "frames " + std::to_string(frames) + " is not a multiple of " + std::to_string(ct) +
                    ", nor a multiple plus 1");
  }
}

std::pair<torch::Tensor, torch::Tensor> VideoVAEImpl::encode(const torch::Tensor& video) {
  check_video(video);
  const int64_t ct = config_.compress_t;
  auto x = video.to(encoder->parameters().front().dtype());
  if (const int64_t pad = padded_frames(video.size(2)); pad > 0) {
    x = torch::cat({x.narrow(2, 0, 1).expand({-1, -1, pad, -1, -1}), x}, 2);
  }
  const int64_t batch = x.size(0), chunks = x.size(2) / ct, height = x.size(3), width = x.size(4);
  auto folded = x.view({batch, 3, chunks, ct, height, width})
                    .permute({0, 2, 1, 3, 4, 5})
                    .reshape({batch * chunks, 3, ct, height, width});
  auto moments = encoder->forward(folded);  // [B·n, 2C, 1, h, w]
  if (config_.pixel_shortcut) {
    auto block_rgb =
        torch::avg_pool3d(folded, {ct, config_.compress_h, config_.compress_w});  // [B·n, 3, 1, h, w]
    moments = torch::cat({moments.narrow(1, 0, 3) + block_rgb, moments.narrow(1, 3, moments.size(1) - 3)}, 1);
  }
  moments = moments.view({batch, chunks, moments.size(1), moments.size(3), moments.size(4)})
                .permute({0, 2, 1, 3, 4});
  auto parts = moments.chunk(2, 1);
  return {parts[0].contiguous(), parts[1].clamp(-30.0, 20.0).contiguous()};
}

torch::Tensor VideoVAEImpl::sample(const torch::Tensor& mean, const torch::Tensor& logvar) {
  return mean + torch::exp(0.5 * logvar) * torch::randn_like(mean);
}

torch::Tensor VideoVAEImpl::decode(const torch::Tensor& latent, int64_t frames) {
  if (latent.dim() != 5 || latent.size(1) != config_.latent_channels) {
    throw Error(ErrorCode::invalid_argument, "latent",
                "expected [B, " + std::to_string(config_.latent_channels) + ", n, h, w]");
  }
  const int64_t ct = config_.compress_t;
  const int64_t batch = latent.size(0), chunks = latent.size(2), h = latent.size(3), w = latent.size(4);
  const int64_t full = chunks * ct;
  if (frames == 0) frames = full;
  if (frames != full && !(ct > 1 && frames == full - (ct - 1))) {
    throw Error(ErrorCode::invalid_argument, "latent",
                std::to_string(chunks) + " latent frames decode to " + std::to_string(full) + " or " +
                    std::to_string(full - ct + 1) + " frames, not " + std::to_string(frames));
  }
  const int64_t r = config_.decoder_window;
  auto z = latent.to(decoder->parameters().front().dtype());
  if (r > 0) z = F::pad(z, F::PadFuncOptions({0, 0, 0, 0, r, r}).mode(torch::kReplicate));
  // Windows of 2r + 1 neighbouring latents, one per output chunk, folded into the batch.
  auto windows = z.unfold(2, 2 * r + 1, 1)  // [B, C, n, h, w, 2r+1]
                     .permute({0, 2, 1, 5, 3, 4})
                     .reshape({batch * chunks, latent.size(1), 2 * r + 1, h, w});
  auto video = decoder->forward(windows);  // [B·n, 3, ct, H, W]
  if (config_.pixel_shortcut) {
    auto block_rgb = windows.narrow(1, 0, 3).narrow(2, r, 1);  // the chunk's own latent, [B·n, 3, 1, h, w]
    video = video + block_rgb.repeat_interleave(ct, 2)
                        .repeat_interleave(config_.compress_h, 3)
                        .repeat_interleave(config_.compress_w, 4);
  }
  const int64_t height = video.size(3), width = video.size(4);
  video = video.view({batch, chunks, 3, ct, height, width})
              .permute({0, 2, 1, 3, 4, 5})
              .reshape({batch, 3, full, height, width});
  return frames == full ? video : video.narrow(2, full - frames, frames);
}

torch::Tensor VideoVAEImpl::decode_tiled(const torch::Tensor& latent, int64_t frames, int64_t tile_latent,
                                         int64_t overlap_latent) {
  if (tile_latent < 1 || overlap_latent < 0 || overlap_latent >= tile_latent) {
    throw Error(ErrorCode::invalid_argument, "decode_tiled", "need tile > overlap >= 0");
  }
  const int64_t h = latent.size(3), w = latent.size(4);
  if (h <= tile_latent && w <= tile_latent) return decode(latent, frames);

  auto starts = [&](int64_t size) {
    std::vector<int64_t> out;
    if (size <= tile_latent) return std::vector<int64_t>{0};
    for (int64_t s = 0;; s += tile_latent - overlap_latent) {
      if (s + tile_latent >= size) {
        out.push_back(size - tile_latent);
        break;
      }
      out.push_back(s);
    }
    return out;
  };
  const int64_t sh = config_.compress_h, sw = config_.compress_w;
  // Weight of each pixel of a tile along one axis: ramps up over the overlap on sides that touch
  // another tile, flat 1 on sides at the frame border.
  auto ramp = [&](int64_t length_px, bool ramp_start, bool ramp_end, int64_t overlap_px,
                  const torch::Tensor& like) {
    auto idx = torch::arange(length_px, like.options()) + 0.5;
    auto weight = torch::ones({length_px}, like.options());
    if (overlap_px > 0 && ramp_start) weight = torch::minimum(weight, idx / overlap_px);
    if (overlap_px > 0 && ramp_end) weight = torch::minimum(weight, (length_px - idx) / overlap_px);
    return weight;
  };

  torch::Tensor out, weights;
  const auto ys = starts(h), xs = starts(w);
  for (int64_t y0 : ys) {
    for (int64_t x0 : xs) {
      const int64_t th = std::min(tile_latent, h), tw = std::min(tile_latent, w);
      auto tile = decode(latent.narrow(3, y0, th).narrow(4, x0, tw), frames);
      if (!out.defined()) {
        out = torch::zeros({tile.size(0), 3, tile.size(2), h * sh, w * sw}, tile.options());
        weights = torch::zeros({1, 1, 1, h * sh, w * sw}, tile.options());
      }
      auto wy = ramp(th * sh, y0 > 0, y0 + th < h, overlap_latent * sh, tile);
      auto wx = ramp(tw * sw, x0 > 0, x0 + tw < w, overlap_latent * sw, tile);
      auto mask = (wy.view({-1, 1}) * wx.view({1, -1})).view({1, 1, 1, th * sh, tw * sw});
      out.narrow(3, y0 * sh, th * sh).narrow(4, x0 * sw, tw * sw).add_(tile * mask);
      weights.narrow(3, y0 * sh, th * sh).narrow(4, x0 * sw, tw * sw).add_(mask);
    }
  }
  return out / weights;
}

VAELoss VideoVAEImpl::loss(const torch::Tensor& video) {
  auto [encoded_mean, encoded_logvar] = encode(video);
  // Under bf16 autocast the convolutions return bf16: sampling and the losses run in the wider of the
  // model's and the video's types, so neither the target nor the KL is rounded to bf16.
  const auto dtype = torch::promote_types(encoded_mean.scalar_type(), video.scalar_type());
  auto mean = encoded_mean.to(dtype), logvar = encoded_logvar.to(dtype);
  auto z = sample(mean, logvar);
  auto target = video.to(dtype);
  auto recon = decode(z, video.size(2)).to(dtype);
  VAELoss out;
  out.mse = F::mse_loss(recon, target);
  out.l1 = F::l1_loss(recon, target);
  out.kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean();
  out.total = out.mse + out.l1 + config_.kl_weight * out.kl;
  return out;
}

torch::Tensor VideoVAEImpl::normalize(const torch::Tensor& latent) const {
  return (latent - latent_mean.view({1, -1, 1, 1, 1})) / latent_std.view({1, -1, 1, 1, 1});
}

torch::Tensor VideoVAEImpl::denormalize(const torch::Tensor& latent) const {
  return latent * latent_std.view({1, -1, 1, 1, 1}) + latent_mean.view({1, -1, 1, 1, 1});
}

void VideoVAEImpl::set_latent_stats(const torch::Tensor& mean, const torch::Tensor& std) {
  const int64_t c = config_.latent_channels;
  if (mean.numel() != c || std.numel() != c) {
    throw Error(ErrorCode::invalid_argument, "latent stats",
                "expected " + std::to_string(c) + " values per statistic, got " +
                    std::to_string(mean.numel()) + " and " + std::to_string(std.numel()));
  }
  if (!(std > 0).all().item<bool>()) {
    throw Error(ErrorCode::invalid_argument, "latent stats", "every channel std must be positive");
  }
  torch::NoGradGuard no_grad;
  latent_mean.copy_(mean.reshape({c}));
  latent_std.copy_(std.reshape({c}));
}

void VideoVAEImpl::measure_latent_stats(const std::vector<torch::Tensor>& latents) {
  if (latents.empty()) throw Error(ErrorCode::invalid_argument, "latent stats", "no latents to measure");
  const int64_t c = config_.latent_channels;
  std::vector<torch::Tensor> flat;
  for (const auto& z : latents)
    flat.push_back(z.detach().to(torch::kFloat64).transpose(0, 1).reshape({c, -1}));
  auto all = torch::cat(flat, 1);
  auto std = all.std(1, /*unbiased=*/false).clamp_min(1e-6);
  set_latent_stats(all.mean(1).to(latent_mean.dtype()), std.to(latent_std.dtype()));
}

namespace {

class VideoVAECodec : public VideoCodec {
 public:
  explicit VideoVAECodec(VideoVAE vae) : vae_(std::move(vae)) {}
  int64_t latent_channels() const override { return vae_->config().latent_channels; }
  int compress_t() const override { return vae_->config().compress_t; }
  int compress_h() const override { return vae_->config().compress_h; }
  int compress_w() const override { return vae_->config().compress_w; }
  int64_t latent_frames(int64_t frames) const override { return vae_latent_frames(vae_->config(), frames); }
  torch::Tensor encode(const torch::Tensor& video) override {
    return vae_->normalize(vae_->encode(video).first);
  }
  torch::Tensor decode(const torch::Tensor& latent, int64_t frames) override {
    return vae_->decode(vae_->denormalize(latent), frames);
  }
  torch::Tensor denormalize(const torch::Tensor& latent) const override { return vae_->denormalize(latent); }
  bool decodes_after_condition_frame() const override { return false; }
  torch::nn::Module& module() override { return *vae_; }

 private:
  VideoVAE vae_;
};

}  // namespace

std::shared_ptr<VideoCodec> make_video_codec(VideoVAE vae) {
  return std::make_shared<VideoVAECodec>(std::move(vae));
}

}  // namespace mugv
