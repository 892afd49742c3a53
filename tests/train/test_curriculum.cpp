// The training curriculum (train/curriculum.h): its file's checks, the stage and batch shape of every step,
// and a run that follows it, writes what it did into its metrics and resumes bit for bit from its own copy.

#include "core/error.h"
#include "core/json_io.h"
#include "core/params.h"
#include "core/safetensors.h"
#include "model/weights.h"
#include "support/micro_home.h"
#include "support/test_support.h"
#include "train/checkpoint_store.h"
#include "train/curriculum.h"
#include "train/run_layout.h"
#include "train/train_params.h"
#include "train/trainer.h"

#include <catch2/catch.hpp>

#include <fstream>

using namespace mugv;

namespace {

std::string problem_with(const std::string& toml) {
  test::TempDir dir;
  const fs::path file = dir / "c.toml";
  std::ofstream(file) << toml;
  try {
    (void)load_curriculum(file.string());
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    return e.what();
  }
  return {};
}

// Images first (steps 1-2), then 2 → 4 latent frames with conditioning (3-5), then whole clips (6-8).
const char* kThreeStages =
    "[[stage]]\nuntil = 2\nimage_share = 1.0\n"
    "[[stage]]\nuntil = 5\nlatent_frames = 2\nlatent_frames_end = 4\np_first_frame = 0.5\n"
    "[[stage]]\nuntil = 8\n";

}  // namespace

TEST_CASE("a curriculum file is checked key by key and names what is wrong", "[unit][train]") {
  test::TempDir dir;
  std::ofstream(dir / "good.toml") << kThreeStages;
  const Curriculum c = load_curriculum((dir / "good.toml").string());
  REQUIRE(c.stages.size() == 3);
  CHECK(c.stages[0].image_share == 1.0);
  CHECK(c.stages[0].image_share_end == 1.0);  // defaults to the start
  CHECK(c.stages[1].latent_frames_end == 4);
  CHECK(c.stages[1].p_first_frame == 0.5);
  CHECK_FALSE(c.stages[2].p_first_frame);

  CHECK(problem_with("").find("no [[stage]]") != std::string::npos);
  CHECK(problem_with("[[stage]]\nimage_share = 0.5\n").find("key 'until'") != std::string::npos);
  CHECK(problem_with("[[stage]]\nuntil = 5\nuntil_share = 0.5\n").find("key 'until'") != std::string::npos);
  const std::string back = problem_with("[[stage]]\nuntil = 5\n[[stage]]\nuntil = 5\n");
  CHECK(back.find("stage 2") != std::string::npos);
  CHECK(back.find("does not follow") != std::string::npos);
  const std::string share = problem_with("[[stage]]\nuntil = 5\nimage_share = 1.5\n");
  CHECK(share.find("c.toml: stage 1") != std::string::npos);
  CHECK(share.find("key 'image_share'") != std::string::npos);
  CHECK(problem_with("[[stage]]\nuntil = 5\nframes = 2\n").find("unknown key 'frames'") != std::string::npos);
  CHECK(problem_with("[[stage]]\nuntil = 5\nlatent_frames = 2\nlatent_frames_end = 0\n")
            .find("key 'latent_frames_end'") != std::string::npos);
  CHECK(problem_with("[[stage]]\nuntil = 5\np_first_frame = -0.1\n").find("key 'p_first_frame'") !=
        std::string::npos);
  CHECK(problem_with("stages = 1\n").find("unknown key 'stages'") != std::string::npos);

  // Shares of the run's steps resolve to steps; a run too short to separate the stages is refused.
  std::ofstream(dir / "shares.toml") << "[[stage]]\nuntil_share = 0.25\n[[stage]]\nuntil_share = 1.0\n";
  const Curriculum shares = load_curriculum((dir / "shares.toml").string());
  const Curriculum at100 = shares.resolved(100);
  CHECK(at100.stages[0].until == 25);
  CHECK(at100.stages[1].until == 100);
  try {
    (void)shares.resolved(1);
    FAIL("a one-step run cannot hold two stages");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("too short") != std::string::npos);
  }
  // The stored form reads back the same.
  const Curriculum again = curriculum_from_json(at100.to_json(), "stored");
  CHECK(again.stages[0].until == 25);
  // The shipped presets load and resolve for a 1500-step run.
  for (const char* name : {"mugv", "tiny"}) CHECK(load_curriculum(name).resolved(1500).stages.size() == 3);
}

