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

}  // namespace mugv
