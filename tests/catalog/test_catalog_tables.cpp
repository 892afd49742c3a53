#include "catalog/datasets.h"
#include "catalog/generations.h"
#include "catalog/prompts.h"
#include "catalog/runs.h"
#include "catalog/sources.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

TEST_CASE("a dataset name is one path component: traversal, separators and control characters are refused",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const std::vector<std::string> refused = {"../../../../x",      "a/b", "a\\b", "..", ".", "tab\tname",
                                            std::string(201, 'x')};
  for (const std::string& bad : refused) {
    INFO(bad);
    try {
      (void)create_dataset(catalog, {0, bad, DatasetKind::video, "/data/x", "", 0});
      FAIL("refused");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::invalid_argument);
      CHECK_THAT(e.message(), Catch::Contains("a dataset name"));
    }
  }
  CHECK(list_datasets(catalog).empty());
  // Spaces, dots inside and Unicode are fine.
  CHECK(create_dataset(catalog, {0, "my clips v1.2 \xC3\xA9t\xC3\xA9", DatasetKind::video, "/d", "", 0}).id >
        0);
}

TEST_CASE("datasets round-trip and a taken name is a conflict with a clear message", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Dataset created =
      create_dataset(catalog, {0, "shapes", DatasetKind::video, "/data/shapes", "starter", 0});
  CHECK(created.id > 0);
  CHECK(created.created_at_ms > 0);

  auto by_id = get_dataset(catalog, created.id);
  REQUIRE(by_id);
  CHECK(by_id->name == "shapes");
  CHECK(by_id->kind == DatasetKind::video);
  CHECK(by_id->root_dir == fs::path("/data/shapes"));
  CHECK(by_id->description == "starter");
  CHECK(by_id->created_at_ms == created.created_at_ms);

  try {
    (void)create_dataset(catalog, {0, "shapes", DatasetKind::image, "/elsewhere", "", 0});
    FAIL("a second dataset named shapes must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(e.subject() == catalog.path().string());
    CHECK_THAT(e.message(), Catch::Contains("\"shapes\" already exists"));
  }
  CHECK_THROWS_AS(create_dataset(catalog, {0, "  ", DatasetKind::video, "/x", "", 0}), Error);

  (void)create_dataset(catalog, {0, "animals", DatasetKind::mixed, "/data/animals", "", 0});
  auto all = list_datasets(catalog);
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "animals");

  Dataset renamed = *by_id;
  renamed.name = "shapes-v2";
  update_dataset(catalog, renamed);
  CHECK(find_dataset(catalog, "shapes-v2"));
  CHECK_FALSE(find_dataset(catalog, "shapes"));
  renamed.name = "animals";
  CHECK_THROWS_AS(update_dataset(catalog, renamed), Error);

  CHECK(delete_dataset(catalog, created.id));
  CHECK_FALSE(delete_dataset(catalog, created.id));
  CHECK(list_datasets(catalog).size() == 1);
}

TEST_CASE("sources are found by content hash and keep their probe results or failure reason",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  Source raw;
  raw.path = "/videos/beach.mp4";
  raw.content_hash = "blake2b:0011";
  raw.size_bytes = 123456789;
  const Source added = add_source(catalog, raw);
  CHECK(added.status == SourceStatus::pending);
  CHECK_FALSE(added.probed_at_ms);

  Source probed = added;
  probed.duration_s = 12.5;
  probed.fps = 29.97;
  probed.width = 1920;
  probed.height = 1080;
  probed.variable_frame_rate = true;
  probed.info = {{"codec", "h264"}, {"streams", 2}};
  set_source_probed(catalog, probed);

  auto found = find_source_by_hash(catalog, "blake2b:0011");
  REQUIRE(found);
  CHECK(found->id == added.id);
  CHECK(found->size_bytes == 123456789);
  CHECK(found->status == SourceStatus::ok);
  CHECK(found->duration_s == Approx(12.5));
  CHECK(found->fps == Approx(29.97));
  CHECK(found->width == 1920);
  CHECK(found->variable_frame_rate);
  CHECK(found->info["codec"] == "h264");
  CHECK(found->probed_at_ms);
  CHECK_FALSE(find_source_by_hash(catalog, "blake2b:ffff"));

  Source same_bytes = raw;
  same_bytes.path = "/copies/beach.mp4";
  try {
    (void)add_source(catalog, same_bytes);
    FAIL("a duplicate content hash must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK_THAT(e.message(), Catch::Contains("/videos/beach.mp4"));
  }

  Source broken;
  broken.path = "/videos/broken.mp4";
  broken.content_hash = "blake2b:0022";
  broken = add_source(catalog, broken);
  mark_source_failed(catalog, broken.id, "broken.mp4: no video stream");
  auto failed = list_sources(catalog, SourceStatus::failed);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].error_message == "broken.mp4: no video stream");
  CHECK(list_sources(catalog).size() == 2);
  CHECK_THROWS_AS(mark_source_failed(catalog, 999, "x"), Error);
}

