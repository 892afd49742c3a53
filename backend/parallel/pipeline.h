#pragma once
// Pipeline parallelism of the DiT (docs/PARALLEL.md "Pipeline stages"), torch-free: which blocks and
// parameters each stage holds, and the order in which a stage runs its forward and backward passes.
//
// Chunks: the DiT's `depth` blocks are cut into stages × virtual contiguous chunks (as equal as possible,
// the first chunks taking the remainder's extra block). Chunk g lives on stage g mod stages, so with
// virtual = 1 stage s holds chunk s, and with virtual = v (the interleaved schedule) stage s holds chunks
// s, s + stages, ... Chunk 0 also holds everything before the blocks (the text encoder, the embedders, the
// adaLN-single linear, start / end tokens, the caption projection and the null caption); the last chunk
// holds the final layer. Activations travel from chunk g to chunk g + 1, gradients back.
//
// Schedules (Megatron-LM's): micro-batches of one step run as
//   1F1B          stage s first runs min(stages − s − 1, m) forwards (warm-up), then alternates one forward
//                 and one backward, then runs the remaining backwards (cool-down). At most stages − s
//                 micro-batches are in flight on stage s. Bubble: (p − 1) / (m + p − 1) of the step.
//   interleaved   the same over every stage's v chunks: forwards go through a stage's chunks in groups of
//                 `stages` micro-batches, backwards through them in reverse; warm-up
//                 (p − s − 1)·2 + (v − 1)·p virtual micro-batches. Needs m to be a multiple of stages.
//                 Bubble: (p − 1) / (v·m + p − 1).
// A stage runs its ops in the listed order, posting sends without waiting and blocking on receives; every
// schedule here completes under that rule (tested by simulating all stages).
// Pure functions; thread-safe.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class PipelineSchedule { unknown = 0, one_f_one_b, interleaved };
const char* to_string(PipelineSchedule schedule);  // "1f1b", "interleaved"
std::optional<PipelineSchedule> pipeline_schedule_from_string(std::string_view name);

struct PipelineShape {
  int depth = 0;           // DiT blocks
  int stages = 1;          // pp
  int virtual_stages = 1;  // chunks per stage (1: 1F1B; > 1: interleaved)
  int chunks() const { return stages * virtual_stages; }
};

// Throws Error(invalid_argument) naming the value: stages or virtual stages < 1, fewer blocks than chunks,
// or (when micro_batches > 0 and virtual_stages > 1) micro-batches not a multiple of the stages.
void validate_pipeline(const PipelineShape& shape, int micro_batches = 0);

struct BlockRange {
  int first = 0, last = 0;  // blocks [first, last)
  int size() const { return last - first; }
};
[[nodiscard]] BlockRange chunk_blocks(const PipelineShape& shape, int chunk);
[[nodiscard]] int stage_of_chunk(const PipelineShape& shape, int chunk);
// The global chunks stage `stage` holds, in order (s, s + stages, ...).
[[nodiscard]] std::vector<int> chunks_of_stage(const PipelineShape& shape, int stage);
// The blocks stage `stage` holds (the sum of its chunks' blocks).
[[nodiscard]] int stage_block_count(const PipelineShape& shape, int stage);
// The stage holding a parameter, by its checkpoint name ("dit.blocks.7.attn.qkv.weight", "text.…",
// "dit.final_layer.linear.weight"; LoRA adapters and optimizer-state prefixes such as "exp_avg." follow
// their parameter).
[[nodiscard]] int stage_of_parameter(const PipelineShape& shape, const std::string& name);

struct PipelineOp {
  enum class Kind { forward, backward };
  Kind kind = Kind::forward;
  int chunk = 0;        // global chunk
  int micro_batch = 0;  // 0 … m − 1
  bool operator==(const PipelineOp& o) const {
    return kind == o.kind && chunk == o.chunk && micro_batch == o.micro_batch;
  }
};
// The ops stage `stage` runs for one step of `micro_batches` micro-batches (every forward and backward of
// each of its chunks, once). Throws like validate_pipeline.
[[nodiscard]] std::vector<PipelineOp> pipeline_ops(const PipelineShape& shape, int stage, int micro_batches);

// Idle fraction of a step under the schedule's ideal timing (equal stage times, free communication):
// (p − 1) / (v·m + p − 1).
[[nodiscard]] double pipeline_bubble_fraction(const PipelineShape& shape, int micro_batches);
// The most micro-batches whose activations stage `stage` keeps at once (counting each chunk's micro-batch
// separately and scaled to whole-stage units: a chunk holds 1/v of the stage's blocks).
[[nodiscard]] double pipeline_in_flight(const PipelineShape& shape, int stage, int micro_batches);
// The most micro-batches whose activations one chunk keeps at once (its forwards run, their backwards not
// yet): what the parts held by chunk 0 (embedders, caption projection) and by the last chunk (final layer,
// loss) keep. Equals pipeline_in_flight of its stage when virtual_stages is 1. Throws like
// validate_pipeline, and for a chunk outside 0 … chunks − 1.
[[nodiscard]] int pipeline_chunk_in_flight(const PipelineShape& shape, int chunk, int micro_batches);

}  // namespace mugv
