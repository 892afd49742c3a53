#pragma once
// The video VAE (docs/MUGV.md §2): a 3D-convolutional encoder / decoder with compress_t × compress_h ×
// compress_w compression to `latent_channels` channels.
//
// Minimal encoding: the video is cut into chunks of compress_t frames and every chunk is encoded
// on its own (chunks are folded into the batch), so latent frame i depends on frames
// [i·ct, (i+1)·ct) only. When T mod ct == 1 (17 frames at ct = 8), frame 0 is repeated ct - 1 times
// in front so the first chunk is full: 17 → 24 → 3 latents. Decoding is windowed: output chunk i
// is computed from latents [i - decoder_window, i + decoder_window] (edge latents repeated), so
// chunk boundaries see their neighbours. decode_tiled() additionally cuts large frames into
// overlapping spatial tiles and blends them linearly across the overlap.
//
// Blocks: norm (GroupNorm(32) or per-voxel channel RMS, config.norm) → SiLU → Conv3d 3×3×3;
// downsampling by stride-2 convs after a level's blocks (temporal and spatial levels counted
// separately); the decoder mirrors it, upsampling (nearest repetition in time, conv → depth-to-space in
// space) before a level's blocks, so its finest blocks run at the encoder's finest resolution. With
// config.patch > 1 the pixels are first folded patch × patch into channels (and unfolded after the last
// conv). With config.pixel_shortcut, block RGB averages bypass both networks through latent channels 0-2.
//
// Latents from encode() are raw; normalize() / denormalize() apply the per-channel statistics
// kept in the `latent_mean` / `latent_std` buffers (identity until set_latent_stats). Videos are
// [B, 3, T, H, W] in [-1, 1]. Not thread-safe (a torch module).

#include "model/config.h"
#include "model/video_codec.h"

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace mugv {

// The blocks' normalisation (config.h VAENorm): GroupNorm with up to 32 groups (fewer when the
// channel count is small) and eps 1e-6, or the RMS over each voxel's channels with a learned gain.
// Parameters are named weight (and bias) as torch's GroupNorm names them.
class VAENormLayerImpl : public torch::nn::Module {
 public:
  VAENormLayerImpl(VAENorm kind, int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  VAENorm kind_;
  int64_t groups_;
};
TORCH_MODULE(VAENormLayer);

// A Conv3d that, on a one-frame input, runs the equivalent 2D convolution with the one temporal tap of
// the kernel that sees a real frame (the others only see zero padding). The latent-resolution blocks
// always see one frame per chunk, and on CPU the 2D convolution's backward is about 3x faster there.
// Same parameters, names and results as torch::nn::Conv3d (dilation 1, one group).
class FrameConv3dImpl : public torch::nn::Conv3dImpl {
 public:
  using torch::nn::Conv3dImpl::Conv3dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(FrameConv3d);

class ResBlock3dImpl : public torch::nn::Module {
 public:
  ResBlock3dImpl(VAENorm norm, int64_t in_channels, int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& x);
  VAENormLayer norm1{nullptr}, norm2{nullptr};
  FrameConv3d conv1{nullptr}, conv2{nullptr}, skip{nullptr};
};
TORCH_MODULE(ResBlock3d);

class Upsample3dImpl : public torch::nn::Module {
 public:
  // Nearest ×2 in time (when temporal), then a 3×3×3 conv to out_channels (×4 and depth-to-space when
  // spatial).
  Upsample3dImpl(int64_t in_channels, int64_t out_channels, bool temporal, bool spatial);
  torch::Tensor forward(const torch::Tensor& x);
  FrameConv3d conv{nullptr};

 private:
  bool temporal_;
  bool spatial_;
};
TORCH_MODULE(Upsample3d);

struct VAELoss {
  torch::Tensor total;  // mse + l1 + kl_weight · kl
  torch::Tensor mse;
  torch::Tensor l1;
  torch::Tensor kl;  // mean over latent elements
};

// Pixel shuffle over the two spatial axes of [N, C, T, H, W]: depth-to-space ([N, C·r², T, H, W] ->
// [N, C, T, rH, rW]) or, inverse, space-to-depth. No parameters.
class PixelShuffle3dImpl : public torch::nn::Module {
 public:
  PixelShuffle3dImpl(int64_t factor, bool inverse);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t factor_;
  bool inverse_;
};
TORCH_MODULE(PixelShuffle3d);

class VideoVAEImpl : public torch::nn::Module {
 public:
  explicit VideoVAEImpl(const VAEConfig& config);

  // (mean, logvar), each [B, latent_channels, latent_frames, H/ch, W/cw]. Throws
  // Error(invalid_argument) for a video that is not [B, 3, T, H, W] or whose sizes do not fit the
  // compression ("height 70 is not a multiple of 8").
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& video);
  // mean + exp(logvar / 2) · ε.
  torch::Tensor sample(const torch::Tensor& mean, const torch::Tensor& logvar);
  // Video [B, 3, frames, H, W] from a raw latent [B, C, n, h, w]. frames = 0 means n·ct; the only
  // other accepted value is (n - 1)·ct + 1, which drops the repeated frames of the first chunk.
  torch::Tensor decode(const torch::Tensor& latent, int64_t frames = 0);
  // decode() over spatial tiles of tile_latent × tile_latent latents overlapping by
  // overlap_latent, blended linearly; falls back to decode() when the latent fits one tile.
  torch::Tensor decode_tiled(const torch::Tensor& latent, int64_t frames = 0, int64_t tile_latent = 32,
                             int64_t overlap_latent = 8);
  // Reconstruction (MSE + L1) + kl_weight · KL for one batch of videos.
  VAELoss loss(const torch::Tensor& video);

  torch::Tensor normalize(const torch::Tensor& latent) const;
  torch::Tensor denormalize(const torch::Tensor& latent) const;
  // Sets the buffers; both must hold latent_channels values, std all positive.
  void set_latent_stats(const torch::Tensor& mean, const torch::Tensor& std);
  // Per-channel mean and std over raw latents [B, C, n, h, w] (e.g. encoder means of a dataset
  // sample), stored with set_latent_stats. Throws Error(invalid_argument) when `latents` is empty.
  void measure_latent_stats(const std::vector<torch::Tensor>& latents);

  // Number of leading frames the chunking adds for `frames` input frames (ct - 1 or 0).
  int64_t padded_frames(int64_t frames) const;
  const VAEConfig& config() const { return config_; }

  torch::nn::Sequential encoder{nullptr}, decoder{nullptr};
  torch::Tensor latent_mean, latent_std;  // buffers [latent_channels]

 private:
  void check_video(const torch::Tensor& video) const;
  VAEConfig config_;
};
TORCH_MODULE(VideoVAE);

// The sampler's view of a VideoVAE (model/video_codec.h): frames k·ct or k·ct + 1, the whole latent decoded.
[[nodiscard]] std::shared_ptr<VideoCodec> make_video_codec(VideoVAE vae);

}  // namespace mugv