TEST_CASE("prompts round-trip and are searched by literal text and by tag", "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Prompt circle =
      add_prompt(catalog, {0, "A red circle moving left", "blurry", {"shapes", "red", "shapes"}, 0});
  CHECK(circle.tags == std::vector<std::string>{"shapes", "red"});
  (void)add_prompt(catalog, {0, "a cat at 100% zoom", "", {"animals"}, 0});
  (void)add_prompt(catalog, {0, "a blue square", "", {"shapes"}, 0});

  auto got = get_prompt(catalog, circle.id);
  REQUIRE(got);
  CHECK(got->text == "A red circle moving left");
  CHECK(got->negative == "blurry");
  CHECK(got->tags == circle.tags);

  CHECK(list_prompts(catalog).size() == 3);
  PromptQuery text_query;
  text_query.text_contains = "RED CIRCLE";
  CHECK(list_prompts(catalog, text_query).size() == 1);
  text_query.text_contains = "100%";
  CHECK(list_prompts(catalog, text_query).size() == 1);
  text_query.text_contains = "1_0";  // '_' must not act as a wildcard
  CHECK(list_prompts(catalog, text_query).empty());
  PromptQuery tag_query;
  tag_query.tag = "shapes";
  CHECK(list_prompts(catalog, tag_query).size() == 2);
  tag_query.text_contains = "blue";
  CHECK(list_prompts(catalog, tag_query).size() == 1);
  PromptQuery page;
  page.limit = 2;
  CHECK(list_prompts(catalog, page).size() == 2);

  Prompt edited = *got;
  edited.text = "a red circle moving right";
  edited.tags = {"edited"};
  update_prompt(catalog, edited);
  CHECK(get_prompt(catalog, circle.id)->tags == std::vector<std::string>{"edited"});
  CHECK(delete_prompt(catalog, circle.id));
  CHECK_FALSE(get_prompt(catalog, circle.id));
  CHECK_THROWS_AS(add_prompt(catalog, {0, "", "", {}, 0}), Error);
}

