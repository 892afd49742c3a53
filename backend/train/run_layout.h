#pragma once
// Where a run keeps its files: the single place that knows the layout, shared by the trainer (writer),
// the sampler and the service (readers). Torch-free. All paths are under $MUGV_HOME/runs/<name>/:
//
//   run.json                 RunManifest below (kind, preset, dataset, the VAE run a DiT run uses, config)
//   tokenizer.model          SentencePiece model trained on the captions (DiT runs, small text encoder)
//   metrics.jsonl            one JSON object per training step (train/step_log.h)
//   samples/step-<N>/        videos rendered during training (fixed prompts and seeds): sample-<i>.mp4
//                            (train/run_samples.h)
//   checkpoints/             CheckpointStore (checkpoint_store.h); each step-<N>/ holds
//       model.safetensors      weights (DiT runs: "dit.*" and "text.*"; VAE runs: "vae.*")
//       ema.safetensors        online EMA of the same weights (DiT runs)
//       optimizer.safetensors  optimizer state
//       trainer_state.json     step, RNG states, data cursor, lr schedule position
//   latent_stats.json        VAE runs: per-channel latent mean/std measured on the dataset
//   latent_rgb.json          VAE runs: linear latent -> RGB map for cheap live previews

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mugv {

namespace fs = std::filesystem;

enum class RunLayoutKind { unknown = 0, dit, vae };
const char* to_string(RunLayoutKind kind);
std::optional<RunLayoutKind> run_layout_kind_from_string(const std::string& name);

struct RunManifest {
  std::string name;
  RunLayoutKind kind = RunLayoutKind::unknown;
  std::string preset;                                // model preset (presets/models/<preset>.toml)
  std::string dataset;                               // catalog dataset it trains on
  std::string vae_run;                               // DiT runs: the VAE run whose latents it learns
  nlohmann::json config = nlohmann::json::object();  // resolved parameters (ParamValues::to_json)
};

struct RunPaths {
  fs::path root;
  fs::path manifest() const { return root / "run.json"; }
  fs::path tokenizer() const { return root / "tokenizer.model"; }
  fs::path metrics() const { return root / "metrics.jsonl"; }
  fs::path samples() const { return root / "samples"; }
  fs::path checkpoints() const { return root / "checkpoints"; }
  // Post-hoc EMA snapshots (train/posthoc_ema.h), committed like checkpoints, never pruned.
  fs::path ema_snapshots() const { return root / "ema_snapshots"; }
  fs::path latent_stats() const { return root / "latent_stats.json"; }
  fs::path latent_rgb() const { return root / "latent_rgb.json"; }
};

// $MUGV_HOME/runs/<name>; throws Error(invalid_argument) for a name that is empty or not [A-Za-z0-9._-]+.
RunPaths run_paths(const std::string& name);

nlohmann::json to_json(const RunManifest& manifest);
RunManifest run_manifest_from_json(const nlohmann::json& json, const std::string& subject);
void write_run_manifest(const RunPaths& paths, const RunManifest& manifest);
// Error(not_found) naming the run (and listing known runs) when absent; Error(format) when unreadable.
RunManifest read_run_manifest(const RunPaths& paths);

// Names of the runs under $MUGV_HOME/runs, sorted.
std::vector<std::string> list_run_names();

// "step-<N>": the folder of one step, for checkpoints and training samples alike.
std::string step_dir_name(int64_t step);
// N of a "step-<N>" folder name; nullopt for any other name.
std::optional<int64_t> step_from_dir_name(const std::string& name);
// Latent caches (train/latent_cache.h) live beside the dataset they encode, one folder per encoder:
//   $MUGV_HOME/datasets/<dataset>/cache/<vae run or released model>/clip-<clip id>.safetensors
// Throws Error(invalid_argument) for a dataset or run name that is not one path component (core/names.h).
fs::path latent_cache_dir(const std::string& dataset, const std::string& vae_run);
fs::path latent_cache_entry(const fs::path& cache_dir, int64_t clip_id);
[[nodiscard]] bool is_latent_cache_entry(const fs::path& file);
// The dataset's caches by the name of their encoder, each with its number of entries (files counted, none
// read); empty when it has none, or when the name cannot be a folder's.
[[nodiscard]] std::map<std::string, int64_t> list_latent_caches(const std::string& dataset);

}  // namespace mugv
