#pragma once
// The base a fine-tune starts from (`mugv train --from RUN`): one checkpoint of a DiT run, its EMA or
// training weights, identified by the SHA-256 its checkpoint manifest records for that weights file. A
// fine-tune run stores this identity in its config ("base": {"run", "step", "weights", "sha256"}), so a
// resume, a sampler or `mugv lora` finds exactly the same base again, and refuses one whose bytes changed.
// The base's model preset, tokenizer and VAE run become the fine-tune's (the latents and prompts must mean
// the same).
//
// Full fine-tune: every weight starts from the base and trains. LoRA (`--lora SPEC`, model/lora.h): the base
// is frozen and only the adapters train and are saved; checkpoints then hold "dit.<module>.lora_A.weight" /
// ".lora_B.weight" (the PEFT names under the base's module names) with lora_alpha in their metadata.
// Not thread-safe (torch modules).

#include "model/run_models.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace mugv {

struct BaseModel {
  std::string run;                // a run of this project, or:
  std::filesystem::path release;  // a released model folder
  bool is_release() const { return !release.empty(); }
  int64_t step = 0;
  WeightSet weights = WeightSet::ema;
  std::string sha256;  // of the weights file, from the checkpoint manifest
  RunManifest manifest;
  fs::path checkpoint_dir;
  fs::path weights_file() const;
};

// `name` as --from gives it: a run of that name, else a released model folder or installed model name. Throws
// Error(not_found) naming it when it is neither, and the errors below.
[[nodiscard]] BaseModel find_base(const std::string& name, WeightSet weights);
// "run R at step N (ema)" or "the released model in DIR", for logs and messages.
[[nodiscard]] std::string describe(const BaseModel& base);
// The base's model as a preset (a run's preset, or the released model's, model/release_weights.h).
[[nodiscard]] ModelPreset base_preset(const BaseModel& base);
// The latent cache (train/latent_cache.h) a fine-tune of `base` learns: its VAE run's, or the released
// model's.
[[nodiscard]] std::string base_latent_cache(const BaseModel& base);
// The tokenizer file of the base (a run's tokenizer.model, a released model's spiece.model).
[[nodiscard]] std::filesystem::path base_tokenizer(const BaseModel& base);

// Run `run` at checkpoint `step` (its latest good one when nullopt) with `weights` (ema, or model = the
// training weights). Throws Error(not_found) naming the run when it has no usable checkpoint or lacks those
// weights, Error(invalid_argument) for a VAE run or a run that is itself a LoRA run (merge it first).
[[nodiscard]] BaseModel find_base_model(const std::string& run, WeightSet weights,
                                        std::optional<int64_t> step = std::nullopt);

// The identity stored in a fine-tune's config, and back: the same checkpoint, checked against the recorded
// SHA-256 (Error(conflict) naming the checkpoint when its weights changed or it was deleted, with what to
// do).
[[nodiscard]] nlohmann::json to_json(const BaseModel& base);
[[nodiscard]] BaseModel base_model_from_json(const nlohmann::json& json, const std::string& subject);
// The base recorded in a run's config, if it is a fine-tune.
[[nodiscard]] std::optional<BaseModel> base_of_run(const RunManifest& manifest);
// The released model folder a run's config names as its base, read from the config alone (no file is opened
// or checked: base_of_run does that).
[[nodiscard]] std::optional<std::filesystem::path> released_base_dir(const RunManifest& manifest);
// The LoRA settings a run trains with (config train.lora), if it is a LoRA run.
[[nodiscard]] std::optional<std::string> lora_spec_of_run(const RunManifest& manifest);

// Loads the base's weights into `dit` and `text` (the text encoder from the training weights when the EMA
// file lacks it). Call before adapters are attached. Errors of model/weights.h name the file and tensor.
void load_base_model(const BaseModel& base, const DiT& dit, const std::shared_ptr<TextEncoderBase>& text);

}  // namespace mugv
