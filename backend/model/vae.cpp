#include "model/vae.h"

#include "core/error.h"

#include <algorithm>
#include <string>

namespace mugv {

namespace F = torch::nn::functional;

namespace {

int log2_int(int v) {
  int n = 0;
  while (v > 1) {
    v >>= 1;
    ++n;
  }
  return n;
}

int64_t group_count(int64_t channels) {
  for (int64_t g = std::min<int64_t>(32, channels); g > 1; --g) {
    if (channels % g == 0) return g;
  }
  return 1;
}

torch::nn::GroupNorm group_norm(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(group_count(channels), channels).eps(1e-6));
}

torch::nn::Conv3d conv3(int64_t in, int64_t out, std::vector<int64_t> stride = {1, 1, 1}) {
  return torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, 3).stride(stride).padding(1));
}

// [N, 4C, T, H, W] -> [N, C, T, 2H, 2W]: each group of four channels becomes a 2×2 pixel block.
torch::Tensor depth_to_space(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1) / 4, t = x.size(2), h = x.size(3), w = x.size(4);
  return x.view({n, c, 2, 2, t, h, w}).permute({0, 1, 4, 5, 2, 6, 3}).reshape({n, c, t, 2 * h, 2 * w});
}

}  // namespace

ResBlock3dImpl::ResBlock3dImpl(int64_t in_channels, int64_t out_channels) {
  norm1 = register_module("norm1", group_norm(in_channels));
  conv1 = register_module("conv1", conv3(in_channels, out_channels));
  norm2 = register_module("norm2", group_norm(out_channels));
  conv2 = register_module("conv2", conv3(out_channels, out_channels));
  if (in_channels != out_channels) {
    skip = register_module("skip", torch::nn::Conv3d(torch::nn::Conv3dOptions(in_channels, out_channels, 1)));
  }
}

torch::Tensor ResBlock3dImpl::forward(const torch::Tensor& x) {
  auto h = conv1(torch::silu(norm1(x)));
  h = conv2(torch::silu(norm2(h)));
  return (skip ? skip(x) : x) + h;
}

Upsample3dImpl::Upsample3dImpl(int64_t channels, bool temporal, bool spatial) : temporal_(temporal), spatial_(spatial) {
  conv = register_module("conv", conv3(channels, spatial ? 4 * channels : channels));
}

torch::Tensor Upsample3dImpl::forward(const torch::Tensor& x) {
  auto h = temporal_ ? x.repeat_interleave(2, 2) : x;
  h = conv(h);
  return spatial_ ? depth_to_space(h) : h;
}

VideoVAEImpl::VideoVAEImpl(const VAEConfig& config) : config_(config) {
  validate(config, "vae");
  const int levels = static_cast<int>(config.channel_mult.size());
  const int t_downs = log2_int(config.compress_t);
  const int s_downs = log2_int(config.compress_h);
  const int downs = std::max(t_downs, s_downs);
  const int64_t latent = config.latent_channels;
  auto level_channels = [&](int i) { return int64_t(config.base_channels) * config.channel_mult[i]; };

  encoder = register_module("encoder", torch::nn::Sequential());
  int64_t ch = level_channels(0);
  encoder->push_back("conv_in", conv3(3, ch));
  for (int i = 0; i < levels; ++i) {
    const int64_t out = level_channels(i);
    for (int b = 0; b < config.res_blocks; ++b) {
      encoder->push_back("down" + std::to_string(i) + "_block" + std::to_string(b), ResBlock3d(ch, out));
      ch = out;
    }
    if (i < downs) {
      const int64_t st = i < t_downs ? 2 : 1, ss = i < s_downs ? 2 : 1;
      encoder->push_back("down" + std::to_string(i) + "_sample", conv3(ch, ch, {st, ss, ss}));
    }
  }
  encoder->push_back("mid", ResBlock3d(ch, ch));
  encoder->push_back("norm_out", group_norm(ch));
  encoder->push_back("act_out", torch::nn::SiLU());
  encoder->push_back("conv_out", conv3(ch, 2 * latent));

  decoder = register_module("decoder", torch::nn::Sequential());
  ch = level_channels(levels - 1);
  const int64_t window = 2 * int64_t(config.decoder_window) + 1;
  decoder->push_back("conv_in",
                     torch::nn::Conv3d(torch::nn::Conv3dOptions(latent, ch, {window, 3, 3}).padding({0, 1, 1})));
  decoder->push_back("mid", ResBlock3d(ch, ch));
  for (int i = levels - 1; i >= 0; --i) {
    const int64_t out = level_channels(i);
    for (int b = 0; b < config.res_blocks; ++b) {
      decoder->push_back("up" + std::to_string(i) + "_block" + std::to_string(b), ResBlock3d(ch, out));
      ch = out;
    }
    if (i < downs) decoder->push_back("up" + std::to_string(i) + "_sample", Upsample3d(ch, i < t_downs, i < s_downs));
  }
  decoder->push_back("norm_out", group_norm(ch));
  decoder->push_back("act_out", torch::nn::SiLU());
  decoder->push_back("conv_out", conv3(ch, 3));

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
    throw Error(ErrorCode::invalid_argument, "video",
                "height " + std::to_string(height) + " is not a multiple of " + std::to_string(config_.compress_h));
  }
  if (width % config_.compress_w != 0) {
    throw Error(ErrorCode::invalid_argument, "video",
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
  moments = moments.view({batch, chunks, moments.size(1), moments.size(3), moments.size(4)}).permute({0, 2, 1, 3, 4});
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
  const int64_t height = video.size(3), width = video.size(4);
  video = video.view({batch, chunks, 3, ct, height, width}).permute({0, 2, 1, 3, 4, 5}).reshape({batch, 3, full, height, width});
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
  auto ramp = [&](int64_t length_px, bool ramp_start, bool ramp_end, int64_t overlap_px, const torch::Tensor& like) {
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
  auto [mean, logvar] = encode(video);
  auto z = sample(mean, logvar);
  auto target = video.to(z.dtype());
  auto recon = decode(z, video.size(2));
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
                "expected " + std::to_string(c) + " values per statistic, got " + std::to_string(mean.numel()) +
                    " and " + std::to_string(std.numel()));
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
  for (const auto& z : latents) flat.push_back(z.detach().to(torch::kFloat64).transpose(0, 1).reshape({c, -1}));
  auto all = torch::cat(flat, 1);
  auto std = all.std(1, /*unbiased=*/false).clamp_min(1e-6);
  set_latent_stats(all.mean(1).to(latent_mean.dtype()), std.to(latent_std.dtype()));
}

}  // namespace mugv
