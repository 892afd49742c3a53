#pragma once
// Where the files of a released MUG-V model are, in a model folder as people download it:
//
//   DIR/dit.pt | dit.safetensors | dit.safetensors.index.json (+ shards) | dit/   the DiT (release names)
//   DIR/vae.pt | vae.safetensors | vae/                                          the video VAE
//   DIR/<t5 folder>/config.json, spiece.model, weights                         T5 v1.1 XXL, Hugging Face
//   layout
//
// The T5 folder is the first of t5/, text_encoder/, t5-v1_1-xxl/ that exists, else the one sub-folder whose
// config.json says model_type "t5". Installed models live under $MUGV_HOME/models/<name>/ (models_dir()).
// Torch-free: the CLI's `model list` and the studio's model picker read this without LibTorch.
// Pure functions over the file system; thread-safe.

#include "model/config.h"
#include "model/mugv_vae_config.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct ReleaseModelFiles {
  std::filesystem::path dir;
  std::filesystem::path dit;  // a file, an index json or a folder of shards (core/weight_files.h opens each)
  std::optional<std::filesystem::path> vae;
  std::optional<std::filesystem::path> text_encoder;  // the T5 folder
  std::optional<std::filesystem::path> tokenizer;     // spiece.model, in the T5 folder
  int64_t bytes = 0;                                  // every file under dir
};

// Finds the files of the model in `dir`. Throws Error(not_found) naming `dir` when it is not a folder or
// holds no DiT weights (listing the names looked for).
[[nodiscard]] ReleaseModelFiles find_release_model(const std::filesystem::path& dir);

// What the folder lacks to be used ("no vae.pt or vae.safetensors; no spiece.model in DIR/t5"); empty when it
// has every part.
[[nodiscard]] std::string missing_parts(const ReleaseModelFiles& files);
// Throws Error(not_found) naming the folder and what it lacks (missing_parts) unless it has every part.
void require_complete(const ReleaseModelFiles& files);

// The model as a preset, read from the files' headers and T5's config.json (no tensor is read): DiT from the
// checkpoint's shapes (no learned null caption, 300 text tokens), T5 from its config.json, the VAE's
// compression and latent channels; named after the folder. `vae` receives the VAE's configuration. Throws
// Error(not_found) naming the folder and what it lacks, Error(invalid_argument) when the parts do not fit
// each other (text width, latent channels), and the errors of the shape readers naming file and tensor.
[[nodiscard]] ModelPreset release_preset(const ReleaseModelFiles& files, MugvVAEConfig* vae = nullptr);

// The latent cache name of a dataset encoded with the model's VAE ("release-<folder>"): where `mugv encode
// --model` writes and a fine-tune of the model reads (train/latent_cache.h latent_cache_dir).
[[nodiscard]] std::string release_latent_cache_name(const ReleaseModelFiles& files);
// A released model named on the command line: a folder, or the name of one under models_dir(). Throws as
// find_release_model, naming what was given.
[[nodiscard]] ReleaseModelFiles resolve_release_model(const std::string& name_or_dir);

// $MUGV_HOME/models (core/paths.h).
[[nodiscard]] std::filesystem::path models_dir();

struct InstalledModel {
  std::string name;  // the folder's name
  ReleaseModelFiles files;
  std::string
      problem;  // why it cannot be used as it is ("no vae.pt or vae.safetensors"); empty when complete
  std::optional<DiTConfig> dit;  // read from the DiT checkpoint's shapes; nullopt when it cannot be read
  int64_t dit_bytes = 0;         // the DiT's tensor bytes
  std::string dit_error;         // why the DiT could not be read
  // The whole model as a preset (release_preset) when the folder is complete and its parts fit; else why not.
  std::optional<ModelPreset> preset;
  std::string preset_error;
};
// Every sub-folder of `root` that holds DiT weights, sorted by name, with its DiT described from the
// checkpoint's header (no tensor is read); others are skipped. Missing root: empty.
[[nodiscard]] std::vector<InstalledModel> list_installed_models(const std::filesystem::path& root);
// {"name", "path", "bytes", "complete", "problem"?, "latent_cache", "dit": {"parameters", "hidden", "depth",
// "heads", "latent_channels", "text_dim", "bytes"} or {"error"}, "preset": {...} or "preset_error"}: what
// `mugv model list --json` prints and the server's list_models reply carries. "complete" means the model can
// be used: every part is there and they fit each other (a preset was read).
[[nodiscard]] nlohmann::json to_json(const InstalledModel& model);

// A released model's preset as JSON ({"name", "dit": {every DiTConfig field}, "vae": {"latent_channels",
// "compress": [t, h, w], "parameters"}, "text": {"kind", "vocab_size", "dim", "layers", "heads", "head_dim",
// "ff_dim", "max_tokens"}}), and back: the planner's input for a model that has no preset file (the studio
// plans a fine-tune of an installed model from the server's list_models reply). Throws Error(format) naming
// `subject` and the key that is missing or wrong, Error(invalid_argument) for an inconsistent DiT.
[[nodiscard]] nlohmann::json release_preset_json(const ModelPreset& preset);
[[nodiscard]] ModelPreset release_preset_from_json(const nlohmann::json& json, const std::string& subject);

}  // namespace mugv
