#pragma once
// The c10d process groups of a run: one world group and the tensor-, context- and data-parallel groups of
// this rank's layout (layout.h), over a TCPStore rendezvous hosted by rank 0. Gloo on CPU; NCCL on CUDA
// when LibTorch was built with it and a GPU is present (checked at run time).
//
// Collectives that Gloo lacks in LibTorch 1.13 have correct fallbacks here (PLATFORM.md):
//   reduce_scatter  -> all-reduce of the whole tensor, then each rank keeps its own slice (2× the traffic of
//   a
//                      true reduce-scatter, same result)
//   flat all-gather -> the list form of allgather, then concatenation
// so callers write one code path for both backends. All calls block until the collective is done.
// Tensors may live on the CPU with either backend: on NCCL, a CPU tensor (a flag, a count, a batch header)
// travels through a copy on this rank's GPU and the result comes back to the CPU.
// Not thread-safe: issue collectives from one thread per process, in the same order on every rank.

#include "parallel/layout.h"
#include "parallel/rendezvous.h"

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace c10d {
class ProcessGroup;
class Store;
}  // namespace c10d

namespace mugv {

enum class CommBackend { unknown = 0, gloo, nccl };
const char* to_string(CommBackend backend);

class ProcessGroups {
 public:
  // Connects all ranks. Throws Error(timeout) naming the ranks that never arrived within `timeout`, and
  // Error(invalid_argument) for a layout that does not fit the world (validate_layout).
  static std::shared_ptr<ProcessGroups> connect(const Rendezvous& rendezvous, const ParallelLayout& layout,
                                                CommBackend backend, std::chrono::milliseconds timeout);

  int rank() const { return rendezvous_.rank; }
  int world_size() const { return rendezvous_.world_size; }
  const ParallelLayout& layout() const { return layout_; }
  RankCoords coords() const { return coords_of(rank(), layout_); }
  CommBackend backend() const { return backend_; }
  // Where CPU tensors are staged for a collective: this rank's GPU on NCCL (model/compute.h), the CPU on
  // Gloo.
  const torch::Device& device() const { return device_; }

  c10d::ProcessGroup& group(GroupKind kind);
  int group_rank(GroupKind kind) const;
  int group_size(GroupKind kind) const;

  // In-place sum over the group.
  void all_reduce_sum(GroupKind kind, torch::Tensor& tensor);
  // Starts the in-place sum and returns at once (communication overlaps the caller's work); the returned
  // function waits for it. The tensor must stay alive and untouched until then.
  std::function<void()> all_reduce_sum_async(GroupKind kind, torch::Tensor& tensor);
  void broadcast(GroupKind kind, torch::Tensor& tensor, int group_root);
  // Every rank's `tensor` into `outputs` (one tensor per rank, each shaped like `tensor`; views into one
  // buffer are fine), in group-rank order.
  void all_gather_into(GroupKind kind, const torch::Tensor& tensor, std::vector<torch::Tensor>& outputs);
  // Concatenation of every rank's `tensor` along `dim`, in group-rank order.
  torch::Tensor all_gather(GroupKind kind, const torch::Tensor& tensor, int64_t dim);
  // Sum over the group, then this rank's slice along `dim` (size divisible by the group size).
  torch::Tensor reduce_scatter_sum(GroupKind kind, const torch::Tensor& tensor, int64_t dim);
  // Splits `tensor` along `scatter_dim` into group-size chunks, sends chunk i to rank i, and concatenates the
  // received chunks along `gather_dim` (the Ulysses sequence <-> heads exchange).
  torch::Tensor all_to_all(GroupKind kind, const torch::Tensor& tensor, int64_t scatter_dim,
                           int64_t gather_dim);
  void barrier(GroupKind kind);
  // Point to point within group `kind` (peers by group rank; pipeline stages use GroupKind::pipeline).
  // send_async starts sending `tensor` and returns at once (the send holds a reference to the tensor's data,
  // which must stay untouched until it is done); `done` tells without blocking whether it was delivered,
  // `wait` blocks until it is (and reports a failed send). recv blocks until `tensor` (whose shape and dtype
  // must be what the peer sent) is filled. Messages between two ranks with the same tag arrive in order.
  struct PendingSend {
    std::function<bool()> done;
    std::function<void()> wait;
  };
  PendingSend send_async(GroupKind kind, const torch::Tensor& tensor, int to, int tag);
  void recv(GroupKind kind, torch::Tensor& tensor, int from, int tag);

  ~ProcessGroups();

 private:
  ProcessGroups() = default;
  struct Groups;
  Rendezvous rendezvous_;
  ParallelLayout layout_;
  CommBackend backend_ = CommBackend::unknown;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<Groups> groups_;

  torch::Device comm_device_for(const torch::Tensor& tensor) const;
};

}  // namespace mugv
