#include "job_params.h"

#include "core/error.h"
#include "model/config.h"
#include "model/info.h"

#include <cmath>

namespace mugv::studio {

JobRequest make_job(std::string kind, std::vector<std::string> command, nlohmann::json values,
                    std::vector<std::string> positional) {
  return {std::move(kind), {{"command", std::move(command)}, {"values", std::move(values)}, {"positional", std::move(positional)}}};
}

std::string validate(const GenerateForm& f) {
  if (f.run.empty()) return "run: choose a trained DiT run";
  if (f.prompt.find_first_not_of(" \t\n") == std::string::npos) return "prompt: write what the video should show";
  if (f.steps < 1 || f.steps > 1000) return "steps: between 1 and 1000";
  if (f.cfg < 0 || f.cfg > 30) return "CFG: between 0 and 30";
  if (f.width < 16 || f.height < 16 || f.width % 16 || f.height % 16) return "size: width and height must be multiples of 16";
  if (f.frames < 1) return "frames: at least 1";
  if (f.out.empty()) return "output: choose where the video is written";
  return {};
}

JobRequest generate_job(const GenerateForm& f) {
  nlohmann::json values = {{"generate.run", f.run},       {"generate.prompt", f.prompt}, {"generate.seed", f.seed},
                           {"generate.steps", f.steps},   {"generate.cfg", f.cfg},       {"generate.frames", f.frames},
                           {"generate.size", std::to_string(f.width) + "x" + std::to_string(f.height)},
                           {"generate.fps", f.fps},       {"generate.out", f.out}};
  if (!f.negative.empty()) values["generate.negative"] = f.negative;
  if (!f.image.empty()) values["generate.image"] = f.image;
  return make_job("generate", {"generate"}, values);
}

std::string validate(const TrainForm& f) {
  if (f.run.empty() || f.run.find('/') != std::string::npos) return "run name: a name without '/'";
  if (f.dataset.empty()) return "dataset: choose a dataset";
  if (f.vae_run.empty()) return "VAE run: choose the VAE whose latents the DiT learns (train one first)";
  if (f.steps < 1) return "steps: at least 1";
  if (f.batch < 1) return "batch: at least 1";
  return {};
}

JobRequest train_job(const TrainForm& f) {
  nlohmann::json values = {{"train.preset", f.train_preset}, {"train.model", f.model}, {"train.dataset", f.dataset},
                           {"train.vae_run", f.vae_run},     {"train.run", f.run},     {"train.steps", f.steps},
                           {"train.batch", f.batch},         {"train.sample_every", f.sample_every}};
  if (!f.sample_prompts.empty()) values["train.sample_prompts"] = f.sample_prompts;
  return make_job("train", {"train"}, values);
}

JobRequest make_starter_job(const std::string& out_dir, int count) {
  return make_job("make_dataset", {"make-dataset"},
                  {{"dataset.out", out_dir}, {"dataset.count", count}}, {"shapes"});
}

JobRequest import_job(const std::string& input, const std::string& dataset) {
  return make_job("import", {"dataset", "import"}, {{"dataset.name", dataset}}, {input});
}

JobRequest curate_job(const std::string& input, const std::string& dataset, const std::string& preset) {
  return make_job("curate", {"curate"}, {{"curate.dataset", dataset}, {"curate.preset", preset}}, {input});
}

JobRequest redecide_job(const std::string& dataset, const std::string& preset) {
  return make_job("curate", {"curate", "redecide"}, {{"curate.dataset", dataset}, {"curate.preset", preset}});
}

MemoryEstimate estimate_training_memory(const std::string& model_preset, int batch, int frames, int height, int width) {
  MemoryEstimate e;
  try {
    const ModelPreset preset = load_model_preset(model_preset);
    const ModelInfo info = describe(preset, frames, height, width);
    e.parameters = info.dit_parameters + info.text_parameters;
    // fp32 weights, gradients, two AdamW moments and the EMA: 20 bytes per parameter.
    const double weights = 20.0 * static_cast<double>(e.parameters);
    // Saved activations per block and token: about 34 hidden-sized fp32 tensors (attention, MLP, norms).
    const double tokens = static_cast<double>(info.video_tokens + info.text_tokens + 2);
    const double activations = 4.0 * 34.0 * tokens * preset.dit.hidden * preset.dit.depth * batch;
    e.gib = (weights + activations) / double(1u << 30) + 0.3;  // + runtime
  } catch (const Error& error) {
    e.problem = error.what();
  }
  return e;
}

}  // namespace mugv::studio