TEST_CASE("each step's stage, images and clip length follow the curriculum, the same for any caller",
          "[unit][train]") {
  const Curriculum c = curriculum_from_json(
      {{"stage",
        {{{"until", 100}, {"image_share", 0.5}},
         {{"until", 110}, {"latent_frames", 2}, {"latent_frames_end", 7}, {"p_first_frame", 0.2}},
         {{"until", 1000}, {"image_share", 1.0}, {"image_share_end", 0.0}}}}},
      "test");
  int images = 0;
  for (int64_t step = 1; step <= 100; ++step) {
    const CurriculumStep s = curriculum_step(c, step, 3);
    CHECK(s.stage == 0);
    CHECK(s.latent_frames == 0);
    images += s.images;
    CHECK(curriculum_step(c, step, 3).images == s.images);  // a function of (seed, step) alone
  }
  CHECK(images > 35);
  CHECK(images < 65);
  // The clip length rises linearly over the stage: 2 at its first step, 7 at its last.
  CHECK(curriculum_step(c, 101, 3).stage == 1);
  CHECK(curriculum_step(c, 101, 3).latent_frames == 2);
  CHECK(curriculum_step(c, 110, 3).latent_frames == 7);
  CHECK(curriculum_step(c, 105, 3).latent_frames == 4);  // 2 + 5 * 4/9 = 4.2
  CHECK(*curriculum_step(c, 105, 3).p_first_frame == 0.2);
  CHECK_FALSE(curriculum_step(c, 105, 3).images);
  // The share anneals from 1 to 0 over the last stage: images early, video late; past the end it holds.
  int early = 0, late = 0;
  for (int64_t step = 111; step < 211; ++step) early += curriculum_step(c, step, 3).images;
  for (int64_t step = 900; step < 1000; ++step) late += curriculum_step(c, step, 3).images;
  CHECK(early > 80);
  CHECK(late < 20);
  CHECK(curriculum_step(c, 5000, 3).stage == 2);
  CHECK_FALSE(curriculum_step(c, 5000, 3).images);
  CHECK(curriculum_step(Curriculum{}, 7, 3).stage == -1);
}

TEST_CASE("a run follows its curriculum, reports each step's shape and resumes from its own copy bit for bit",
          "[train]") {
  test::MicroHome home(6);
  test::TempDir dir;
  const fs::path file = dir / "three.toml";
  std::ofstream(file) << kThreeStages;

  auto straight = test::micro_train_options("straight", 8);
  straight.curriculum = file.string();
  train_dit(straight, {}, CancelToken());
  const auto metrics = test::run_metrics("straight");
  REQUIRE(metrics.size() == 8);
  const std::vector<int64_t> frames = {1, 1, 2, 3, 4, 5, 5, 5};  // the micro latents have 5 frames
  for (size_t i = 0; i < metrics.size(); ++i) {
    INFO("step " << i + 1 << ": " << metrics[i].dump());
    REQUIRE(metrics[i].contains("curriculum"));
    const auto& c = metrics[i]["curriculum"];
    CHECK(c["stage"] == (i < 2 ? 0 : i < 5 ? 1 : 2));
    CHECK(c["images"] == (i < 2));
    CHECK(c["latent_frames"] == frames[i]);
    CHECK(c["p_first_frame"] == (i < 2 ? 0.0 : i < 5 ? 0.5 : 0.3));  // images never condition
    CHECK(std::isfinite(metrics[i]["loss"].get<double>()));
  }
  // Fewer tokens while the clips are short.
  CHECK(metrics[0]["tokens_per_s"].get<double>() > 0);
  CHECK(fs::is_regular_file(run_paths("straight").root / "curriculum.json"));

  // Stopped after step 3 (in the second stage), the file deleted, resumed: the run reads its own copy and
  // ends where the uninterrupted one did.
  CancelToken cancel;
  TrainCallbacks stop;
  stop.before_step = [&](int64_t step, DiTBundleImpl&) {
    if (step == 4) cancel.request_cancel();
  };
  auto split = test::micro_train_options("split", 8);
  split.curriculum = file.string();
  split.save_every = 100;
  try {
    nlohmann::json config = test::micro_train_config(8);
    config["train"]["save_every"] = 100;
    config["train"]["curriculum"] = file.string();
    train_dit(split, config, cancel, stop);
    FAIL("the run was to be cancelled");
  } catch (const Error& e) {
    REQUIRE(e.code() == ErrorCode::cancelled);
  }
  fs::remove(file);
  const TrainResult resumed = resume_dit("split", ResumeChanges{}, CancelToken());
  CHECK(resumed.start_step == 3);
  const auto split_metrics = test::run_metrics("split");
  REQUIRE(split_metrics.size() == 8);
  for (size_t i = 0; i < 8; ++i) {
    INFO("step " << i + 1);
    CHECK(split_metrics[i]["curriculum"] == metrics[i]["curriculum"]);
    CHECK(split_metrics[i]["loss"] == metrics[i]["loss"]);
  }
  CheckpointStore a(run_paths("straight").checkpoints()), b(run_paths("split").checkpoints());
  auto wa = SafetensorsFile::open(a.open(8).dir / "model.safetensors");
  auto wb = SafetensorsFile::open(b.open(8).dir / "model.safetensors");
  REQUIRE(wa.names() == wb.names());
  for (const auto& name : wa.names()) {
    INFO(name);
    CHECK(torch::equal(tensor_from_view(wa.at(name), "a"), tensor_from_view(wb.at(name), "b")));
  }
}

TEST_CASE("a curriculum is for flow training: preference objectives refuse it", "[unit][train]") {
  ParamRegistry registry;
  define_train_params(registry, TrainKind::dit);
  ParamValues values = resolve(registry, ParamLayers{});
  values.set("train.run", "r", ParamSource::command_line);
  values.set("train.objective", "dpo", ParamSource::command_line);
  values.set("train.from", "base", ParamSource::command_line);
  values.set("train.curriculum", "tiny", ParamSource::command_line);
  try {
    (void)train_options_from(values, TrainKind::dit);
    FAIL("refused");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(e.code() == ErrorCode::usage);
    CHECK(std::string(e.what()).find("--curriculum") != std::string::npos);
  }
}
