#include "model/run_models.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "model/weights.h"
#include "train/checkpoint_store.h"

#include <algorithm>

namespace mugv {

DiTBundleImpl::DiTBundleImpl(const ModelPreset& preset) {
  dit = register_module("dit", DiT(preset.dit));
  text = register_module("text", make_text_encoder(preset.text));
}

VAEBundleImpl::VAEBundleImpl(const VAEConfig& config) {
  vae = register_module("vae", VideoVAE(config));
}

std::vector<std::pair<std::string, torch::Tensor>> named_parameters(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

const char* to_string(WeightSet set) {
  switch (set) {
    case WeightSet::model:
      return "model";
    case WeightSet::ema:
      return "ema";
    default:
      return "unknown";
  }
}

std::optional<WeightSet> weight_set_from_string(std::string_view name) {
  if (name == "model") return WeightSet::model;
  if (name == "ema") return WeightSet::ema;
  return std::nullopt;
}

std::optional<LatentStats> read_latent_stats(const RunPaths& paths) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.latent_stats(), ec)) return std::nullopt;
  auto j = read_json_file(paths.latent_stats());
  try {
    return LatentStats{j.at("mean").get<std::vector<double>>(), j.at("std").get<std::vector<double>>()};
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, paths.latent_stats().string(),
                cat("expected {\"mean\": [...], \"std\": [...]}: ", e.what()));
  }
}

void write_latent_stats(const RunPaths& paths, const LatentStats& stats) {
  write_json_atomic(paths.latent_stats(), {{"mean", stats.mean}, {"std", stats.std}});
}

void apply_latent_stats(VideoVAEImpl& vae, const RunPaths& paths) {
  auto stats = read_latent_stats(paths);
  if (!stats) return;
  const size_t channels = static_cast<size_t>(vae.config().latent_channels);
  if (stats->mean.size() != channels || stats->std.size() != channels)
    throw Error(ErrorCode::format, paths.latent_stats().string(),
                cat("holds ", stats->mean.size(), " channels; the VAE has ", channels));
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  vae.set_latent_stats(torch::tensor(stats->mean, opts), torch::tensor(stats->std, opts));
}

VAEBundle load_vae_run(const std::string& run_name, ModelPreset* preset_out) {
  RunPaths paths = run_paths(run_name);
  RunManifest manifest = read_run_manifest(paths);
  if (manifest.kind != RunLayoutKind::vae)
    throw Error(ErrorCode::invalid_argument, run_name,
                cat("is a ", to_string(manifest.kind), " run, not a VAE run"));
  ModelPreset preset = load_model_preset(manifest.preset);
  CheckpointStore store(paths.checkpoints());
  auto good = store.latest_good();
  if (!good)
    throw Error(ErrorCode::not_found, run_name,
                "the VAE run has no good checkpoint yet; train it with `mugv train-vae`");
  VAEBundle bundle(preset.vae);
  load_module(*bundle, good->dir / "model.safetensors");
  apply_latent_stats(*bundle->vae, paths);
  bundle->eval();
  if (preset_out) *preset_out = preset;
  return bundle;
}

RgbFrame to_rgb_frame(const torch::Tensor& image) {
  auto bytes = ((image.to(torch::kCPU, torch::kFloat).clamp(-1, 1) + 1) * 127.5)
                   .round()
                   .to(torch::kUInt8)
                   .permute({1, 2, 0})
                   .contiguous();
  RgbFrame f(static_cast<int>(bytes.size(1)), static_cast<int>(bytes.size(0)));
  std::copy(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel(), f.rgb.begin());
  return f;
}

std::vector<RgbFrame> video_to_frames(const torch::Tensor& video) {
  std::vector<RgbFrame> frames;
  for (int64_t i = 0; i < video.size(1); ++i) frames.push_back(to_rgb_frame(video.select(1, i)));
  return frames;
}

}  // namespace mugv
