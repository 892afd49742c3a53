#pragma once
// Megatron-LM's checkpoint folders around a torch_dist checkpoint (dist_checkpoint.h): the files that make a
// torch.distributed.checkpoint folder one Megatron's training loads. Sources: Megatron-LM
// megatron/core/dist_checkpointing/core.py (CheckpointingConfig, metadata.json), strategies/common.py
// (common.pt), megatron/training/checkpointing.py (tracker file, folder names, what load_checkpoint reads).
//
//   <root>/latest_checkpointed_iteration.txt   "<iteration>" (> 0) or "release" (read_metadata accepts
//                                               nothing else)
//   <root>/iter_<iteration as 7 digits>/  or  <root>/release/
//       metadata.json   CheckpointingConfig as JSON, exactly its four fields (it is rebuilt with
//                       CheckpointingConfig(**json), so any other key fails the load):
//                       {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
//                        "common_backend": "torch", "common_backend_version": 1}
//       common.pt       torch.save of the state that is not sharded; load_common raises without it.
//                       load_checkpoint reads 'args' (an argparse.Namespace; for torch_dist it needs
//                       args.tensor_model_parallel_size and .pipeline_model_parallel_size, and, unless
//                       --finetune, num_layers, hidden_size, num_attention_heads for check_checkpoint_args),
//                       'checkpoint_version' (3.0) and 'iteration'; the rest is optional
//       .metadata, __<rank>_<n>.distcp   the sharded tensors and objects
// A release checkpoint (tracker "release") is loaded as weights only: iteration 0, no optimizer, no RNG
// state; an iteration checkpoint is skipped for those when its args say no_save_optim / no_save_rng.
//
// Errors name the file: Error(not_found) for a missing folder or file, Error(format) for a metadata.json,
// tracker or common.pt that is not what Megatron writes, Error(io) for disk failures. Files are written
// atomically. Pure functions of the disk; thread-safe for distinct folders.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace mugv {

struct MegatronCheckpointConfig {
  std::string sharded_backend = "torch_dist";
  int sharded_backend_version = 1;
  std::string common_backend = "torch";
  int common_backend_version = 1;
};
// metadata.json of checkpoint folder `dir`; nullopt when there is none (not a Megatron dist checkpoint).
[[nodiscard]] std::optional<MegatronCheckpointConfig> read_megatron_config(const std::filesystem::path& dir);
void write_megatron_config(const std::filesystem::path& dir,
                           const MegatronCheckpointConfig& config = MegatronCheckpointConfig{});

// What common.pt records of the run, as far as this project uses it. Fields the file lacks stay 0.
struct MegatronCommonState {
  bool has_args = false;
  int64_t iteration = 0;
  double checkpoint_version = 0;
  int64_t tensor_parallel = 0;    // args.tensor_model_parallel_size
  int64_t pipeline_parallel = 0;  // args.pipeline_model_parallel_size
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_attention_heads = 0;
};
[[nodiscard]] MegatronCommonState read_megatron_common(const std::filesystem::path& dir);

// The run arguments a checkpoint written here declares (Megatron's argument names in comments).
struct MegatronRunArgs {
  int64_t tensor_parallel = 1;    // tensor_model_parallel_size
  int64_t pipeline_parallel = 1;  // pipeline_model_parallel_size
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_attention_heads =
      0;  // also num_query_groups (one group per head), kv_channels = hidden / heads
};
// common.pt: {'args': Namespace(<those>, ckpt_format='torch_dist', no_save_optim=True, no_save_rng=True,
// consumed_train_samples=0, ...), 'checkpoint_version': 3.0, 'iteration': iteration}. no_save_optim and
// no_save_rng tell load_checkpoint that the folder holds weights only.
void write_megatron_common(const std::filesystem::path& dir, const MegatronRunArgs& args, int64_t iteration);

// <root>/release for iteration 0, else <root>/iter_<7 digits>. Throws Error(invalid_argument) for a
// negative iteration.
[[nodiscard]] std::filesystem::path megatron_iteration_dir(const std::filesystem::path& root,
                                                           int64_t iteration);
// latest_checkpointed_iteration.txt: "release" for iteration 0, else the number.
void write_megatron_tracker(const std::filesystem::path& root, int64_t iteration);

// The checkpoint folder a person points at: `path` itself when it holds .metadata, else the folder the
// tracker of Megatron root `path` names. Throws Error(not_found) for anything else, naming what is missing.
[[nodiscard]] std::filesystem::path resolve_megatron_checkpoint(const std::filesystem::path& path);

}  // namespace mugv
