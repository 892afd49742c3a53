#include "catalog/clips.h"

#include "catalog/captions.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::TempDir;

namespace {

struct Fixture {
  TempDir dir;
  Catalog catalog = Catalog::open(dir / "catalog.sqlite");
  Dataset dataset = create_dataset(catalog, {0, "shapes", DatasetKind::video, "/d", "", 0});
  Source source = add_source(catalog, [] {
    Source s;
    s.path = "/d/a.mp4";
    s.content_hash = "h:a";
    s.status = SourceStatus::ok;
    return s;
  }());

  Clip clip(double start_s, double end_s) const {
    Clip c;
    c.dataset_id = dataset.id;
    c.source_id = source.id;
    c.start_s = start_s;
    c.end_s = end_s;
    c.fps = 24;
    c.start_frame = static_cast<int64_t>(start_s * 24);
    c.end_frame = static_cast<int64_t>(end_s * 24);
    c.width = 640;
    c.height = 360;
    return c;
  }
};

}  // namespace

TEST_CASE("a batch of clips round-trips with scores, decision and tags", "[catalog][unit]") {
  Fixture f;
  Clip scored = f.clip(0, 2.5);
  scored.scores.sharpness = 812.25;
  scored.scores.motion = 3.5;
  scored.scores.aesthetic = 5.1;
  scored.scores.artifact_score = 0.25;
  scored.scores.artifact_flags = artifact_flag::overlay | artifact_flag::shake;
  scored.scores.phash = 0x8000000000000001ull;
  scored.scores.extra = {{"clip_score", 0.31}};
  scored.decision = ClipDecision::keep;
  scored.reason = "passed";
  scored.tags = {"outdoor", "beach"};
  const auto ids = add_clips(f.catalog, {scored, f.clip(2.5, 5.0)});
  REQUIRE(ids.size() == 2);

  auto got = get_clip(f.catalog, ids[0]);
  REQUIRE(got);
  CHECK(got->dataset_id == f.dataset.id);
  CHECK(got->source_id == f.source.id);
  CHECK(got->end_s == Approx(2.5));
  CHECK(got->end_frame == 60);
  CHECK(got->width == 640);
  CHECK(got->scores.sharpness == Approx(812.25));
  CHECK(got->scores.motion == Approx(3.5));
  CHECK(got->scores.artifact_flags == (artifact_flag::overlay | artifact_flag::shake));
  CHECK(got->scores.phash == 0x8000000000000001ull);
  CHECK(got->scores.extra["clip_score"] == Approx(0.31));
  CHECK(got->decision == ClipDecision::keep);
  CHECK(got->reason == "passed");
  CHECK(got->tags == std::vector<std::string>{"beach", "outdoor"});

  // Scores not computed yet stay absent rather than reading as 0.
  auto unscored = get_clip(f.catalog, ids[1]);
  REQUIRE(unscored);
  CHECK_FALSE(unscored->scores.sharpness);
  CHECK_FALSE(unscored->scores.phash);
  CHECK(unscored->decision == ClipDecision::unknown);
  CHECK(unscored->tags.empty());

  ClipScores update;
  update.sharpness = 150;
  update.motion = 25;
  update_clip_scores(f.catalog, ids[1], update);
  set_clip_decision(f.catalog, ids[1], ClipDecision::reject, "sharpness<200");
  set_clip_tags(f.catalog, ids[1], {"night"});
  got = get_clip(f.catalog, ids[1]);
  CHECK(got->scores.sharpness == Approx(150));
  CHECK(got->decision == ClipDecision::reject);
  CHECK(got->reason == "sharpness<200");
  CHECK(got->tags == std::vector<std::string>{"night"});
  CHECK(remove_clip_tag(f.catalog, ids[1], "night"));
  CHECK_FALSE(remove_clip_tag(f.catalog, ids[1], "night"));
  CHECK_THROWS_AS(set_clip_decision(f.catalog, 999, ClipDecision::keep, ""), Error);
  CHECK_THROWS_AS(add_clip_tag(f.catalog, ids[0], ""), Error);
}

TEST_CASE("a batch with one bad clip stores nothing and names the clip", "[catalog][unit]") {
  Fixture f;
  Clip orphan = f.clip(1, 2);
  orphan.source_id = 999;
  try {
    (void)add_clips(f.catalog, {f.clip(0, 1), orphan, f.clip(2, 3)});
    FAIL("a clip of a missing source must fail the batch");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
    CHECK_THAT(e.message(), Catch::Contains("clip 2 of 3") && Catch::Contains("source 999"));
  }
  CHECK(count_clips(f.catalog, {}) == 0);
  CHECK_THROWS_AS(add_clips(f.catalog, {f.clip(3, 1)}), Error);
}

