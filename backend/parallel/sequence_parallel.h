#pragma once
// The DiT's tensor-, sequence- and context-parallel communication (model/dit_parallel.h) over the c10d
// groups of a run (process_groups.h): tensor-parallel ops use the tensor group, Ulysses all-to-alls the
// context group, the whole-sequence scatter/gather and the replicated-input gradient sums the sequence
// group (tp × cp ranks of one data-parallel replica). Each op is a torch autograd function whose backward
// issues the matching collective, so forward and backward stay in the same order on every rank.
// Not thread-safe (collectives are issued from the training thread).

#include "model/dit_parallel.h"
#include "parallel/process_groups.h"

#include <memory>

namespace mugv {

class C10dDiTParallel final : public DiTParallelOps {
 public:
  explicit C10dDiTParallel(std::shared_ptr<ProcessGroups> groups);
  int tp_size() const override;
  int tp_rank() const override;
  int cp_size() const override;
  int cp_rank() const override;
  torch::Tensor scatter_sequence(const torch::Tensor& x) override;
  torch::Tensor gather_sequence(const torch::Tensor& x) override;
  torch::Tensor gather_tensor_parallel(const torch::Tensor& x) override;
  torch::Tensor reduce_scatter_tensor_parallel(const torch::Tensor& x) override;
  torch::Tensor sum_gradient_over_sequence(const torch::Tensor& x) override;
  torch::Tensor heads_to_sequence(const torch::Tensor& x) override;
  torch::Tensor sequence_to_heads(const torch::Tensor& x) override;

 private:
  // The groups as the integer an autograd function's saved data can hold (they outlive every graph).
  int64_t groups_address() const { return reinterpret_cast<int64_t>(groups_.get()); }
  std::shared_ptr<ProcessGroups> groups_;
};

}  // namespace mugv
