// mugv model info --preset P [--frames F --size WxH] [--weights FILE]: what a model preset costs at a video
// size; with --weights, whether a DiT checkpoint (dit.pt, safetensors, ...) is that preset's shape.
#include "command.h"

#include "core/error.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/config.h"
#include "model/info.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

int run_model(const Invocation& inv) {
  const auto& v = inv.values;
  ModelPreset preset = load_model_preset(v.get_text("model.preset"));
  Size2D size = v.get_size2d("model.size");
  const int64_t frames = v.get_int("model.frames");
  ModelInfo info = describe(preset, frames, size.height, size.width);
  std::string weights_note;
  if (v.has("model.weights")) {
    // The checkpoint's shapes against the preset: an error naming the tensor that differs.
    const std::string path = v.get_text("model.weights");
    const WeightFiles files = WeightFiles::open(path);
    check_dit_matches_checkpoint(preset.dit, preset.name, shapes_of(files), path);
    weights_note = cat(path, " is a DiT of this preset's shape (", to_string(files.format()), ", ",
                       human_bytes(double(files.total_bytes())), ")");
  }
  nlohmann::json out = {
      {"preset", preset.name},
      {"frames", frames},
      {"width", size.width},
      {"height", size.height},
      {"parameters",
       {{"dit", info.dit_parameters},
        {"vae", info.vae_parameters},
        {"text", info.text_parameters},
        {"total", info.total_parameters}}},
      {"latent_shape", {info.latent_channels, info.latent_frames, info.latent_height, info.latent_width}},
      {"video_tokens", info.video_tokens},
      {"text_tokens", info.text_tokens},
      {"flops_per_token", info.flops_per_token},
      {"flops_per_sample", info.flops_per_sample}};
  if (!weights_note.empty()) out["weights"] = weights_note;
  if (inv.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  auto millions = [](int64_t n) { return double(n) / 1e6; };
  std::printf("model preset %s at %lldx%lld, %lld frames\n", preset.name.c_str(),
              static_cast<long long>(size.width), static_cast<long long>(size.height),
              static_cast<long long>(frames));
  std::printf("  parameters    DiT %.2f M, VAE %.2f M, text %.2f M, total %.2f M\n",
              millions(info.dit_parameters), millions(info.vae_parameters), millions(info.text_parameters),
              millions(info.total_parameters));
  std::printf("  latent        [%lld, %lld, %lld, %lld]\n", static_cast<long long>(info.latent_channels),
              static_cast<long long>(info.latent_frames), static_cast<long long>(info.latent_height),
              static_cast<long long>(info.latent_width));
  std::printf("  tokens        %lld video, %lld text\n", static_cast<long long>(info.video_tokens),
              static_cast<long long>(info.text_tokens));
  std::printf("  training      %.3g FLOP per video token, %.3g FLOP per sample\n", info.flops_per_token,
              info.flops_per_sample);
  if (!weights_note.empty()) std::printf("  weights       %s\n", weights_note.c_str());
  return 0;
}

}  // namespace

Command model_info_command() {
  Command c;
  c.words = {"model", "info"};
  c.summary = "parameter counts, latent shape, tokens and FLOPs of a model preset";
  c.usage = "--preset P [--frames F --size WxH] [--weights DIT_FILE]";
  c.define = [](ParamRegistry& r) {
    r.add(param("model.preset", "--preset", ParamType::text, "tiny",
                "model preset (presets/models/NAME.toml)", "model"));
    auto frames = param("model.frames", "--frames", ParamType::integer, 17, "video frames", "model");
    frames.min_value = 1;
    r.add(frames);
    r.add(param("model.size", "--size", ParamType::size2d, "64x64", "video size WxH", "model"));
    r.add(param("model.weights", "--weights", ParamType::path, nullptr,
                "a DiT checkpoint to check against the preset (release tensor names)", "model"));
  };
  c.run = run_model;
  return c;
}

}  // namespace mugv::cli
