#pragma once
// MUG-V DiT weights between a Megatron torch_dist checkpoint and this engine's names (megatron_names.h),
// streamed one tensor at a time so a 10B model never sits in memory twice.
//
// Import (Megatron -> engine): plan_megatron_import() lists every engine tensor the checkpoint holds (a
// stacked decoder key becomes one tensor per layer), the keys it skips and the keys it does not know;
// read_megatron_tensor() reads one planned tensor (only that layer's chunks) and puts its rows back in the
// release order; import_megatron_to_safetensors() does both into a safetensors file the engine loads
// (core/weight_files.h). Tensors keep the checkpoint's dtype (bf16 for a bf16 run).
// The head count comes from the options, else common.pt's args.num_attention_heads, else
// hidden / the width of q_layernorm (hidden from x_embedder.proj.weight); without any, a checkpoint with
// fused projections is Error(invalid_argument).
//
// Export (engine -> Megatron): export_megatron_checkpoint() writes a Megatron checkpoint root
// (megatron_checkpoint.h): the tracker, and in release/ (or iter_<n>/) the torch_dist tensors, metadata.json
// and common.pt. Block tensors are stacked on a leading layer axis, one chunk per layer, split further as
// tensor parallelism of Options::tensor_parallel would shard them (column-parallel weights along rows,
// row-parallel along columns, whole heads per rank); top-level tensors are one chunk each. Every
// `_extra_state` object megatron_extra_state_keys() lists is written as torch.save([None]) (the converter's
// value for it, which Transformer Engine's set_extra_state ignores).
// What the result needs from the Megatron side, and why: the folder holds weights only, so the run loads it
// as a release checkpoint (or with --no-load-optim --no-load-rng; common.pt's args say no_save_optim /
// no_save_rng); the engine has no caption-dropout embedding unless it holds `null_caption`, and then
// context_embedder.drop_emb is absent; and the set of Transformer Engine `_extra_state` objects a run
// expects depends on the Transformer Engine / Megatron-Core versions (core attention has one in some),
// which the format does not record. A run whose model has keys the folder lacks loads it with
// --dist-ckpt-strictness log_all, as MUG-V's own training scripts do; the report's notes say which apply.
//
// Errors: those of the readers and writers used, plus Error(invalid_argument) naming the tensors for
// unknown names (unless allow_unknown), blocks missing from a layer, shapes that differ between layers, a
// dimension tensor parallelism cannot split evenly, or a head count that does not divide the rows;
// Error(format) for a stacked key whose layer axis is not 1 to 4096 long (or a layer index beyond that), and
// Error(corrupt) for a tensor that reads as a different number of bytes than its planned dtype and shape.
// Not thread-safe: the weight source is called from the calling thread only.

#include "core/safetensors.h"
#include "interop/dist_checkpoint.h"
#include "interop/megatron_names.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace mugv {

class WeightFiles;

struct MegatronImportOptions {
  int num_heads = 0;           // 0: from common.pt, else from q_layernorm's width
  bool null_caption = true;    // read context_embedder.drop_emb as `null_caption` (else skip it)
  bool allow_unknown = false;  // tensor keys outside the map are listed instead of an error
};

struct MegatronImportItem {
  std::string engine_name;
  std::string megatron_name;
  int layer = -1;  // index along a stacked key's layer axis; -1 for other keys
  HeadLayout heads = HeadLayout::none;
  DType dtype = DType::unknown;
  std::vector<int64_t> shape;  // the engine tensor's
};

struct MegatronImportPlan {
  int num_heads = 0;
  int num_layers = 0;
  std::vector<MegatronImportItem> items;  // by Megatron key, stacked keys layer by layer
  std::vector<std::string> skipped;       // keys holding no DiT weight (optimizer, RNG and extra state, ...)
  std::vector<std::string> unknown;       // tensor keys outside the map (only with allow_unknown)
};

[[nodiscard]] MegatronImportPlan plan_megatron_import(
    const DistCheckpointReader& checkpoint, const MegatronImportOptions& options = MegatronImportOptions{});
// Error(invalid_argument) when the tensor read is not of the item's dtype and shape (a plan of another
// checkpoint).
[[nodiscard]] TensorData read_megatron_tensor(const DistCheckpointReader& checkpoint,
                                              const MegatronImportPlan& plan, const MegatronImportItem& item);
// `checkpoint` is a torch_dist folder or a Megatron root (resolve_megatron_checkpoint); `out` is written
// atomically with the engine's names.
MegatronImportPlan import_megatron_to_safetensors(
    const std::filesystem::path& checkpoint, const std::filesystem::path& out,
    const MegatronImportOptions& options = MegatronImportOptions{});

// Engine weights by name: `at` returns a view valid until the next call or `release` of that name.
struct WeightSource {
  std::vector<std::string> names;
  std::function<TensorView(const std::string&)> at;
  std::function<void(const std::string&)> release;  // optional: the caller may drop the tensor's pages
};
// A source over weight files (dit.pt, safetensors, a shard index); it refers to `files`, which must outlive
// it.
[[nodiscard]] WeightSource weight_source(const WeightFiles& files);

struct MegatronExportOptions {
  int num_heads = 0;              // 0: hidden / the width of blocks.0.attn.q_norm.weight
  int tensor_parallel = 1;        // chunks as tensor parallelism of this size shards the weights
  bool file_per_rank = false;     // rank r's chunks in __<r>_0.distcp; else every chunk in __0_0.distcp
  int64_t pipeline_parallel = 1;  // recorded in common.pt's args (the chunks do not depend on it)
  int64_t iteration = 0;          // 0: a release checkpoint; else iter_<n>
  bool extra_state = true;        // write megatron_extra_state_keys() as torch.save([None])
  bool allow_unknown = false;     // names outside the map are left out and listed instead of an error
  bool overwrite = false;         // replace a checkpoint already in the iteration folder
};

struct MegatronExportReport {
  std::filesystem::path checkpoint;  // the iteration folder written
  int num_heads = 0;
  int num_layers = 0;
  std::vector<std::string> written;  // Megatron keys (tensors and objects)
  std::vector<std::string> unknown;  // engine names left out (only with allow_unknown)
  std::vector<std::string> notes;    // what a Megatron run may need to load the result (see above)
};

MegatronExportReport export_megatron_checkpoint(
    const WeightSource& source, const std::filesystem::path& root,
    const MegatronExportOptions& options = MegatronExportOptions{});

}  // namespace mugv
