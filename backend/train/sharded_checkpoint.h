#pragma once
// The tensors of a DiT checkpoint written by any parallel layout, and read back under any other
// (docs/MUGV.md §6: checkpoints outlive the layout).
//
//   layout.json                  {"tp", "cp", "dp", "pp", "zero"} of the run that wrote it (absent: one
//                                process; no "pp": one stage)
//   model.safetensors, ema.…     tp = 1: whole tensors (what single-process runs and the sampler read)
//   model.tp<r>of<T>.…, ema.…    tp > 1: tensor-parallel rank r's pieces (dit_parallel.h roles), written by
//                                the ranks with cp_rank = dp_rank = 0
//   optimizer[.tp<r>of<T>].…     AdamW moments "exp_avg.<param>" (Muon: "momentum.<param>") of those pieces
//   optimizer[.tp…].dp<d>of<D>.… ZeRO-1: data-parallel rank d's flat pieces "exp_avg.<param>@<offset>"
//   <stem>.pp<s>of<P>[.tp…][.dp…].safetensors
//                                pipeline stages: stage s's files hold its own parameters only
//                                (parallel/pipeline.h stage_of_parameter)
//
// Reading joins the pieces into whole tensors ("canonical" form); a rank then cuts its own piece with
// shard_tensor(). Every file goes through the checkpoint manifest's SHA-256 check before it is read
// (checkpoint_store.h). Errors: Error(corrupt) naming the file and the missing or misshapen tensor.

#include "train/optim.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

struct CheckpointLayout {
  int tp = 1, cp = 1, dp = 1, pp = 1;
  bool zero = false;
  bool operator==(const CheckpointLayout& o) const {
    return tp == o.tp && cp == o.cp && dp == o.dp && pp == o.pp && zero == o.zero;
  }
};
void write_checkpoint_layout(const fs::path& dir, const CheckpointLayout& layout);
// One process when the folder has no layout.json; Error(corrupt) naming the file when it is malformed.
[[nodiscard]] CheckpointLayout read_checkpoint_layout(const fs::path& dir);
[[nodiscard]] std::string describe(const CheckpointLayout& layout);  // "tp2.cp1.dp2 zero1"

// "model.safetensors" or "model.tp1of2.safetensors"; with pipeline stages ".pp<s>of<P>" after the stem, and
// with dp > 1 (ZeRO pieces) ".dp<d>of<D>" before the suffix.
[[nodiscard]] std::string checkpoint_file_name(const std::string& stem, int tp_rank, int tp, int dp_rank = 0,
                                               int dp = 1, int pp_rank = 0, int pp = 1);

// Whole tensors of `stem` ("model", "ema", "optimizer"), every pipeline stage's joined. `full_shapes` gives
// each parameter's whole shape (by name, without the "exp_avg." prefixes; every parameter of the model, not
// only one stage's): ZeRO pieces are reassembled with it. A tensor held by two stages is refused. Also
// returns the first file's metadata (the optimizer's "step").
struct CanonicalTensors {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
[[nodiscard]] CanonicalTensors read_canonical_tensors(
    const fs::path& dir, const std::string& stem, const CheckpointLayout& saved,
    const std::map<std::string, std::vector<int64_t>>& full_shapes);

// The parameter an optimizer state name belongs to ("exp_avg_sq.dit.x", "momentum.dit.x" -> "dit.x"); other
// names unchanged.
[[nodiscard]] std::string state_parameter_name(const std::string& name);
// The whole shape of a tensor-parallel piece of `name` held by each of `tp` ranks.
[[nodiscard]] std::vector<int64_t> full_shape_of(const std::string& name, std::vector<int64_t> piece_shape,
                                                 int tp);

}  // namespace mugv
