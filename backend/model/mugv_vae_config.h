#pragma once
// The configuration of the released MUG-V video VAE (model/mugv_vae.h) and the tensors it implies, without
// LibTorch: what a checkpoint's shapes say about its layout is read here, so the server and the studio can
// describe a released model folder (model/release_files.h) without loading it. Plain values; pure functions.

#include "core/error.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mugv {

// Tensor-name prefixes of the two stages in the release's state dict.
inline constexpr const char* kMugvVaeSpatialPrefix = "spatial_vae.module.";
inline constexpr const char* kMugvVaeTemporalPrefix = "temporal_vae.";

// The release's per-channel latent statistics (MUGVAE's mean and std), 24 values each.
const std::vector<double>& mugv_release_latent_mean();
const std::vector<double>& mugv_release_latent_std();

struct MugvVAEConfig {
  // Spatial 2D autoencoder (diffusers AutoencoderKL config names in brackets).
  int64_t image_channels = 3;                                    // [in_channels] == [out_channels]
  std::vector<int64_t> spatial_channels = {128, 256, 512, 512};  // [block_out_channels]
  int64_t spatial_layers_per_block = 2;                          // [layers_per_block]
  int64_t spatial_latent_channels = 4;  // [latent_channels]: only the unused end convs see it
  int64_t spatial_groups = 32;          // [norm_num_groups]
  double spatial_scaling = 0.18215;     // applied to the mid-block features

  // Temporal 3D autoencoder; its input / output channels are spatial_channels.back().
  int64_t temporal_filters = 128;
  std::vector<int64_t> temporal_multipliers = {1, 2, 2, 4};
  int64_t temporal_res_blocks = 4;
  // Levels (all but the last) after which the encoder halves time, and those before which the
  // decoder doubles it with a conv + depth-to-space; the decoder's extra up block always doubles.
  // Both must give the same factor (the reference hard-codes encoder chunks of 8 frames).
  std::vector<bool> encoder_temporal_downsample = {true, true, true};
  std::vector<bool> decoder_temporal_upsample = {false, true, true};
  int64_t temporal_groups = 32;
  int64_t latent_channels = 24;

  // Pipeline.
  int64_t micro_frame_size = 48;  // spatial-latent frames a temporal pass; 0: the whole clip
  int64_t micro_batch_size = 4;   // frames a spatial pass; 0: all frames at once
  // Initial `shift` / `scale` buffer values (the checkpoint overwrites them); empty: 0 and 1.
  std::vector<double> latent_mean = mugv_release_latent_mean();
  std::vector<double> latent_std = mugv_release_latent_std();

  int64_t spatial_factor() const;   // 2^(levels - 1)
  int64_t temporal_factor() const;  // 2^(encoder downsamples)
  int64_t feature_channels() const { return spatial_channels.empty() ? 0 : spatial_channels.back(); }
  std::vector<int64_t> temporal_widths() const;  // of the temporal levels: filters x multiplier
};

bool operator==(const MugvVAEConfig& a, const MugvVAEConfig& b);
inline bool operator!=(const MugvVAEConfig& a, const MugvVAEConfig& b) {
  return !(a == b);
}

// Throws Error(invalid_argument, subject "mugv_vae.<field>") for an inconsistent config (a group
// count that does not divide a width, factors that differ, micro_frame_size not a multiple of the
// temporal factor, statistics of the wrong length, ...).
void validate(const MugvVAEConfig& config);

// Every tensor the module holds (parameters and buffers), by state-dict name, with its shape, in
// the order of the reference's state_dict(): logvar, scale, shift, spatial_vae.*, temporal_vae.*.
// Validates the config first.
std::vector<std::pair<std::string, std::vector<int64_t>>> mugv_vae_tensor_shapes(const MugvVAEConfig& config);

// The parameters and buffers of the module, counted from mugv_vae_tensor_shapes.
int64_t mugv_vae_parameter_count(const MugvVAEConfig& config);

// The config whose tensors a checkpoint holds. `shape_of` answers a tensor's shape by name, or
// nullopt when the checkpoint lacks it. Widths, level and block counts and the temporal up/down
// layout are read from the shapes; what shapes cannot tell (group counts, scaling, micro sizes) is
// taken from `base`, and so are the statistics when their count fits (else they are left empty:
// the checkpoint's buffers carry them). Every expected tensor is then checked: throws
// Error(invalid_argument) with the tensor's name as subject when one is missing or its shape does
// not fit.
MugvVAEConfig mugv_vae_config_from_shapes(
    const std::function<std::optional<std::vector<int64_t>>(const std::string& name)>& shape_of,
    const MugvVAEConfig& base = MugvVAEConfig{});

}  // namespace mugv
