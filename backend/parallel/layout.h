#pragma once
// Megatron-style parallel layout: world = tp × cp × dp ranks, ordered with tensor-parallel fastest, then
// context-parallel, then data-parallel (rank = tp_rank + tp·(cp_rank + cp·dp_rank)), so a tensor-parallel
// group sits on consecutive ranks (one node's GPUs) and data-parallel groups stride across nodes.
// Torch-free: the planner and the CLI use it without LibTorch.

#include <string>
#include <vector>

namespace mugv {

struct ParallelLayout {
  int tp = 1;  // tensor (+ sequence) parallel
  int cp = 1;  // context parallel
  int dp = 1;  // data parallel (ZeRO shards across these)
  int world() const { return tp * cp * dp; }
};

// sequence: the tp × cp ranks of one data-parallel replica (they share one batch and split its tokens).
enum class GroupKind { unknown = 0, tensor, context, data, world, sequence };
const char* to_string(GroupKind kind);

struct RankCoords {
  int tp_rank = 0, cp_rank = 0, dp_rank = 0;
};

// "tp2.cp1.dp4"-style text, or "tp=2,cp=1,dp=4"; missing parts are 1.
ParallelLayout parse_layout(const std::string& text);
std::string to_string(const ParallelLayout& layout);

// Throws Error(invalid_argument) naming the problem: a size < 1, tp·cp·dp != world_size, or (when heads > 0)
// heads not divisible by tp·cp (tensor parallel splits heads, Ulysses context parallel splits them again).
void validate_layout(const ParallelLayout& layout, int world_size, int heads = 0);

RankCoords coords_of(int rank, const ParallelLayout& layout);
int rank_of(const RankCoords& coords, const ParallelLayout& layout);
// Every group of `kind`, each a sorted list of ranks; every rank is in exactly one group of each kind.
std::vector<std::vector<int>> all_groups(const ParallelLayout& layout, GroupKind kind);
// The group of `kind` that `rank` belongs to.
std::vector<int> group_of(int rank, const ParallelLayout& layout, GroupKind kind);

}  // namespace mugv
