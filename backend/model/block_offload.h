#pragma once
// Block swap: a DiT whose blocks do not all fit on the device at once, for inference and for training a
// frozen base (LoRA).
//
// Everything outside the blocks (embedders, tokens, final layer) lives on the device. Each block's swapped
// weights live in host memory (page-locked when the device is a CUDA GPU, so copies are asynchronous DMA) and
// are copied to the device just before the block runs; the copy of the next block is issued on a side stream
// while this one computes on the current stream, and a block's device copy is dropped when it finishes. The
// device then holds at most two blocks' weights instead of `depth`. Results are the same as without offload:
// the same weights, the same kernels.
//
//   before_block(i, next): wait for block i's copy (or make it now), point its parameters at the device copy,
//                          start the copy of block `next`
//   after_block(i):        point block i's parameters back at their host copy; its device memory is released
//                          once the current stream is past it (the allocator is told which stream used it)
//
// Inference swaps every tensor of the blocks and runs under no-grad. Training (OffloadUse::training) swaps
// only the frozen tensors (requires_grad false: the base under LoRA); trainable ones (the adapters inside the
// blocks) stay on the device with their gradients. Backward needs a block's weights again, and autograd would
// keep the device copies it saw in forward, so a DiT with a training offload recomputes every block in
// backward (DiTImpl::run_blocks): forward keeps nothing of a block, and backward stages each block again, in
// reverse order with the previous block's copy ahead, re-runs its forward and backward, and drops it.
//
// On a CPU device the "device copy" is a plain copy in the same memory: the mechanism runs (tests use it)
// but saves nothing, so `auto` never chooses it there.
//
// Not thread-safe; one forward at a time. The BlockOffload must outlive the forwards (and backwards) that use
// it (DiTImpl keeps it).

#include <torch/torch.h>

#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace mugv {

class DiTImpl;

// --offload: auto (blocks when the whole DiT does not fit the device, else none), none, blocks.
enum class OffloadMode { unknown = 0, automatic, none, blocks };
const char* to_string(OffloadMode mode);
std::optional<OffloadMode> offload_mode_from_string(std::string_view name);

// What the swapped blocks are used for: inference (every tensor swapped; forwards under no-grad) or training
// a frozen base (only tensors that do not require grad are swapped).
enum class OffloadUse { inference, training };

class BlockOffload {
 public:
  // Moves `dit`'s parameters and buffers outside its blocks to `device`, and its blocks' swapped tensors to
  // host memory (the others, under training, to `device`). Throws Error(unsupported) when the DiT is split
  // across ranks (tensor / context parallel), and for training when no tensor of the blocks is frozen (a full
  // fine-tune has nothing to swap: block swap in training needs a frozen base).
  BlockOffload(DiTImpl& dit, torch::Device device, OffloadUse use = OffloadUse::inference);
  BlockOffload(const BlockOffload&) = delete;
  BlockOffload& operator=(const BlockOffload&) = delete;

  // Block `index` on the device, and the copy of block `next` started (none: nothing ahead). Throws
  // Error(unsupported) for an inference offload under grad mode.
  void before_block(size_t index, std::optional<size_t> next);
  // Inference order: the next block, and after the last one the first (the next sampling step starts there).
  void before_block(size_t index) { before_block(index, (index + 1) % blocks_.size()); }
  void after_block(size_t index);

  torch::Device device() const { return device_; }
  OffloadUse use() const { return use_; }
  size_t blocks() const { return blocks_.size(); }
  // The most blocks whose weights were on the device at the same time (2 with prefetch).
  int peak_resident_blocks() const { return peak_resident_; }
  // Bytes of one block's swapped tensors (the largest), what the device holds per resident block.
  int64_t block_bytes() const { return block_bytes_; }

 private:
  struct Block {
    std::vector<torch::Tensor> parameters;  // the module's swapped tensors; their data is swapped
    std::vector<torch::Tensor> host;        // where the weights live between uses
    std::vector<torch::Tensor> staged;      // device copies being made or in use; empty when not staged
    std::optional<c10::Event> copied;       // recorded on the copy stream after the copies (GPU only)
  };
  void stage(size_t index);
  int resident_count() const;

  torch::Device device_;
  OffloadUse use_;
  std::vector<Block> blocks_;
  std::optional<c10::Stream> copy_stream_;  // GPU only
  int peak_resident_ = 0;
  int64_t block_bytes_ = 0;
};

}  // namespace mugv
