#include "model/release_weights.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/weights.h"

namespace mugv {
namespace {

void require_complete(const ReleaseModelFiles& files) {
  std::string missing;
  auto lack = [&](const std::string& what) { missing += (missing.empty() ? "" : "; ") + what; };
  if (!files.vae) lack("no vae.pt or vae.safetensors");
  if (!files.text_encoder)
    lack("no T5 folder (a sub-folder whose config.json says model_type t5)");
  else if (!files.tokenizer)
    lack("no spiece.model in " + files.text_encoder->string());
  if (!missing.empty()) throw Error(ErrorCode::not_found, files.dir.string(), missing);
}

}  // namespace

ModelPreset release_preset(const ReleaseModelFiles& files, MugvVAEConfig* vae_out) {
  require_complete(files);
  const WeightFiles dit_files = WeightFiles::open(files.dit);
  const WeightFiles vae_files = WeightFiles::open(*files.vae);
  ModelPreset p;
  p.name = files.dir.filename().string();
  p.description = "released MUG-V model in " + files.dir.string();
  p.dit = dit_config_from_checkpoint(shapes_of(dit_files), kReleaseTextTokens, files.dit.string());
  const MugvVAEConfig vae = mugv_vae_config_from_shapes(shapes_of(vae_files));
  const std::filesystem::path t5_config = *files.text_encoder / "config.json";
  p.text = t5_config_from_hf_json(read_json_file(t5_config), kReleaseTextTokens, t5_config.string());
  if (p.dit.text_dim != p.text.dim)
    throw Error(ErrorCode::invalid_argument, files.dit.string(),
                cat("y_embedder.y_proj.fc1.weight reads text of width ", p.dit.text_dim, "; ",
                    t5_config.string(), " has d_model ", p.text.dim));
  if (p.dit.in_channels != vae.latent_channels)
    throw Error(ErrorCode::invalid_argument, files.dit.string(),
                cat("x_embedder.proj.weight takes ", p.dit.in_channels, " latent channels; ",
                    files.vae->string(), " has ", vae.latent_channels));
  p.vae.latent_channels = static_cast<int>(vae.latent_channels);
  p.vae.compress_t = static_cast<int>(vae.temporal_factor());
  p.vae.compress_h = p.vae.compress_w = static_cast<int>(vae.spatial_factor());
  if (vae_out) *vae_out = vae;
  return p;
}

void load_release_dit(const ReleaseModelFiles& files, DiTImpl& dit) {
  (void)load_module(dit, WeightFiles::open(files.dit), {}, UnexpectedTensors::error);
}

void load_release_text(const ReleaseModelFiles& files, TextEncoderBase& text) {
  require_complete(files);
  auto* t5 = dynamic_cast<T5EncoderImpl*>(&text);
  if (!t5) throw Error(ErrorCode::internal, files.dir.string(), "the released model's text encoder is T5");
  // A Hugging Face T5 folder may hold the whole encoder-decoder; only the encoder's tensors are read.
  (void)load_t5_encoder(*t5, *files.text_encoder);
}

std::shared_ptr<VideoCodec> load_release_codec(const ReleaseModelFiles& files) {
  require_complete(files);
  const WeightFiles vae_files = WeightFiles::open(*files.vae);
  MugvVAE vae(mugv_vae_config_from_shapes(shapes_of(vae_files)));
  (void)load_module(*vae, vae_files, {}, UnexpectedTensors::error);
  return make_video_codec(vae);
}

}  // namespace mugv
