#include "train/pipeline_step.h"

#include "core/error.h"
#include "core/strings.h"

#include <chrono>
#include <map>

namespace mugv {
namespace {

// The tensors of a transfer, in DiTPassTensors order; the caption mask carries no gradient.
constexpr int kTensors = 5;
constexpr int kHeaderSlot = 8;  // defined, dtype, rank, up to 5 sizes
constexpr int kMaxRank = kHeaderSlot - 3;

std::vector<torch::Tensor> as_list(const DiTPassTensors& t) {
  return {t.tokens, t.modulation, t.text, t.final_condition, t.text_mask};
}
DiTPassTensors from_list(const std::vector<torch::Tensor>& v) {
  return {v[0], v[1], v[2], v[3], v[4]};
}
bool carries_gradient(size_t index) {
  return index + 1 < size_t(kTensors);
}

double since_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Tags: unique per (direction, receiving chunk, micro-batch).
int message_tag(bool forward, int chunk, int micro_batch, int chunks) {
  return ((micro_batch * chunks + chunk) * 2) + (forward ? 0 : 1);
}

class Channel {
 public:
  Channel(std::shared_ptr<ProcessGroups> groups, PipelineStepResult& result)
      : groups_(std::move(groups)), result_(result) {}

  // Posts `tensors` (undefined ones are announced as absent) to pipeline stage `to`.
  void send(const std::vector<torch::Tensor>& tensors, int to, int tag) {
    release_delivered();
    auto header = torch::zeros({kTensors * kHeaderSlot}, torch::kInt64);
    auto h = header.accessor<int64_t, 1>();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      if (!t.defined()) continue;
      if (t.dim() > kMaxRank)
        throw Error(ErrorCode::internal, "pipeline", cat("a tensor of rank ", t.dim(), " cannot be sent"));
      const size_t at = i * kHeaderSlot;
      h[int64_t(at)] = 1;
      h[int64_t(at + 1)] = static_cast<int64_t>(t.scalar_type());
      h[int64_t(at + 2)] = t.dim();
      for (int64_t d = 0; d < t.dim(); ++d) h[int64_t(at + 3 + size_t(d))] = t.size(d);
    }
    pending_.push_back(groups_->send_async(GroupKind::pipeline, header, to, tag));
    for (const auto& t : tensors)
      if (t.defined()) pending_.push_back(groups_->send_async(GroupKind::pipeline, t.detach(), to, tag));
  }

  // Receives what `send` posted, on `device`.
  std::vector<torch::Tensor> receive(int from, int tag, const torch::Device& device) {
    const auto t0 = std::chrono::steady_clock::now();
    auto header = torch::zeros({kTensors * kHeaderSlot}, torch::kInt64);
    groups_->recv(GroupKind::pipeline, header, from, tag);
    auto h = header.accessor<int64_t, 1>();
    std::vector<torch::Tensor> tensors(kTensors);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const size_t at = i * kHeaderSlot;
      if (h[int64_t(at)] == 0) continue;
      std::vector<int64_t> sizes;
      for (int64_t d = 0; d < h[int64_t(at + 2)]; ++d) sizes.push_back(h[int64_t(at + 3 + size_t(d))]);
      tensors[i] = torch::empty(
          sizes,
          torch::TensorOptions().dtype(static_cast<torch::ScalarType>(h[int64_t(at + 1)])).device(device));
      groups_->recv(GroupKind::pipeline, tensors[i], from, tag);
    }
    result_.receive_ms += since_ms(t0);
    return tensors;
  }

  void finish() {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& send : pending_) send.wait();
    pending_.clear();
    result_.send_ms += since_ms(t0);
  }

 private:
  // Drops the sends already delivered, so that their data is freed as soon as the peer has it rather than at
  // the end of the step (a stage would otherwise keep every micro-batch it sent).
  void release_delivered() {
    std::vector<ProcessGroups::PendingSend> open;
    for (auto& send : pending_) {
      if (send.done())
        send.wait();  // reports a failed send
      else
        open.push_back(std::move(send));
    }
    pending_ = std::move(open);
  }

  std::shared_ptr<ProcessGroups> groups_;
  PipelineStepResult& result_;
  std::vector<ProcessGroups::PendingSend> pending_;  // sends not yet known delivered (their data lives here)
};

