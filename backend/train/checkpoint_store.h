#pragma once
// The checkpoints of a run on disk (DESIGN.md "Data on disk"):
//   <run>/checkpoints/step-<N>/   model.safetensors, ema.safetensors, optimizer state, RNG and data-cursor
//                                 state ... (whatever the trainer writes) plus manifest.json listing every
//                                 file with its size and SHA-256
//   <run>/checkpoints/latest      text file naming the newest complete checkpoint ("step-<N>")
// A checkpoint becomes visible only by an atomic rename of a fully written and fsynced staging folder, so a
// crash or kill at any moment leaves either the previous set or the new one, never a half checkpoint.
// Loading verifies the manifest; a damaged checkpoint (missing file, wrong size, bad SHA-256, truncated) is
// refused with its reason and the newest older good one is used instead.
//
// Torch-free: the trainer writes tensors with core/safetensors.h into the staging folder. Not thread-safe;
// one committer per run (the trainer's rank 0; other ranks only write files into its staging folder).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mugv {

namespace fs = std::filesystem;

struct CheckpointRef {
  int64_t step = 0;
  fs::path dir;
  nlohmann::json metadata;  // what the trainer passed to commit() (preset, loss, layout, ...)
};

struct CheckpointProblem {
  fs::path dir;
  std::string reason;
};

class CheckpointStore {
 public:
  explicit CheckpointStore(fs::path checkpoints_dir);

  const fs::path& dir() const { return dir_; }

  // A fresh, empty staging folder for `step` inside the checkpoints folder (same file system, so the
  // final rename is atomic). Leftover staging folders of crashed writers are removed here. The folder is
  // named after `writer_tag` (default: this process id); the ranks of one multi-rank run pass the same tag
  // so that every rank finds the folder (staging_path) and writes its own files into it before rank 0
  // commits.
  [[nodiscard]] fs::path begin(int64_t step, const std::string& writer_tag = {});
  [[nodiscard]] fs::path staging_path(int64_t step, const std::string& writer_tag = {}) const;
  // Hashes every file in `staging`, writes manifest.json, fsyncs, renames it to step-<N> (replacing an
  // older checkpoint of the same step) and points `latest` at it. Returns the committed checkpoint.
  CheckpointRef commit(const fs::path& staging, int64_t step, const nlohmann::json& metadata);

  // Checkpoints on disk by step (ascending), without verifying them.
  [[nodiscard]] std::vector<CheckpointRef> list() const;
  // Verifies a checkpoint against its manifest; nullopt when it is good, else the reason.
  [[nodiscard]] std::optional<std::string> verify(const fs::path& checkpoint_dir) const;
  // The newest checkpoint that verifies, starting from `latest`; each refused one is reported through
  // `on_problem` (and skipped). nullopt when there is no good checkpoint.
  [[nodiscard]] std::optional<CheckpointRef> latest_good(
      const std::function<void(const CheckpointProblem&)>& on_problem = nullptr) const;
  // Reads one checkpoint, verifying it; throws Error(corrupt) naming the folder and the reason when bad,
  // Error(not_found) when absent.
  [[nodiscard]] CheckpointRef open(int64_t step) const;
  // Keeps the newest `keep_last` checkpoints (and always the one `latest` names); returns how many were
  // removed.
  int prune(int keep_last);

  static std::string step_dir_name(int64_t step);

 private:
  fs::path dir_;
};

}  // namespace mugv
