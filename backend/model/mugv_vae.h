#pragma once
// The released MUG-V video VAE as LibTorch modules: loads the release's `vae.pt` state dict by its
// own tensor names and encodes / decodes as the release pipeline does. (backend/model/vae.h is the
// studio's own, smaller VAE trained from scratch; the two share nothing.)
//
// Architecture (two stages, run one after the other):
//   1. Spatial: a 2D KL autoencoder in the diffusers AutoencoderKL layout with the SDXL VAE's shape
//      (block_out_channels 128-256-512-512, 2 resnets a down block and 3 an up block, GroupNorm(32,
//      eps 1e-6), SiLU, one single-head self-attention in each mid block), without quant convs, run
//      on every frame alone. The release truncates both ends: its encoder stops after the mid block
//      (conv_norm_out / conv_out are in the checkpoint but unused) and its decoder starts at the mid
//      block (conv_in unused), so the temporal stage works on the 512-channel mid-block features at
//      H/8 × W/8, scaled by 0.18215 (and divided by it again before the spatial decoder).
//   2. Temporal: a MAGVIT-style 3D conv autoencoder over those features ("MUGVAETemporal": filters
//      128, multipliers 1-2-2-4, 4 res blocks a level, GroupNorm(32, eps 1e-5), SiLU). Its convs
//      ("CausalConv3d") pad zeros around the kernel in time: symmetric for stride 1 ((k-1)/2 each
//      side, so they are not causal), one frame behind for the stride-2 downsampling convs. The
//      encoder halves time after levels 0-2 (×8 in all) and ends in GroupNorm → SiLU → 1×1×1 conv
//      to 2·24 moments, then quant_conv (1×1×1). The decoder runs post_quant_conv, conv1 to 512,
//      res blocks, an up block (nearest ×2 in time, then a res block), then levels 3..0 with a conv
//      to 2·C channels and channel-to-time depth-to-space after levels 3 and 2 (level 1 has none):
//      ×8 in time in all.
//   3. Pipeline: latents are normalised per channel, (z - shift) / scale, with the release's 24
//      means and standard deviations as `shift` and `scale` buffers. A scalar `logvar` parameter
//      (a training leftover, 4.0 at construction) is kept because the checkpoint holds it.
//
// Tensor names are those of the reference's `state_dict()`, e.g.
//   spatial_vae.module.encoder.down_blocks.1.resnets.0.conv_shortcut.weight
//   spatial_vae.module.decoder.mid_block.attentions.0.to_out.0.weight
//   temporal_vae.encoder.block_res_blocks.2.3.conv1.conv.weight
//   temporal_vae.decoder.conv_blocks.1.conv.bias
//   scale [1, 24, 1, 1, 1], shift [1, 24, 1, 1, 1], logvar []
// mugv_vae_tensor_shapes() lists all of them for a config without building the module.
//
// Shapes and frames (f = the temporal factor, 8 in the release; s = the spatial factor, 8):
//   encode: video [B, 3, T, H, W] in [-1, 1] -> normalised latent [B, 24, ceil(T/f), H/s, W/s].
//     The spatial stage runs micro_batch_size (4) frames at a time, the temporal one micro chunks
//     of micro_frame_size (48) frames (0 for either: all at once, the reference's None). When
//     micro chunks are used and T mod f == 1, frame 0 is first repeated f-1 more times (so 1 frame
//     and 8k+1 frames fill whole chunks: the first latent then encodes frame 0 alone). Otherwise a
//     micro chunk whose length is not a multiple of f gets zero frames in front.
//   decode(latent [B, 24, T', h, w], num_frames) -> video [B, 3, num_frames, 8h, 8w], with
//     ceil(num_frames / f) == T': latents are decoded in micro chunks of micro_frame_size / f, and
//     each chunk drops the leading frames its frame count does not fill.
//   Minimal encoding holds: the temporal encoder folds every f-frame chunk into the batch (its
//   GroupNorms see one chunk), so latent frame i depends only on its own chunk of (padded) frames.
//   Decoding does not: within a micro chunk every latent frame sees its neighbours. As in the
//   reference, for T ≡ 1 (mod f) with T > micro_frame_size the repeated frames sit in the first micro
//   chunk but the decoder drops frames from the last one, so decode(encode(x), T) is not
//   frame-aligned with x there. The release's image-to-video path never meets this: it encodes the
//   reference image as 8 repeated frames (one latent) and decodes the other latents with
//   num_frames = T - 1 = 8k.
//
// encode() returns the posterior mean unless the caller hands a generator; with one it returns
// mean + std · ε as the reference does (ε drawn in f32 on the generator's device, one draw per micro
// chunk, then moved to the latent's device and dtype: the reference draws the same way from torch's
// default CPU generator, so a CPU generator in the same state gives the same ε). Inputs are moved to the
// parameters' device and dtype. No autograd guard is taken: callers wrap inference in torch::NoGradGuard.
//
// Not thread-safe: a torch module; one forward at a time per instance.

