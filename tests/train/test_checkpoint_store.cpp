#include "train/checkpoint_store.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fstream>

using namespace mugv;
using mugv::test::TempDir;
using mugv::test::write_bytes;

namespace {

CheckpointRef save(CheckpointStore& store, int64_t step, const std::string& payload) {
  fs::path staging = store.begin(step);
  write_bytes(staging / "model.safetensors", payload);
  write_bytes(staging / "state.json", "{\"step\": " + std::to_string(step) + "}");
  return store.commit(staging, step, {{"loss", 0.5}});
}

}  // namespace

TEST_CASE("checkpoints commit atomically, list by step and point latest at the newest", "[unit][train]") {
  TempDir dir;
  CheckpointStore store(dir / "checkpoints");
  save(store, 10, "ten");
  save(store, 20, "twenty");
  auto refs = store.list();
  REQUIRE(refs.size() == 2);
  CHECK(refs[0].step == 10);
  CHECK(refs[1].step == 20);
  CHECK(trim(read_text_file(dir / "checkpoints" / "latest")) == "step-20");
  auto latest = store.latest_good();
  REQUIRE(latest);
  CHECK(latest->step == 20);
  CHECK(latest->metadata["loss"] == 0.5);
  // No staging folder is left behind.
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    CHECK(e.path().filename().string().rfind(".staging", 0) != 0);
}

TEST_CASE("a damaged checkpoint is refused with its reason and the last good one is used", "[unit][train]") {
  TempDir dir;
  CheckpointStore store(dir / "checkpoints");
  save(store, 1, std::string(1000, 'a'));
  save(store, 2, std::string(1000, 'b'));

  SECTION("flipped byte: SHA-256 mismatch") {
    std::fstream f(dir / "checkpoints" / "step-2" / "model.safetensors",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(500);
    f.put('X');
  }
  SECTION("truncated file") {
    fs::resize_file(dir / "checkpoints" / "step-2" / "model.safetensors", 10);
  }
  SECTION("missing file") {
    fs::remove(dir / "checkpoints" / "step-2" / "state.json");
  }

  std::vector<CheckpointProblem> problems;
  auto good = store.latest_good([&](const CheckpointProblem& p) { problems.push_back(p); });
  REQUIRE(good);
  CHECK(good->step == 1);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].dir.filename() == "step-2");
  CHECK_THROWS_AS(store.open(2), Error);
  try {
    (void)store.open(2);
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::corrupt);
  }
}

TEST_CASE("an interrupted commit leaves the previous checkpoint in force", "[unit][train]") {
  TempDir dir;
  CheckpointStore store(dir / "checkpoints");
  save(store, 5, "five");
  fs::path staging = store.begin(6);  // a writer that dies before commit()
  write_bytes(staging / "model.safetensors", "half");
  auto good = store.latest_good();
  REQUIRE(good);
  CHECK(good->step == 5);
  CHECK(store.list().size() == 1);
  // The next writer clears the leftovers.
  (void)store.begin(7);
  int staging_dirs = 0;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    staging_dirs += e.path().filename().string().rfind(".staging", 0) == 0;
  CHECK(staging_dirs == 1);
}

TEST_CASE("prune keeps the newest checkpoints", "[unit][train]") {
  TempDir dir;
  CheckpointStore store(dir / "checkpoints");
  for (int s = 1; s <= 5; ++s) save(store, s, "x" + std::to_string(s));
  CHECK(store.prune(2) == 3);
  auto refs = store.list();
  REQUIRE(refs.size() == 2);
  CHECK(refs[0].step == 4);
  CHECK(refs[1].step == 5);
  CHECK_FALSE(store.latest_good() == std::nullopt);
}