TEST_CASE("clips are listed and counted by dataset, decision, reason, tag and score range",
          "[catalog][unit]") {
  Fixture f;
  const Dataset other = create_dataset(f.catalog, {0, "other", DatasetKind::video, "/o", "", 0});
  std::vector<Clip> batch;
  for (int i = 0; i < 10; ++i) {
    Clip c = f.clip(i, i + 1);
    c.scores.sharpness = 100.0 * (i + 1);  // 100 .. 1000
    c.decision = i < 6 ? ClipDecision::keep : ClipDecision::reject;
    // Rejections name every failed threshold, joined: one clip fails two.
    c.reason =
        i < 6 ? "passed" : (i < 8 ? "sharpness<200" : (i == 8 ? "motion>20" : "sharpness<200, motion>20"));
    if (i % 2 == 0) c.tags = {"even"};
    batch.push_back(c);
  }
  Clip elsewhere = f.clip(0, 1);
  elsewhere.dataset_id = other.id;
  elsewhere.decision = ClipDecision::keep;
  batch.push_back(elsewhere);
  (void)add_clips(f.catalog, batch);

  ClipFilter in_dataset;
  in_dataset.dataset_id = f.dataset.id;
  CHECK(count_clips(f.catalog, in_dataset) == 10);

  ClipFilter kept = in_dataset;
  kept.decision = ClipDecision::keep;
  CHECK(count_clips(f.catalog, kept) == 6);

  ClipFilter by_reason = in_dataset;
  by_reason.reason = "motion>20";
  CHECK(count_clips(f.catalog, by_reason) == 2);
  by_reason.reason = "Sharpness<200";  // any one of the reasons, whatever the case
  CHECK(count_clips(f.catalog, by_reason) == 3);
  by_reason.reason = "sharpness";
  CHECK(count_clips(f.catalog, by_reason) == 3);

  ClipFilter tagged = in_dataset;
  tagged.tag = "even";
  CHECK(count_clips(f.catalog, tagged) == 5);

  ClipFilter sharp = in_dataset;
  sharp.sharpness.min = 200;
  sharp.sharpness.max = 500;
  auto sharp_clips = list_clips(f.catalog, sharp);
  REQUIRE(sharp_clips.size() == 4);
  CHECK(sharp_clips.front().scores.sharpness == Approx(200));
  CHECK(sharp_clips.back().scores.sharpness == Approx(500));

  ClipFilter combined = sharp;
  combined.tag = "even";  // 300 and 500 are clips 2 and 4
  CHECK(count_clips(f.catalog, combined) == 2);

  ClipFilter page = in_dataset;
  page.limit = 3;
  page.offset = 8;
  auto last_page = list_clips(f.catalog, page);
  REQUIRE(last_page.size() == 2);
  CHECK(last_page[0].start_s == Approx(8));

  auto counts = count_clips_by_decision(f.catalog, f.dataset.id);
  REQUIRE(counts.size() == 4);
  CHECK(counts[0].decision == ClipDecision::keep);
  CHECK(counts[0].clips == 6);
  CHECK(counts[1].decision == ClipDecision::reject);
  CHECK(counts[1].reason == "motion>20");
  CHECK(counts[1].clips == 1);
  CHECK(counts[2].reason == "sharpness<200");
  CHECK(counts[3].reason == "sharpness<200, motion>20");
}

TEST_CASE("deleting a dataset removes its clips, captions and tags but keeps the sources",
          "[catalog][unit]") {
  Fixture f;
  Clip c = f.clip(0, 1);
  c.tags = {"t"};
  const auto ids = add_clips(f.catalog, {c});
  (void)add_caption(f.catalog, ids[0], "a caption", CaptionOrigin::human, "");
  CHECK_THROWS_AS(delete_source(f.catalog, f.source.id), Error);

  CHECK(delete_dataset(f.catalog, f.dataset.id));
  CHECK_FALSE(get_clip(f.catalog, ids[0]));
  CHECK(caption_history(f.catalog, ids[0]).empty());
  auto tags = f.catalog.prepare("SELECT count(*) FROM clip_tags");
  REQUIRE(tags.step());
  CHECK(tags.int64(0) == 0);
  CHECK(get_source(f.catalog, f.source.id));
  CHECK(delete_source(f.catalog, f.source.id));
}
