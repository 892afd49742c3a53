#include "curation/decision.h"

#include "core/error.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;

namespace {

ClipAnalysis good_clip() {
  ClipAnalysis c;
  c.start_s = 0;
  c.end_s = 5;
  c.sharpness = 800;
  c.motion = 4;
  c.aesthetic = 6;
  return c;
}

}  // namespace

TEST_CASE("a clip inside every threshold is kept", "[unit][curation]") {
  const Decision d = decide(good_clip(), CurationThresholds{});
  CHECK(d.verdict == Verdict::keep);
  CHECK(d.reason.empty());
}

TEST_CASE("each failed rule is named in the reason", "[unit][curation]") {
  CurationThresholds t;
  ClipAnalysis c = good_clip();
  c.sharpness = 150;
  CHECK(decide(c, t).reason == "sharpness<200");
  c = good_clip();
  c.sharpness = 2500;
  CHECK(decide(c, t).reason == "sharpness>2000");
  c = good_clip();
  c.motion = 25;
  CHECK(decide(c, t).reason == "motion>20");
  c = good_clip();
  c.motion = 0.4;
  c.aesthetic = 3;
  c.flags = ArtifactFlags::letterbox | ArtifactFlags::camera_shake;
  const Decision d = decide(c, t);
  CHECK(d.verdict == Verdict::reject);
  CHECK(d.reason == "motion<1, aesthetic<4.5, letterbox, camera_shake");
  c = good_clip();
  c.end_s = 1.5;
  CHECK(decide(c, t).reason == "too_short<2");

  t.reject_flags = ArtifactFlags::none;
  c = good_clip();
  c.flags = ArtifactFlags::letterbox;
  CHECK(decide(c, t).verdict == Verdict::keep);
}

TEST_CASE("built-in curation presets load with MUG-V's thresholds", "[curation]") {
  const CurationPreset mugv = load_curation_preset("mugv");
  CHECK(mugv.thresholds.sharpness_min == 200);
  CHECK(mugv.thresholds.sharpness_max == 2000);
  CHECK(mugv.thresholds.motion_min == 1);
  CHECK(mugv.thresholds.motion_max == 20);
  CHECK(mugv.thresholds.aesthetic_min == 4.5);
  CHECK(has_any(mugv.thresholds.reject_flags, ArtifactFlags::text_overlay));
  CHECK_FALSE(mugv.description.empty());

  const CurationPreset lenient = load_curation_preset("lenient");
  CHECK(lenient.thresholds.sharpness_min < mugv.thresholds.sharpness_min);
  CHECK_FALSE(has_any(lenient.thresholds.reject_flags, ArtifactFlags::camera_shake));
  CHECK(lenient.scene.adaptive_ratio == mugv.scene.adaptive_ratio);  // inherited

  ClipAnalysis soft = good_clip();
  soft.sharpness = 120;
  CHECK(decide(soft, mugv.thresholds).verdict == Verdict::reject);
  CHECK(decide(soft, lenient.thresholds).verdict == Verdict::keep);
}

TEST_CASE("a preset with a bad value names the key", "[unit][curation]") {
  try {
    (void)curation_preset_from_json(nlohmann::json::parse(R"({"artifacts": {"reject": ["watermark"]}})"));
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.subject() == "artifacts.reject");
  }
  REQUIRE_THROWS_AS(curation_preset_from_json(nlohmann::json::parse(R"({"motion": {"min": "fast"}})")),
                    Error);
  REQUIRE_THROWS_AS(curation_preset_from_json(nlohmann::json::parse(R"({"motion": {"min": 30}})")), Error);
  CHECK(verdict_from_string(to_string(Verdict::reject)) == Verdict::reject);
}
