#include "model/block_offload.h"

#include "core/error.h"
#include "model/dit.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>

namespace mugv {

const char* to_string(OffloadMode mode) {
  switch (mode) {
    case OffloadMode::automatic:
      return "auto";
    case OffloadMode::none:
      return "none";
    case OffloadMode::blocks:
      return "blocks";
    case OffloadMode::unknown:
      break;
  }
  return "unknown";
}

std::optional<OffloadMode> offload_mode_from_string(std::string_view name) {
  for (OffloadMode mode : {OffloadMode::automatic, OffloadMode::none, OffloadMode::blocks})
    if (name == to_string(mode)) return mode;
  return std::nullopt;
}

BlockOffload::BlockOffload(DiTImpl& dit, torch::Device device, OffloadUse use) : device_(device), use_(use) {
  if (dit.parallel())
    throw Error(ErrorCode::unsupported, "offload",
                "block swap runs in one process; this DiT is split across ranks");
  torch::NoGradGuard no_grad;
  const bool gpu = device.type() != torch::kCPU;
  auto outside_blocks = [](const std::string& name) { return name.rfind("blocks.", 0) != 0; };
  for (auto& item : dit.named_parameters(true))
    if (outside_blocks(item.key())) item.value().set_data(item.value().detach().to(device));
  for (auto& item : dit.named_buffers(true))
    if (outside_blocks(item.key())) item.value().set_data(item.value().detach().to(device));
  // Under training a tensor that trains stays on the device: its gradient and optimizer state live there.
  auto swapped = [&](const torch::Tensor& t) { return use == OffloadUse::inference || !t.requires_grad(); };
  int64_t swapped_tensors = 0;
  for (auto& module : *dit.blocks) {
    Block block;
    int64_t bytes = 0;
    auto keep = [&](torch::Tensor tensor) {
      if (!swapped(tensor)) {
        tensor.set_data(tensor.detach().to(device));
        return;
      }
      ++swapped_tensors;
      auto host = tensor.detach().to(torch::kCPU).contiguous();
      if (gpu) host = host.pin_memory();  // page-locked: the copies below are asynchronous DMA
      tensor.set_data(host);
      bytes += host.numel() * static_cast<int64_t>(host.element_size());
      block.parameters.push_back(tensor);
      block.host.push_back(host);
    };
    for (auto& p : module->parameters(true)) keep(p);
    for (auto& b : module->buffers(true)) keep(b);
    block_bytes_ = std::max(block_bytes_, bytes);
    blocks_.push_back(std::move(block));
  }
  if (use == OffloadUse::training && swapped_tensors == 0)
    throw Error(ErrorCode::unsupported, "offload",
                "every weight of the blocks trains, so none can wait in host memory: block swap in training "
                "needs a frozen base (LoRA)");
  if (gpu) copy_stream_ = c10::impl::VirtualGuardImpl(device.type()).getStreamFromGlobalPool(device);
}

void BlockOffload::stage(size_t index) {
  Block& block = blocks_.at(index);
  if (!block.staged.empty()) return;
  torch::NoGradGuard no_grad;
  if (!copy_stream_) {
    for (const auto& host : block.host) block.staged.push_back(host.clone());
    return;
  }
  c10::StreamGuard on_copy_stream(*copy_stream_);
  for (const auto& host : block.host) block.staged.push_back(host.to(device_, /*non_blocking=*/true));
  block.copied.emplace(device_.type());
  block.copied->record(*copy_stream_);
}

int BlockOffload::resident_count() const {
  return static_cast<int>(
      std::count_if(blocks_.begin(), blocks_.end(), [](const Block& b) { return !b.staged.empty(); }));
}

void BlockOffload::before_block(size_t index, std::optional<size_t> next) {
  if (use_ == OffloadUse::inference && torch::GradMode::is_enabled())
    throw Error(ErrorCode::unsupported, "offload",
                "this block swap is for inference; run under no-grad (training swaps a frozen base)");
  stage(index);
  Block& block = blocks_.at(index);
  if (copy_stream_) {
    const c10::Stream current = c10::impl::VirtualGuardImpl(device_.type()).getStream(device_);
    block.copied->block(current);  // the compute waits for the copy, the host does not
    // The copies were allocated on the copy stream but are read on this one: the allocator must not hand
    // their memory out again before this stream is past the block.
    for (auto& staged : block.staged) staged.record_stream(current);
  }
  for (size_t k = 0; k < block.parameters.size(); ++k) block.parameters[k].set_data(block.staged[k]);
  // The next block's copy overlaps this block's compute.
  if (next) stage(*next);
  peak_resident_ = std::max(peak_resident_, resident_count());
}

void BlockOffload::after_block(size_t index) {
  Block& block = blocks_.at(index);
  for (size_t k = 0; k < block.parameters.size(); ++k) block.parameters[k].set_data(block.host[k]);
  block.staged.clear();
  block.copied.reset();
}

}  // namespace mugv
