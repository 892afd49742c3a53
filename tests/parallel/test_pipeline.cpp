#include "core/error.h"
#include "parallel/pipeline.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

using namespace mugv;

namespace {

using Kind = PipelineOp::Kind;

// Runs every stage's ops as the trainer does (sends posted at once, receives blocking) until all are done or
// no stage can move; returns the ops left undone (0 when the schedule completes). Also checks that each
// chunk's backward of a micro-batch comes after its forward on the same stage.
int simulate(const PipelineShape& shape, int micro_batches) {
  std::vector<std::vector<PipelineOp>> ops;
  for (int s = 0; s < shape.stages; ++s) ops.push_back(pipeline_ops(shape, s, micro_batches));
  std::vector<size_t> next(size_t(shape.stages), 0);
  std::set<std::tuple<Kind, int, int>> delivered;  // (direction, receiving chunk, micro-batch)
  std::set<std::pair<int, int>> forwarded;
  const int last = shape.chunks() - 1;
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < shape.stages; ++s) {
      while (next[size_t(s)] < ops[size_t(s)].size()) {
        const PipelineOp op = ops[size_t(s)][next[size_t(s)]];
        const bool ready =
            op.kind == Kind::forward
                ? op.chunk == 0 || delivered.count({Kind::forward, op.chunk, op.micro_batch})
                : op.chunk == last || delivered.count({Kind::backward, op.chunk, op.micro_batch});
        if (!ready) break;
        if (op.kind == Kind::forward) {
          forwarded.insert({op.chunk, op.micro_batch});
          if (op.chunk < last) delivered.insert({Kind::forward, op.chunk + 1, op.micro_batch});
        } else {
          REQUIRE(forwarded.count({op.chunk, op.micro_batch}));
          if (op.chunk > 0) delivered.insert({Kind::backward, op.chunk - 1, op.micro_batch});
        }
        ++next[size_t(s)];
        moved = true;
      }
    }
  }
  int left = 0;
  for (int s = 0; s < shape.stages; ++s) left += int(ops[size_t(s)].size() - next[size_t(s)]);
  return left;
}

}  // namespace

TEST_CASE("pipeline chunks: contiguous blocks, embedders first, final layer last", "[unit][parallel]") {
  const PipelineShape two{6, 2, 1};
  CHECK(chunk_blocks(two, 0).first == 0);
  CHECK(chunk_blocks(two, 0).last == 3);
  CHECK(chunk_blocks(two, 1).first == 3);
  CHECK(chunk_blocks(two, 1).last == 6);
  const PipelineShape uneven{7, 3, 1};
  CHECK(chunk_blocks(uneven, 0).size() == 3);
  CHECK(chunk_blocks(uneven, 1).size() == 2);
  CHECK(chunk_blocks(uneven, 2).last == 7);
  const PipelineShape interleaved{8, 2, 2};  // chunks 0..3 of 2 blocks: stage 0 holds 0 and 2
  CHECK(chunks_of_stage(interleaved, 0) == std::vector<int>{0, 2});
  CHECK(chunks_of_stage(interleaved, 1) == std::vector<int>{1, 3});
  CHECK(stage_of_parameter(interleaved, "dit.blocks.5.attn.qkv.weight") == 0);  // chunk 2
  CHECK(stage_of_parameter(interleaved, "dit.blocks.2.mlp.fc1.lora_A.weight") == 1);
  CHECK(stage_of_parameter(interleaved, "exp_avg.dit.blocks.7.mlp.fc2.weight@128") == 1);
  CHECK(stage_of_parameter(interleaved, "dit.final_layer.linear.weight") == 1);
  CHECK(stage_of_parameter(two, "text.embedding.weight") == 0);
  CHECK(stage_of_parameter(two, "dit.t_block.1.weight") == 0);
  CHECK(stage_of_parameter(two, "dit.start_token") == 0);
  CHECK_THROWS_WITH(stage_of_parameter(two, "dit.blocks.9.attn.proj.weight"), Catch::Contains("block 9"));
  CHECK_THROWS_WITH(validate_pipeline({3, 4, 1}), Catch::Contains("3 blocks cannot be split into 4"));
  CHECK_THROWS_WITH(validate_pipeline({8, 2, 2}, 3), Catch::Contains("multiple of the pipeline stages"));
  CHECK_THROWS_AS(validate_pipeline({8, 0, 1}), Error);
  CHECK(pipeline_schedule_from_string("interleaved") == PipelineSchedule::interleaved);
  CHECK_FALSE(pipeline_schedule_from_string("gpipe"));
}

