#pragma once
// How one DiT forward is split across ranks (docs/MUGV.md §6), seen from the model:
//
//   tensor parallel (tp)   column-parallel QKV / cross-attention q and kv / MLP fc1 (each rank holds its
//                          heads' rows), row-parallel attention and MLP output projections (each rank holds
//                          the matching input columns; their partial sums are reduced). Heads split tp ways.
//   sequence parallel      between those linears (LayerNorm, adaLN modulation, gates, residuals, the
//                          cross-attention LayerNorm) every rank keeps only 1/tp of the tokens: all-gather
//                          before a column-parallel linear, reduce-scatter after a row-parallel one.
//   context parallel (cp)  the tokens are split cp ways through the whole block; around self-attention an
//                          all-to-all trades the sequence split for a head split (Ulysses), so attention sees
//                          every token for heads/(tp·cp) heads. Cross-attention and the MLP act per token and
//                          need nothing.
//
// Token split: the DiT's sequence (start token, frames, end token: N tokens) is cut into tp·cp equal
// slices; rank (tp_rank, cp_rank) holds slice cp_rank·tp + tp_rank, so the tp ranks of one cp rank hold
// neighbouring slices. N must be divisible by tp·cp. Outside the blocks (embedders, final layer) every rank
// computes the whole sequence redundantly, so those parameters get complete gradients; inside the blocks
// the gradients of replicated parameters are partial and are summed by the trainer (tensor_parallel_role).
//
// The model only calls the DiTParallelOps interface; parallel/sequence_parallel.h implements it over c10d
// process groups. Every op is differentiable: its backward is the matching collective.

#include <torch/torch.h>

#include <string>
#include <vector>

namespace mugv {

class DiTParallelOps {
 public:
  virtual ~DiTParallelOps() = default;
  virtual int tp_size() const = 0;
  virtual int tp_rank() const = 0;
  virtual int cp_size() const = 0;
  virtual int cp_rank() const = 0;
  int sequence_shards() const { return tp_size() * cp_size(); }
  int sequence_shard() const { return cp_rank() * tp_size() + tp_rank(); }

  // [B, N, d] (the same on every rank) -> this rank's slice [B, N/(tp·cp), d]. Backward: all-gather.
  virtual torch::Tensor scatter_sequence(const torch::Tensor& x) = 0;
  // This rank's slice [B, n, d] -> the whole sequence [B, n·tp·cp, d]. Backward: keep this rank's slice.
  virtual torch::Tensor gather_sequence(const torch::Tensor& x) = 0;
  // Sequence parallel -> tensor parallel region: [B, n, d] -> [B, n·tp, d] (all-gather over tp).
  // Backward: sum over tp, keep this rank's slice (reduce-scatter).
  virtual torch::Tensor gather_tensor_parallel(const torch::Tensor& x) = 0;
  // Row-parallel partial sums [B, n·tp, d] -> summed over tp, this rank's slice [B, n, d].
  // Backward: all-gather over tp.
  virtual torch::Tensor reduce_scatter_tensor_parallel(const torch::Tensor& x) = 0;
  // Identity. Backward: sum over the tp·cp ranks of this sequence, for tensors every rank holds whole but
  // uses with only its tokens or heads (the adaLN modulation, the projected caption).
  virtual torch::Tensor sum_gradient_over_sequence(const torch::Tensor& x) = 0;
  // Ulysses exchange in the cp group: [B, H, n, hd] -> [B, H/cp, n·cp, hd], and back.
  virtual torch::Tensor heads_to_sequence(const torch::Tensor& x) = 0;
  virtual torch::Tensor sequence_to_heads(const torch::Tensor& x) = 0;
};

// How a parameter of a DiT run (names as in checkpoints: "dit.blocks.3.attn.qkv.weight"; the "dit."
// prefix is optional) is split by tensor parallelism.
enum class TensorSplit { replicated = 0, column, row };
struct TensorParallelRole {
  TensorSplit split = TensorSplit::replicated;
  int parts = 1;  // column splits of fused projections: qkv 3, kv 2 (each part split on its own)
  bool in_blocks =
      false;  // inside a transformer block: its gradient is partial under sequence/context parallel
};
[[nodiscard]] TensorParallelRole tensor_parallel_role(const std::string& name);

// Rank `rank`'s piece of a full tensor (column: dim 0 per part, row: dim 1), contiguous; replicated
// tensors are returned whole. Throws Error(invalid_argument) naming the size when it does not divide.
[[nodiscard]] torch::Tensor shard_tensor(const torch::Tensor& full, const TensorParallelRole& role, int rank,
                                         int size);
// The full tensor from every rank's piece, in rank order (the first piece for replicated tensors).
[[nodiscard]] torch::Tensor unshard_tensor(const std::vector<torch::Tensor>& pieces,
                                           const TensorParallelRole& role);

}  // namespace mugv