TEST_CASE("runs and checkpoints round-trip, and the latest checkpoint is the highest step",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Dataset shapes = create_dataset(catalog, {0, "shapes", DatasetKind::video, "/d", "", 0});
  Run run;
  run.name = "tiny-shapes";
  run.kind = RunKind::pretrain;
  run.preset = "tiny";
  run.dataset_id = shapes.id;
  run.config = {{"lr", 1e-4}, {"steps", 2000}};
  run.dir = "/home/u/.local/share/mugv/runs/1";
  run = create_run(catalog, run);

  auto got = find_run(catalog, "tiny-shapes");
  REQUIRE(got);
  CHECK(got->id == run.id);
  CHECK(got->kind == RunKind::pretrain);
  CHECK(got->state == RunState::created);
  CHECK(got->dataset_id == shapes.id);
  CHECK(got->config["steps"] == 2000);
  CHECK(got->dir == run.dir);
  CHECK_THROWS_AS(create_run(catalog, run), Error);

  set_run_state(catalog, run.id, RunState::running);
  CHECK(list_runs(catalog, RunState::running).size() == 1);
  CHECK(list_runs(catalog, RunState::failed).empty());

  CHECK_FALSE(latest_checkpoint(catalog, run.id));
  for (int64_t step : {500, 1500, 1000})
    (void)add_checkpoint(catalog,
                         {0, run.id, step, run.dir / ("checkpoints/step-" + std::to_string(step)), "ab", 0});
  auto latest = latest_checkpoint(catalog, run.id);
  REQUIRE(latest);
  CHECK(latest->step == 1500);
  auto all = list_checkpoints(catalog, run.id);
  REQUIRE(all.size() == 3);
  CHECK(all[0].step == 500);
  CHECK(all[1].step == 1000);
  try {
    (void)add_checkpoint(catalog, {0, run.id, 1000, "/x", "", 0});
    FAIL("a second checkpoint at one step must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
  }
  CHECK_THROWS_AS(add_checkpoint(catalog, {0, 999, 1, "/x", "", 0}), Error);

  // Deleting the dataset leaves the run without a dataset; deleting the run removes its checkpoints.
  CHECK(delete_dataset(catalog, shapes.id));
  CHECK_FALSE(get_run(catalog, run.id)->dataset_id);
  CHECK(delete_run(catalog, run.id));
  CHECK(list_checkpoints(catalog, run.id).empty());
}

TEST_CASE("generations keep everything needed to reproduce them, even when their prompt is deleted",
          "[catalog][unit]") {
  TempDir dir;
  auto catalog = Catalog::open(dir / "catalog.sqlite");
  const Prompt prompt = add_prompt(catalog, {0, "a green triangle moving up", "", {}, 0});
  Run run;
  run.name = "r";
  run.kind = RunKind::lora;
  run = create_run(catalog, run);
  const Checkpoint ckpt = add_checkpoint(catalog, {0, run.id, 100, "/ck", "", 0});

  Generation g;
  g.prompt_id = prompt.id;
  g.prompt_text = prompt.text;
  g.negative = "static";
  g.run_id = run.id;
  g.checkpoint_id = ckpt.id;
  g.seed = 0xfedcba9876543210ull;  // above INT64_MAX: stored bit for bit
  g.steps = 25;
  g.cfg_scale = 4.0;
  g.width = 1280;
  g.height = 720;
  g.frames = 105;
  g.output_path = "/out/g1.mp4";
  g.settings = {{"sampler", "euler"}, {"shift", 7.0}};
  const Generation first = add_generation(catalog, g);
  g.seed = 7;
  const Generation second = add_generation(catalog, g);

  auto got = get_generation(catalog, first.id);
  REQUIRE(got);
  CHECK(got->seed == 0xfedcba9876543210ull);
  CHECK(got->cfg_scale == Approx(4.0));
  CHECK(got->frames == 105);
  CHECK(got->checkpoint_id == ckpt.id);
  CHECK(got->settings["sampler"] == "euler");
  CHECK(got->output_path == fs::path("/out/g1.mp4"));

  auto for_prompt = list_generations_for_prompt(catalog, prompt.id);
  REQUIRE(for_prompt.size() == 2);
  CHECK(for_prompt[0].id == second.id);  // newest first
  CHECK(list_generations(catalog, 1).size() == 1);

  CHECK(delete_prompt(catalog, prompt.id));
  auto orphan = get_generation(catalog, first.id);
  REQUIRE(orphan);
  CHECK_FALSE(orphan->prompt_id);
  CHECK(orphan->prompt_text == "a green triangle moving up");

  Generation bad = g;
  bad.prompt_id = 999;
  CHECK_THROWS_AS(add_generation(catalog, bad), Error);
  bad.prompt_id.reset();
  bad.steps = 0;
  CHECK_THROWS_AS(add_generation(catalog, bad), Error);
  CHECK(delete_generation(catalog, second.id));
  CHECK(list_generations(catalog).size() == 1);
}
