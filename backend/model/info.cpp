#include "model/info.h"

#include "core/error.h"

#include <algorithm>
#include <string>

namespace mugv {

int64_t vae_latent_frames(const VAEConfig& vae, int64_t frames) {
  const int64_t ct = vae.compress_t;
  if (frames <= 0) throw Error(ErrorCode::invalid_argument, "frames", "frames must be positive");
  if (frames % ct == 0) return frames / ct;
  if (ct > 1 && frames % ct == 1) return (frames - 1) / ct + 1;
  throw Error(ErrorCode::invalid_argument, "frames",
              "frames " + std::to_string(frames) + " is not a multiple of " + std::to_string(ct) +
                  ", nor a multiple plus 1");
}

ModelInfo describe(const ModelPreset& preset, int64_t frames, int64_t height, int64_t width) {
  const VAEConfig& vae = preset.vae;
  if (height <= 0 || height % vae.compress_h != 0) {
    throw Error(
        ErrorCode::invalid_argument, "height",
        "height " + std::to_string(height) + " is not a multiple of " + std::to_string(vae.compress_h));
  }
  if (width <= 0 || width % vae.compress_w != 0) {
    throw Error(ErrorCode::invalid_argument, "width",
                "width " + std::to_string(width) + " is not a multiple of " + std::to_string(vae.compress_w));
  }
  ModelInfo info;
  info.dit_parameters = dit_parameter_count(preset.dit);
  info.vae_parameters =
      preset.released_vae_parameters ? *preset.released_vae_parameters : vae_parameter_count(vae);
  info.text_parameters = text_encoder_parameter_count(preset.text);
  info.total_parameters = info.dit_parameters + info.vae_parameters + info.text_parameters;
  info.latent_channels = vae.latent_channels;
  info.latent_frames = vae_latent_frames(vae, frames);
  info.latent_height = height / vae.compress_h;
  info.latent_width = width / vae.compress_w;
  info.video_tokens = dit_video_tokens(preset.dit, info.latent_frames, info.latent_height, info.latent_width);
  info.text_tokens = preset.dit.text_tokens;
  info.flops_per_token = dit_flops_per_token(preset.dit, info.video_tokens, info.text_tokens);
  info.flops_per_sample = info.flops_per_token * static_cast<double>(info.video_tokens);
  return info;
}

int64_t InferenceMemory::peak_bytes() const {
  return std::max(sample_phase_bytes(), decode_phase_bytes());
}

InferenceMemory estimate_inference_memory(const InferenceMemoryInput& in) {
  const DiTConfig& c = in.dit;
  InferenceMemory m;
  const int64_t dit_parameters = dit_parameter_count(c);
  m.dit_weight_bytes = dit_parameters * in.weight_bytes;
  if (in.block_swap && c.depth > 2) {
    DiTConfig one_block = c;
    one_block.depth = 1;
    DiTConfig no_blocks = c;
    no_blocks.depth = 0;
    const int64_t block = dit_parameter_count(one_block) - dit_parameter_count(no_blocks);
    m.dit_resident_weight_bytes = (dit_parameters - (c.depth - 2) * block) * in.weight_bytes;
  } else {
    m.dit_resident_weight_bytes = m.dit_weight_bytes;
  }
  m.vae_weight_bytes = in.vae_parameters * in.weight_bytes;
  m.text_weight_bytes = in.text_parameters * in.weight_bytes;

  const int64_t batch = 2;  // classifier-free guidance: conditional and unconditional in one forward
  const int64_t tokens = dit_video_tokens(c, in.latent_frames, in.latent_height, in.latent_width) + 2;
  const int64_t token_width = batch * tokens * c.hidden;
  int64_t activations = 10 * token_width;
  // Without a fused kernel, the scores and probabilities of self- and cross-attention are materialised.
  if (!in.fused_attention) activations += 2 * batch * c.heads * tokens * (tokens + in.text_tokens);
  m.dit_activation_bytes = activations * in.activation_bytes;
  m.vae_activation_bytes =
      int64_t(in.vae_micro_frames) * in.height * in.width * 128 * 6 * in.activation_bytes;
  return m;
}

}  // namespace mugv