TEST_CASE("1F1B: warm-up forwards, alternation, cool-down backwards", "[unit][parallel]") {
  const PipelineShape shape{4, 2, 1};
  const auto f = [](int j) { return PipelineOp{Kind::forward, 0, j}; };
  const auto b = [](int j) { return PipelineOp{Kind::backward, 0, j}; };
  CHECK(pipeline_ops(shape, 0, 4) == std::vector<PipelineOp>{f(0), f(1), b(0), f(2), b(1), f(3), b(2), b(3)});
  const auto last = pipeline_ops(shape, 1, 4);
  CHECK(last.size() == 8);
  CHECK(last[0] == PipelineOp{Kind::forward, 1, 0});
  CHECK(last[1] == PipelineOp{Kind::backward, 1, 0});
  // At most p − s micro-batches in flight on stage s (the memory 1F1B saves over all-forward-first).
  CHECK(pipeline_in_flight({8, 4, 1}, 0, 8) == 4);
  CHECK(pipeline_in_flight({8, 4, 1}, 3, 8) == 1);
  CHECK(pipeline_in_flight({8, 4, 1}, 0, 2) == 2);
  CHECK(pipeline_bubble_fraction({8, 2, 1}, 4) == Approx(1.0 / 5.0));
  CHECK(pipeline_bubble_fraction({8, 2, 2}, 4) == Approx(1.0 / 9.0));
}

TEST_CASE("every schedule runs each forward and backward once and completes on all stages",
          "[unit][parallel]") {
  for (int p : {1, 2, 3, 4})
    for (int v : {1, 2, 3})
      for (int m : {1, 2, 3, 4, 6, 8}) {
        const PipelineShape shape{24, p, v};
        if (v > 1 && m % p != 0) continue;
        INFO("p " << p << " v " << v << " m " << m);
        std::map<std::tuple<Kind, int, int>, int> count;
        for (int s = 0; s < p; ++s)
          for (const auto& op : pipeline_ops(shape, s, m)) {
            CHECK(stage_of_chunk(shape, op.chunk) == s);
            ++count[{op.kind, op.chunk, op.micro_batch}];
          }
        CHECK(count.size() == size_t(2 * shape.chunks() * m));
        for (const auto& [key, n] : count) CHECK(n == 1);
        CHECK(simulate(shape, m) == 0);
      }
}

TEST_CASE("stage blocks add up to the depth, and one chunk's in-flight count follows its schedule",
          "[unit][parallel]") {
  for (const PipelineShape shape : {PipelineShape{56, 4, 1}, PipelineShape{56, 4, 2}, PipelineShape{7, 3, 1},
                                    PipelineShape{56, 16, 1}, PipelineShape{10, 2, 3}}) {
    int blocks = 0;
    for (int s = 0; s < shape.stages; ++s) blocks += stage_block_count(shape, s);
    CHECK(blocks == shape.depth);
  }
  CHECK(stage_block_count({7, 3, 1}, 0) == 3);
  CHECK(stage_block_count({7, 3, 1}, 2) == 2);
  CHECK(stage_block_count({56, 4, 2}, 1) == 14);  // chunks 1 and 5, 7 blocks each
  // 1F1B: a chunk is its stage, so both counts agree: min(p − s, m).
  for (int s = 0; s < 4; ++s)
    for (int m : {1, 2, 3, 8}) {
      INFO("stage " << s << " m " << m);
      CHECK(pipeline_chunk_in_flight({8, 4, 1}, s, m) == std::min(4 - s, m));
      CHECK(pipeline_in_flight({8, 4, 1}, s, m) == pipeline_chunk_in_flight({8, 4, 1}, s, m));
    }
  // Interleaved, 4 stages x 2 chunks, 8 micro-batches: stage 0 warms up with (4 − 1)·2 + 4 = 10 forwards
  // (4 of chunk 0, 4 of chunk 4, 2 of chunk 0), then alternates; its first backwards are chunk 4's, and the
  // two forwards between them are chunk 0's: all 8 micro-batches of chunk 0 are alive before its first
  // backward. The stage as a whole peaks at 11 virtual micro-batches = 5.5 whole-stage ones.
  CHECK(pipeline_chunk_in_flight({8, 4, 2}, 0, 8) == 8);
  CHECK(pipeline_in_flight({8, 4, 2}, 0, 8) == Approx(5.5));
  CHECK(pipeline_chunk_in_flight({8, 4, 2}, 7, 8) == 1);  // the last chunk: its backward follows each forward
  CHECK_THROWS_WITH(pipeline_chunk_in_flight({8, 4, 2}, 8, 8), Catch::Contains("chunk 8"));
}

TEST_CASE("in-flight counts stop growing at 3 x pp micro-batches (the memory model counts no more)",
          "[unit][parallel]") {
  for (int p : {1, 2, 3, 4, 5})
    for (int v : {1, 2, 3}) {
      const PipelineShape shape{60, p, v};
      const int saturated = 3 * p;
      for (int m = saturated; m <= saturated + 4 * p; m += v > 1 ? p : 1) {
        INFO("p " << p << " v " << v << " m " << m);
        for (int s = 0; s < p; ++s)
          CHECK(pipeline_in_flight(shape, s, m) == pipeline_in_flight(shape, s, saturated));
        for (int chunk = 0; chunk < shape.chunks(); ++chunk)
          CHECK(pipeline_chunk_in_flight(shape, chunk, m) ==
                pipeline_chunk_in_flight(shape, chunk, saturated));
      }
    }
}