// A micro-batch's forward on one chunk, kept until its backward.
struct InFlight {
  std::vector<torch::Tensor> inputs;   // received leaves (empty on chunk 0)
  std::vector<torch::Tensor> outputs;  // what was sent on (empty on the last chunk)
  torch::Tensor loss;                  // the last chunk's
};

}  // namespace

PipelineStepResult run_pipeline_step(const std::shared_ptr<ProcessGroups>& groups, const PipelineShape& shape,
                                     int stage, int micro_batches, const torch::Device& device,
                                     const PipelineStepHooks& hooks) {
  const std::vector<PipelineOp> ops = pipeline_ops(shape, stage, micro_batches);
  if (shape.stages > 1 && !groups)
    throw Error(ErrorCode::internal, "pipeline", "pipeline stages need process groups");
  const auto started = std::chrono::steady_clock::now();
  PipelineStepResult result;
  Channel channel(groups, result);
  const int chunks = shape.chunks(), last = chunks - 1;
  std::map<std::pair<int, int>, InFlight> in_flight;

  for (const PipelineOp& op : ops) {
    const int g = op.chunk, j = op.micro_batch;
    if (op.kind == PipelineOp::Kind::forward) {
      InFlight state;
      DiTPass pass;
      if (g == 0) {
        pass = hooks.begin(j);
      } else {
        state.inputs = channel.receive(stage_of_chunk(shape, g - 1), message_tag(true, g, j, chunks), device);
        for (size_t i = 0; i < state.inputs.size(); ++i)
          if (carries_gradient(i) && state.inputs[i].defined())
            state.inputs[i] = state.inputs[i].detach().requires_grad_(true);
        pass = hooks.resume(j, from_list(state.inputs));
      }
      hooks.blocks(pass, chunk_blocks(shape, g));
      if (g == last) {
        state.loss = hooks.loss(j, pass);
        result.loss += state.loss.detach().item<double>();
      } else {
        state.outputs = as_list(pass.boundary);
        channel.send(state.outputs, stage_of_chunk(shape, g + 1), message_tag(true, g + 1, j, chunks));
      }
      in_flight[{g, j}] = std::move(state);
      continue;
    }
    auto it = in_flight.find({g, j});
    if (it == in_flight.end())
      throw Error(ErrorCode::internal, "pipeline",
                  cat("backward of chunk ", g, " micro-batch ", j, " before its forward"));
    InFlight& state = it->second;
    if (g == last) {
      if (state.loss.requires_grad()) state.loss.backward();
    } else {
      auto grads = channel.receive(stage_of_chunk(shape, g + 1), message_tag(false, g, j, chunks), device);
      std::vector<torch::Tensor> outputs, output_grads;
      for (size_t i = 0; i < state.outputs.size(); ++i)
        if (carries_gradient(i) && state.outputs[i].defined() && state.outputs[i].requires_grad() &&
            grads[i].defined()) {
          outputs.push_back(state.outputs[i]);
          output_grads.push_back(grads[i]);
        }
      if (!outputs.empty()) torch::autograd::backward(outputs, output_grads);
    }
    if (g > 0) {
      std::vector<torch::Tensor> input_grads(state.inputs.size());
      for (size_t i = 0; i < state.inputs.size(); ++i)
        if (carries_gradient(i) && state.inputs[i].defined())
          input_grads[i] =
              state.inputs[i].grad().defined() ? state.inputs[i].grad() : torch::zeros_like(state.inputs[i]);
      channel.send(input_grads, stage_of_chunk(shape, g - 1), message_tag(false, g - 1, j, chunks));
    }
    in_flight.erase(it);
  }
  channel.finish();
  result.total_ms = since_ms(started);
  if (!in_flight.empty())
    throw Error(ErrorCode::internal, "pipeline",
                cat(in_flight.size(), " micro-batch(es) never ran backward"));
  return result;
}

}  // namespace mugv
