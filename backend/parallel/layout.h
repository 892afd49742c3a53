#pragma once
// Megatron-style parallel layout: world = tp × cp × dp × pp ranks, ordered as Megatron's default
// "tp-cp-dp-pp": tensor-parallel fastest, then context-parallel, then data-parallel, then pipeline stage
// (rank = tp_rank + tp·(cp_rank + cp·(dp_rank + dp·pp_rank))), so a tensor-parallel group sits on
// consecutive ranks (one node's GPUs), data-parallel groups stride across nodes and each pipeline stage is a
// contiguous block of ranks.
// Torch-free: the planner and the CLI use it without LibTorch.

#include <string>
#include <vector>

namespace mugv {

struct ParallelLayout {
  int tp = 1;  // tensor (+ sequence) parallel
  int cp = 1;  // context parallel
  int dp = 1;  // data parallel (ZeRO shards across these)
  int pp = 1;  // pipeline stages (the DiT's blocks split into contiguous stages)
  int world() const { return tp * cp * dp * pp; }
};

// sequence: the tp × cp ranks of one pipeline stage of one data-parallel replica (they share one batch and
// split its tokens). pipeline: the pp stages holding the same tp / cp / dp coordinates (point-to-point
// neighbours). replica: every rank of one data-parallel replica (tp × cp × pp: they train on the same
// samples).
enum class GroupKind { unknown = 0, tensor, context, data, world, sequence, pipeline, replica };
const char* to_string(GroupKind kind);

struct RankCoords {
  int tp_rank = 0, cp_rank = 0, dp_rank = 0, pp_rank = 0;
};

// "tp2.cp1.dp4[.pp2]"-style text, or "tp=2,cp=1,dp=4,pp=2"; missing parts are 1. to_string writes pp only
// when it is above 1.
ParallelLayout parse_layout(const std::string& text);
std::string to_string(const ParallelLayout& layout);

// Throws Error(invalid_argument) naming the problem: a size < 1, tp·cp·dp·pp != world_size, (when heads > 0)
// heads not divisible by tp·cp (tensor parallel splits heads, Ulysses context parallel splits them again), or
// (when depth > 0) fewer blocks than pipeline stages.
void validate_layout(const ParallelLayout& layout, int world_size, int heads = 0, int depth = 0);

RankCoords coords_of(int rank, const ParallelLayout& layout);
int rank_of(const RankCoords& coords, const ParallelLayout& layout);
// Every group of `kind`, each a sorted list of ranks; every rank is in exactly one group of each kind.
std::vector<std::vector<int>> all_groups(const ParallelLayout& layout, GroupKind kind);
// The group of `kind` that `rank` belongs to.
std::vector<int> group_of(int rank, const ParallelLayout& layout, GroupKind kind);

}  // namespace mugv
