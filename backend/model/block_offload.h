#pragma once
// Block swap: inference with a DiT whose blocks do not all fit on the device at once.
//
// Everything outside the blocks (embedders, tokens, final layer) lives on the device. Each block's weights
// live in host memory (page-locked when the device is a CUDA GPU, so copies are asynchronous DMA) and are
// copied to the device just before the block runs; the copy of block i+1 is issued on a side stream while
// block i computes on the current stream, and block i's device copy is dropped when it finishes. The device
// then holds at most two blocks' weights instead of `depth`. The forward is numerically the same as without
// offload: the same weights, the same kernels.
//
//   before_block(i): wait for block i's copy (or make it now), point its parameters at the device copy,
//                    start the copy of block i+1
//   after_block(i):  point block i's parameters back at their host copy; its device memory is released
//                    once the current stream is past it (the allocator is told which stream used it)
//
// On a CPU device the "device copy" is a plain copy in the same memory: the mechanism runs (tests use it)
// but saves nothing, so `auto` never chooses it there.
//
// Inference only: gradients would need every block's weights again in backward. Not thread-safe; one
// forward at a time. The BlockOffload must outlive the forwards that use it (DiTImpl keeps it).

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

class BlockOffload {
 public:
  // Moves `dit`'s parameters and buffers outside its blocks to `device` and its blocks' to host memory.
  // Throws Error(unsupported) when the DiT is split across ranks (tensor / context parallel).
  BlockOffload(DiTImpl& dit, torch::Device device);
  BlockOffload(const BlockOffload&) = delete;
  BlockOffload& operator=(const BlockOffload&) = delete;

  void before_block(size_t index);
  void after_block(size_t index);

  torch::Device device() const { return device_; }
  size_t blocks() const { return blocks_.size(); }
  // The most blocks whose weights were on the device at the same time (2 with prefetch).
  int peak_resident_blocks() const { return peak_resident_; }
  // Bytes of one block's weights (the largest), what the device holds per resident block.
  int64_t block_bytes() const { return block_bytes_; }

 private:
  struct Block {
    std::vector<torch::Tensor> parameters;  // the module's own tensors; their data is swapped
    std::vector<torch::Tensor> host;        // where the weights live between uses
    std::vector<torch::Tensor> staged;      // device copies being made or in use; empty when not staged
    std::optional<c10::Event> copied;       // recorded on the copy stream after the copies (GPU only)
  };
  void stage(size_t index);
  int resident_count() const;

  torch::Device device_;
  std::vector<Block> blocks_;
  std::optional<c10::Stream> copy_stream_;  // GPU only
  int peak_resident_ = 0;
  int64_t block_bytes_ = 0;
};

}  // namespace mugv