#include "core/error.h"

#include "model/mugv_vae_config.h"
#include "model/video_codec.h"

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mugv {

// ---- Spatial (diffusers AutoencoderKL layout) -------------------------------------------------

// GroupNorm → SiLU → conv3×3, twice, plus a 1×1 conv_shortcut when the width changes.
class MugvResnet2dImpl : public torch::nn::Module {
 public:
  MugvResnet2dImpl(int64_t in_channels, int64_t out_channels, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(MugvResnet2d);

// Single-head self-attention over all pixels with a GroupNorm in front and a residual.
class MugvAttention2dImpl : public torch::nn::Module {
 public:
  MugvAttention2dImpl(int64_t channels, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // {Linear, Dropout} as diffusers names them
};
TORCH_MODULE(MugvAttention2d);

// resnets.0 → attentions.0 → resnets.1.
class MugvMidBlock2dImpl : public torch::nn::Module {
 public:
  MugvMidBlock2dImpl(int64_t channels, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MugvMidBlock2d);

// resnets, then (unless last) a stride-2 conv with one zero row / column padded after (downsamplers),
// or nearest ×2 then a conv (upsamplers).
class MugvResampleBlock2dImpl : public torch::nn::Module {
 public:
  MugvResampleBlock2dImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups,
                          bool down, bool resample);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, samplers{nullptr};

 private:
  torch::nn::Conv2d sampler_conv_{nullptr};  // samplers.0.conv
  bool down_;
};
TORCH_MODULE(MugvResampleBlock2d);

// Pixels [N, 3, H, W] -> mid-block features [N, C, H/s, W/s] (the release's truncated encoder).
class MugvSpatialEncoderImpl : public torch::nn::Module {
 public:
  explicit MugvSpatialEncoderImpl(const MugvVAEConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  MugvMidBlock2d mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(MugvSpatialEncoder);

// Mid-block features [N, C, h, w] -> pixels [N, 3, sh, sw] (the release's truncated decoder).
class MugvSpatialDecoderImpl : public torch::nn::Module {
 public:
  explicit MugvSpatialDecoderImpl(const MugvVAEConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  MugvMidBlock2d mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(MugvSpatialDecoder);

class MugvAutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit MugvAutoencoderKLImpl(const MugvVAEConfig& config);
  MugvSpatialEncoder encoder{nullptr};
  MugvSpatialDecoder decoder{nullptr};
};
TORCH_MODULE(MugvAutoencoderKL);

// The reference's MUGAutoencoderKL wrapper: only holds `module`.
class MugvSpatialVAEImpl : public torch::nn::Module {
 public:
  explicit MugvSpatialVAEImpl(const MugvVAEConfig& config);
  MugvAutoencoderKL module{nullptr};
};
TORCH_MODULE(MugvSpatialVAE);

// ---- Temporal (MUGVAETemporal) ----------------------------------------------------------------

// Conv3d (as `conv`) with the reference's explicit zero padding: k/2 in space; in time
// (k_t - 1) + (1 - stride_t) frames, half (rounded down) before and the rest after.
class MugvPaddedConv3dImpl : public torch::nn::Module {
 public:
  MugvPaddedConv3dImpl(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
                       int64_t time_stride, bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv3d conv{nullptr};

 private:
  std::vector<int64_t> pad_;  // {w, w, h, h, t_before, t_after}
};
TORCH_MODULE(MugvPaddedConv3d);

// GroupNorm → SiLU → conv 3×3×3 (no bias), twice, plus a bias-free 1×1×1 conv3 shortcut when the
// width changes. With upsample_time, nearest ×2 in time first (the decoder's upsample_block).
class MugvTemporalResBlockImpl : public torch::nn::Module {
 public:
  MugvTemporalResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t groups,
                           bool upsample_time = false);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  MugvPaddedConv3d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};

 private:
  bool upsample_time_;
};
TORCH_MODULE(MugvTemporalResBlock);

// Features [N, C, f·k, h, w] -> moments [N, 2·latent, k, h, w] (before quant_conv).
class MugvTemporalEncoderImpl : public torch::nn::Module {
 public:
  explicit MugvTemporalEncoderImpl(const MugvVAEConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  MugvPaddedConv3d conv_in{nullptr}, conv2{nullptr};
  torch::nn::ModuleList block_res_blocks{nullptr}, conv_blocks{nullptr}, res_blocks{nullptr};
  torch::nn::GroupNorm norm1{nullptr};

 private:
  std::vector<bool> downsample_;
};
TORCH_MODULE(MugvTemporalEncoder);

// Latents [N, latent, k, h, w] (after post_quant_conv) -> features [N, C, f·k, h, w].
class MugvTemporalDecoderImpl : public torch::nn::Module {
 public:
  explicit MugvTemporalDecoderImpl(const MugvVAEConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  MugvPaddedConv3d conv1{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList res_blocks{nullptr}, block_res_blocks{nullptr}, conv_blocks{nullptr};
  MugvTemporalResBlock upsample_block{nullptr};
  torch::nn::GroupNorm norm1{nullptr};

 private:
  std::vector<bool> upsample_;
};
TORCH_MODULE(MugvTemporalDecoder);

class MugvTemporalVAEImpl : public torch::nn::Module {
 public:
  explicit MugvTemporalVAEImpl(const MugvVAEConfig& config);
  // Features [B, C, T, h, w] -> moments [B, 2·latent, ceil(T/f), h, w]: zero frames in front up to a
  // multiple of f, then every f-frame chunk encoded on its own.
  torch::Tensor encode_moments(const torch::Tensor& features);
  // Latents [B, latent, k, h, w] -> features [B, C, f·k - pad, h, w], pad = the frames num_frames
  // leaves unfilled in its last chunk, dropped from the front.
  torch::Tensor decode(const torch::Tensor& latent, int64_t num_frames);
  MugvTemporalEncoder encoder{nullptr};
  MugvPaddedConv3d quant_conv{nullptr}, post_quant_conv{nullptr};
  MugvTemporalDecoder decoder{nullptr};

 private:
  int64_t factor_;
};
TORCH_MODULE(MugvTemporalVAE);

// ---- The pipeline ("MUGAutoencoderPipeline") --------------------------------------------------

class MugvVAEImpl : public torch::nn::Module {
 public:
  explicit MugvVAEImpl(const MugvVAEConfig& config = MugvVAEConfig{});

  // Video [B, 3, T, H, W] in [-1, 1] -> normalised latent [B, latent, latent_frames(T), H/s, W/s].
  // Without `sample_with` the posterior mean; with it mean + std · ε, ε from that generator.
  // Throws Error(invalid_argument, "video") for a wrong rank or channel count, no frames, or a
  // height / width that is not a multiple of the spatial factor.
  torch::Tensor encode(const torch::Tensor& video,
                       const std::optional<at::Generator>& sample_with = std::nullopt);
  // Normalised latent [B, latent, T', h, w] -> video [B, 3, num_frames, s·h, s·w] in about [-1, 1].
  // Throws Error(invalid_argument, "latent") for a wrong rank or channel count, and
  // Error(invalid_argument, "num_frames") unless latent_frames(num_frames) == T'.
  torch::Tensor decode(const torch::Tensor& latent, int64_t num_frames);

  // Latent frames encode() gives for `frames` video frames: ceil(frames / f). Throws
  // Error(invalid_argument, "frames") when frames < 1.
  int64_t latent_frames(int64_t frames) const;
  // The most video frames decode() gives for `latent_frames` latents: f · latent_frames (any
  // num_frames in (f · (latent_frames - 1), f · latent_frames] is accepted).
  int64_t video_frames(int64_t latent_frames) const;

  // (z - shift) / scale, in torch's promoted dtype as the reference computes it.
  torch::Tensor normalize(const torch::Tensor& latent) const;
  // z · scale + shift with the buffers cast to the latent's dtype.
  torch::Tensor denormalize(const torch::Tensor& latent) const;

  // The spatial stage alone, on [B, 3, T, H, W] <-> scaled features [B, C, T, H/s, W/s], in micro
  // batches of micro_batch_size frames.
  torch::Tensor encode_spatial(const torch::Tensor& video);
  torch::Tensor decode_spatial(const torch::Tensor& features);

  const MugvVAEConfig& config() const { return config_; }

  MugvSpatialVAE spatial_vae{nullptr};
  MugvTemporalVAE temporal_vae{nullptr};
  torch::Tensor logvar;        // parameter []
  torch::Tensor scale, shift;  // buffers [1, latent, 1, 1, 1]

 private:
  torch::Tensor posterior(const torch::Tensor& moments,
                          const std::optional<at::Generator>& sample_with) const;
  MugvVAEConfig config_;
};
TORCH_MODULE(MugvVAE);

// The sampler's view of the released VAE (model/video_codec.h): frames as latent_frames() allows; an
// image-to-video result decodes the latents after the pinned first one and puts the image in front, as the
// release's pipeline does.
[[nodiscard]] std::shared_ptr<VideoCodec> make_video_codec(MugvVAE vae);

}  // namespace mugv
