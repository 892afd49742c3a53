#pragma once
// Runs (one training or fine-tuning run, with its resolved config and directory runs/<id>/) and their
// checkpoints. A checkpoint is recorded only after its files were renamed into place, so every row
// points at a complete checkpoint. Deleting a run deletes its checkpoint rows (not the files);
// generations keep their settings with run and checkpoint set to none.
// Writes run in their own write transaction or join the caller's.

#include "catalog/catalog.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class RunKind { unknown = 0, pretrain, finetune, lora, preference, vae };
enum class RunState { unknown = 0, created, running, paused, succeeded, failed, cancelled };

const char* to_string(RunKind kind);
std::optional<RunKind> run_kind_from_string(std::string_view name);
const char* to_string(RunState state);
std::optional<RunState> run_state_from_string(std::string_view name);

struct Run {
  int64_t id = 0;
  std::string name;  // unique, non-empty
  RunKind kind = RunKind::unknown;
  std::string preset;  // model size preset, e.g. "tiny"
  std::optional<int64_t> dataset_id;
  nlohmann::json config = nlohmann::json::object();  // the resolved configuration
  RunState state = RunState::created;
  fs::path dir;
  int64_t created_at_ms = 0;
};

struct Checkpoint {
  int64_t id = 0;
  int64_t run_id = 0;
  int64_t step = 0;
  fs::path path;       // the step-<N> directory
  std::string sha256;  // of the manifest
  int64_t created_at_ms = 0;
};

// Stores the run (id and created_at_ms assigned). Error(conflict) when the name is taken,
// Error(invalid_argument) for an empty name or unknown kind, Error(not_found) for a missing dataset.
[[nodiscard]] Run create_run(Catalog& catalog, Run run);
[[nodiscard]] std::optional<Run> get_run(Catalog& catalog, int64_t id);
[[nodiscard]] std::optional<Run> find_run(Catalog& catalog, std::string_view name);
// Runs with `state` (all when nullopt), newest first.
[[nodiscard]] std::vector<Run> list_runs(Catalog& catalog, std::optional<RunState> state = std::nullopt);
void set_run_state(Catalog& catalog, int64_t id, RunState state);
void set_run_config(Catalog& catalog, int64_t id, const nlohmann::json& config);
bool delete_run(Catalog& catalog, int64_t id);

// Error(conflict) when the run already has a checkpoint at that step, Error(not_found) for a missing run.
[[nodiscard]] Checkpoint add_checkpoint(Catalog& catalog, Checkpoint checkpoint);
// The run's checkpoints by ascending step; empty when it has none.
[[nodiscard]] std::vector<Checkpoint> list_checkpoints(Catalog& catalog, int64_t run_id);
// The checkpoint with the highest step; nullopt when the run has none (start from scratch).
[[nodiscard]] std::optional<Checkpoint> latest_checkpoint(Catalog& catalog, int64_t run_id);
bool delete_checkpoint(Catalog& catalog, int64_t id);

}  // namespace mugv
