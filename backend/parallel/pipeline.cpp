#include "parallel/pipeline.h"

#include "core/error.h"
#include "core/strings.h"

#include <algorithm>
#include <cstdlib>

namespace mugv {

const char* to_string(PipelineSchedule schedule) {
  switch (schedule) {
    case PipelineSchedule::one_f_one_b:
      return "1f1b";
    case PipelineSchedule::interleaved:
      return "interleaved";
    default:
      return "unknown";
  }
}

std::optional<PipelineSchedule> pipeline_schedule_from_string(std::string_view name) {
  if (name == "1f1b") return PipelineSchedule::one_f_one_b;
  if (name == "interleaved") return PipelineSchedule::interleaved;
  return std::nullopt;
}

void validate_pipeline(const PipelineShape& shape, int micro_batches) {
  const std::string subject = cat("pp ", shape.stages, " x virtual ", shape.virtual_stages);
  if (shape.stages < 1 || shape.virtual_stages < 1)
    throw Error(ErrorCode::invalid_argument, subject,
                "pipeline stages and virtual stages must be at least 1");
  if (shape.depth < shape.chunks())
    throw Error(ErrorCode::invalid_argument, subject,
                cat(shape.depth, " blocks cannot be split into ", shape.chunks(), " pipeline chunks"));
  if (micro_batches > 0 && shape.virtual_stages > 1 && micro_batches % shape.stages != 0)
    throw Error(ErrorCode::invalid_argument, subject,
                cat("the interleaved schedule needs the micro-batches (", micro_batches,
                    ") to be a multiple of the pipeline stages (", shape.stages, ")"));
}

BlockRange chunk_blocks(const PipelineShape& shape, int chunk) {
  const int chunks = shape.chunks(), base = shape.depth / chunks, extra = shape.depth % chunks;
  const int first = chunk * base + std::min(chunk, extra);
  return {first, first + base + (chunk < extra ? 1 : 0)};
}

int stage_of_chunk(const PipelineShape& shape, int chunk) {
  return chunk % shape.stages;
}

std::vector<int> chunks_of_stage(const PipelineShape& shape, int stage) {
  std::vector<int> chunks;
  for (int v = 0; v < shape.virtual_stages; ++v) chunks.push_back(v * shape.stages + stage);
  return chunks;
}

int stage_block_count(const PipelineShape& shape, int stage) {
  int blocks = 0;
  for (int chunk : chunks_of_stage(shape, stage)) blocks += chunk_blocks(shape, chunk).size();
  return blocks;
}

int stage_of_parameter(const PipelineShape& shape, const std::string& name) {
  static const std::string kBlocks = "dit.blocks.", kFinal = "dit.final_layer.";
  if (const size_t at = name.find(kBlocks); at != std::string::npos) {
    const int block = std::atoi(name.c_str() + at + kBlocks.size());
    for (int chunk = 0; chunk < shape.chunks(); ++chunk) {
      const BlockRange range = chunk_blocks(shape, chunk);
      if (block >= range.first && block < range.last) return stage_of_chunk(shape, chunk);
    }
    throw Error(ErrorCode::invalid_argument, name,
                cat("block ", block, " is beyond the model's ", shape.depth));
  }
  if (name.find(kFinal) != std::string::npos) return stage_of_chunk(shape, shape.chunks() - 1);
  return 0;
}

std::vector<PipelineOp> pipeline_ops(const PipelineShape& shape, int stage, int micro_batches) {
  validate_pipeline(shape, micro_batches);
  const int p = shape.stages, v = shape.virtual_stages, total = micro_batches * v;
  // Virtual micro-batch k: which of this stage's chunks and which micro-batch (Megatron's interleaving:
  // groups of p micro-batches go through chunk 0, then chunk 1, ...; backwards through the chunks in
  // reverse).
  auto op = [&](PipelineOp::Kind kind, int k) {
    int local = (k % (p * v)) / p;
    if (kind == PipelineOp::Kind::backward) local = v - 1 - local;
    return PipelineOp{kind, local * p + stage, (k / (p * v)) * p + k % p};
  };
  int warmup = v == 1 ? p - stage - 1 : (p - stage - 1) * 2 + (v - 1) * p;
  warmup = std::min(warmup, total);
  std::vector<PipelineOp> ops;
  for (int k = 0; k < warmup; ++k) ops.push_back(op(PipelineOp::Kind::forward, k));
  for (int i = 0; i < total - warmup; ++i) {
    ops.push_back(op(PipelineOp::Kind::forward, warmup + i));
    ops.push_back(op(PipelineOp::Kind::backward, i));
  }
  for (int i = total - warmup; i < total; ++i) ops.push_back(op(PipelineOp::Kind::backward, i));
  return ops;
}

double pipeline_bubble_fraction(const PipelineShape& shape, int micro_batches) {
  const double p = shape.stages, v = shape.virtual_stages, m = micro_batches;
  return (p - 1) / (v * m + p - 1);
}

namespace {

// The most forwards of `ops` (those of chunk `chunk`, or all when it is negative) whose backward has not run
// yet, at any point of the stage's order.
int most_live(const std::vector<PipelineOp>& ops, int chunk) {
  int live = 0, most = 0;
  for (const auto& op : ops) {
    if (chunk >= 0 && op.chunk != chunk) continue;
    live += op.kind == PipelineOp::Kind::forward ? 1 : -1;
    most = std::max(most, live);
  }
  return most;
}

}  // namespace

double pipeline_in_flight(const PipelineShape& shape, int stage, int micro_batches) {
  return double(most_live(pipeline_ops(shape, stage, micro_batches), -1)) / shape.virtual_stages;
}

int pipeline_chunk_in_flight(const PipelineShape& shape, int chunk, int micro_batches) {
  validate_pipeline(shape, micro_batches);
  if (chunk < 0 || chunk >= shape.chunks())
    throw Error(ErrorCode::invalid_argument, cat("chunk ", chunk),
                cat("the pipeline has chunks 0 to ", shape.chunks() - 1));
  return most_live(pipeline_ops(shape, stage_of_chunk(shape, chunk), micro_batches), chunk);
}

}  // namespace mugv
