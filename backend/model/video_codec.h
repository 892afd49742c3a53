#pragma once
// What sampling needs of a video autoencoder, whichever architecture it is: the studio's own VideoVAE
// (model/vae.h, trained from scratch) or the released MUG-V VAE (model/mugv_vae.h). Latents at this
// interface are normalised (per-channel statistics applied), as the DiT sees them.
//
// Not thread-safe: one call at a time, like the modules behind it.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace mugv {

class VideoCodec {
 public:
  virtual ~VideoCodec() = default;

  virtual int64_t latent_channels() const = 0;
  virtual int compress_t() const = 0;
  virtual int compress_h() const = 0;
  virtual int compress_w() const = 0;
  // Latent frames for `frames` video frames. Throws Error(invalid_argument, "frames") for a count the
  // codec cannot produce.
  virtual int64_t latent_frames(int64_t frames) const = 0;

  // Video [B, 3, T, H, W] in [-1, 1] -> normalised latent (the posterior mean).
  virtual torch::Tensor encode(const torch::Tensor& video) = 0;
  // Normalised latent -> video [B, 3, frames, H, W] in about [-1, 1].
  virtual torch::Tensor decode(const torch::Tensor& latent, int64_t frames) = 0;
  virtual torch::Tensor denormalize(const torch::Tensor& latent) const = 0;

  // How an image-to-video result becomes frames. True: the latents after the pinned first one are decoded
  // to frames - 1 frames and the conditioning image is put in front (the release's pipeline). False: the
  // whole latent is decoded to `frames` frames.
  virtual bool decodes_after_condition_frame() const = 0;

  // The module behind it (to move it to a device, switch it to eval, count its parameters).
  virtual torch::nn::Module& module() = 0;
};

}  // namespace mugv
