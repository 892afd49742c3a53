#include "sample/release_model.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/compute.h"
#include "model/info.h"
#include "model/mugv_vae.h"
#include "model/release_files.h"
#include "model/release_weights.h"
#include "model/weights.h"

#include <torch/version.h>

namespace mugv {
namespace {

namespace fs = std::filesystem;

std::string gib(int64_t bytes) {
  return human_bytes(static_cast<double>(bytes));
}

// Decides whether the DiT runs with block swap, from the memory the generation needs and the device has.
bool choose_block_swap(const ModelBundle& b, const MugvVAEConfig& vae, const ReleaseLoadOptions& o,
                       torch::ScalarType dtype, const fs::path& dir) {
  if (o.offload == OffloadMode::blocks) return true;
  if (o.frames <= 0) return false;
  InferenceMemoryInput in;
  in.dit = b.preset.dit;
  in.vae_parameters = mugv_vae_parameter_count(vae);
  in.text_parameters = text_encoder_parameter_count(b.preset.text);
  const int64_t spatial = vae.spatial_factor(), temporal = vae.temporal_factor();
  in.latent_frames = (o.frames + temporal - 1) / temporal;
  in.latent_height = o.height / spatial;
  in.latent_width = o.width / spatial;
  in.height = o.height;
  in.width = o.width;
  in.text_tokens = ReleaseDefaults::text_tokens;
  in.weight_bytes = static_cast<int>(c10::elementSize(dtype));
  in.activation_bytes = in.weight_bytes;
  in.fused_attention = TORCH_VERSION_MAJOR >= 2 && o.device.is_cuda();
  const InferenceMemory whole = estimate_inference_memory(in);
  in.block_swap = true;
  const InferenceMemory swapped = estimate_inference_memory(in);

  const auto available = device_memory_available_bytes(o.device);
  if (!available) {
    log_warning(
        cat(dir.string(), ": cannot read the free memory of ", o.device.str(), "; not checking the fit"));
    return false;  // OffloadMode::blocks returned above
  }
  const auto usable = static_cast<int64_t>(0.9 * static_cast<double>(*available));  // allocator slack
  auto breakdown = [&](const InferenceMemory& m) {
    return cat(gib(m.peak_bytes()), " (DiT weights on the device ", gib(m.dit_resident_weight_bytes), ", T5 ",
               gib(m.text_weight_bytes), ", VAE ", gib(m.vae_weight_bytes), ", DiT activations ",
               gib(m.dit_activation_bytes), ", VAE decoding ", gib(m.vae_activation_bytes), ")");
  };
  const std::string video = cat(o.frames, " frames of ", o.width, "x", o.height);
  if (whole.peak_bytes() <= usable) return false;
  if (o.offload == OffloadMode::none)
    throw Error(ErrorCode::out_of_memory, dir.string(),
                cat(video, " on ", o.device.str(), " needs about ", breakdown(whole), "; ", gib(*available),
                    " is free. --offload blocks would need ", gib(swapped.peak_bytes()),
                    "; fewer frames or a smaller size need less"));
  if (swapped.peak_bytes() <= usable) {
    log_info(cat("the whole DiT does not fit ", o.device.str(), " (", gib(whole.peak_bytes()), " of ",
                 gib(*available), " free): streaming its blocks (block swap)"));
    return true;
  }
  throw Error(
      ErrorCode::out_of_memory, dir.string(),
      cat(video, " on ", o.device.str(), " needs about ", breakdown(swapped), " even with block swap; ",
          gib(*available), " is free. Fewer frames or a smaller size need less"));
}

}  // namespace

const char* release_negative_prompt() {
  return "ugly, blurry, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer "
         "digits, "
         "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
         "username, "
         "blurry";
}

std::string with_aesthetic_score(const std::string& prompt, double score) {
  char suffix[48];
  std::snprintf(suffix, sizeof suffix, " aesthetic score: %.1f.", score);
  return prompt + suffix;
}

ModelBundle load_release_model(const fs::path& dir, const ReleaseLoadOptions& o) {
  const ReleaseModelFiles files = find_release_model(dir);
  const torch::ScalarType dtype = o.dtype.value_or(o.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32);
  ModelBundle b;
  b.device = o.device;
  MugvVAEConfig vae_config;
  b.preset = release_preset(files, &vae_config);
  const bool block_swap = choose_block_swap(b, vae_config, o, dtype, dir);

  {
    DefaultDtypeScope in_dtype(dtype);
    b.dit = DiT(b.preset.dit);
    b.text = make_text_encoder(b.preset.text);
  }
  load_release_dit(files, *b.dit);
  load_release_text(files, *b.text);
  b.codec = load_release_codec(files);
  b.tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_file(*files.tokenizer));
  b.prompt_limit = TokenLimitPolicy::truncate;

  b.run.name = dir.filename().string();
  b.run.preset = "release";
  b.run.vae_run = files.vae->filename().string();
  b.weights = WeightsKind::model;
  b.shift_base_px = ReleaseDefaults::shift_base_px;
  set_default_latent_rgb(b, vae_config.latent_channels);

  b.dit->eval();
  b.text->eval();
  b.codec->module().eval();
  if (block_swap)
    b.dit->set_block_offload(std::make_shared<BlockOffload>(*b.dit, o.device));
  else
    b.dit->to(o.device);
  b.text->to(o.device);
  b.codec->module().to(o.device);
  b.latent_rgb_weight = b.latent_rgb_weight.to(o.device);
  b.latent_rgb_bias = b.latent_rgb_bias.to(o.device);
  log_info(cat(b.run.name, ": DiT ", human_bytes(double(WeightFiles::open(files.dit).total_bytes())), " (",
               b.preset.dit.depth, " blocks, hidden ", b.preset.dit.hidden, "), T5 ", b.preset.text.layers,
               " layers, on ", o.device.str(), " in ", c10::toString(dtype),
               block_swap ? ", block swap" : ""));
  return b;
}

}  // namespace mugv
