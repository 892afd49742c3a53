#pragma once
// The parts of a released MUG-V model folder (model/release_files.h) as this project's modules, shared by
// sampling (sample/release_model.h) and fine-tuning (train/fine_tune.h): the configuration read from the
// files' shapes and T5's config.json, the DiT and T5 encoder weights, and the VAE as a codec.
//
// Errors name the folder or file: Error(not_found) for a part the folder lacks (VAE, T5 folder,
// spiece.model), Error(invalid_argument) when the parts do not fit each other (text width, latent channels),
// and the errors of model/weights.h for tensors that do not fit. Not thread-safe (torch modules).

#include "core/presets.h"
#include "model/dit.h"
#include "model/mugv_vae.h"
#include "model/release_files.h"
#include "model/text_encoder.h"
#include "model/video_codec.h"

#include <memory>

namespace mugv {

// The model as a preset: release_preset (model/release_files.h).
// The DiT's weights (release tensor names) into `dit`; the T5 encoder's into `text` (a T5 encoder).
void load_release_dit(const ReleaseModelFiles& files, DiTImpl& dit);
void load_release_text(const ReleaseModelFiles& files, TextEncoderBase& text);
// The VAE, loaded, as a codec (normalised latents), on the CPU in fp32.
[[nodiscard]] std::shared_ptr<VideoCodec> load_release_codec(const ReleaseModelFiles& files);

}  // namespace mugv
