#include "curation/scores.h"

#include "core/error.h"
#include "curation/analyze.h"
#include "support/test_support.h"
#include "synthetic_video.h"

#include <catch2/catch.hpp>

using namespace mugv;

namespace {

test::Look moving(double hue = 30, uint32_t seed = 3, double vx = 3, double vy = 1) {
  test::Look l;
  l.hue_deg = hue;
  l.seed = seed;
  l.vx_px = vx;
  l.vy_px = vy;
  l.grain = 8;
  return l;
}

ClipAnalysis score(const test::Look& look, test::Defect defect = test::Defect::none, int frames = 48) {
  return analyze_frames(test::clip_frames(look, defect, frames));
}

}  // namespace

TEST_CASE("artifact flags print and parse as names", "[unit][curation]") {
  CHECK(to_string(ArtifactFlags::none) == "none");
  CHECK(to_string(ArtifactFlags::letterbox | ArtifactFlags::text_overlay) == "letterbox|text_overlay");
  CHECK(artifact_flags_from_string("text_overlay, letterbox") ==
        (ArtifactFlags::letterbox | ArtifactFlags::text_overlay));
  CHECK(artifact_flags_from_string("none") == ArtifactFlags::none);
  CHECK_FALSE(artifact_flags_from_string("watermark"));
  for (ArtifactFlags f : all_artifact_flags()) CHECK(artifact_flags_from_string(to_string(f)) == f);
}

TEST_CASE("a clean moving clip scores in MUG-V's keep ranges with no artifacts", "[curation]") {
  const ClipAnalysis a = score(moving());
  INFO("sharpness " << a.sharpness << " motion " << a.motion << " aesthetic " << a.aesthetic << " flags "
                    << to_string(a.flags) << " shake " << a.shake_px << " overlay " << a.overlay_fraction);
  CHECK(a.frames == 48);
  CHECK(a.sharpness >= 200);
  CHECK(a.sharpness <= 2000);
  // 3 px/frame right and 1 down at 320 wide is |(2.4, 0.8)| = 2.5 px/frame at 256 wide.
  CHECK(a.motion == Approx(2.53).epsilon(0.2));
  CHECK(a.aesthetic >= 4.5);
  CHECK(a.flags == ArtifactFlags::none);
}

TEST_CASE("blur lowers sharpness below MUG-V's floor", "[curation]") {
  test::Look blurred = moving();
  blurred.blur_sigma_px = 3;
  const double sharp = score(moving()).sharpness;
  const double soft = score(blurred).sharpness;
  INFO("sharp " << sharp << " blurred " << soft);
  CHECK(soft < 200);
  CHECK(soft < sharp / 4);
}

TEST_CASE("motion separates static, moving and chaotic clips", "[curation]") {
  const double still = score(moving(30, 3, 0, 0)).motion;
  const double slow = score(moving(30, 3, 2, 0)).motion;
  const double fast = score(moving(30, 3, 12, 0)).motion;
  INFO("still " << still << " slow " << slow << " fast " << fast);
  CHECK(still < 0.2);
  CHECK(slow == Approx(1.6).epsilon(0.2));
  CHECK(fast > 4 * slow);
}

TEST_CASE("letterbox and pillarbox bars are flagged", "[curation]") {
  const ClipAnalysis l = score(moving(), test::Defect::letterbox);
  const ClipAnalysis p = score(moving(), test::Defect::pillarbox);
  CHECK(has_any(l.flags, ArtifactFlags::letterbox));
  CHECK_FALSE(has_any(l.flags, ArtifactFlags::pillarbox));
  CHECK(l.letterbox_fraction == Approx(0.14).margin(0.02));
  CHECK(has_any(p.flags, ArtifactFlags::pillarbox));
  CHECK_FALSE(has_any(p.flags, ArtifactFlags::letterbox));
}

TEST_CASE("a burned-in caption over moving content is flagged as overlay", "[curation]") {
  const ClipAnalysis with_text = score(moving(), test::Defect::text_overlay);
  const ClipAnalysis without = score(moving());
  INFO("overlay " << with_text.overlay_fraction << " vs " << without.overlay_fraction);
  CHECK(has_any(with_text.flags, ArtifactFlags::text_overlay));
  CHECK_FALSE(has_any(without.flags, ArtifactFlags::text_overlay));
}

TEST_CASE("duplicated frames are flagged as frozen, a still clip is not", "[curation]") {
  const ClipAnalysis dup = score(moving(), test::Defect::duplicated);
  const ClipAnalysis still = score(moving(30, 3, 0, 0));
  INFO("dup ratio " << dup.frozen_ratio << " still ratio " << still.frozen_ratio);
  CHECK(dup.frozen_ratio == Approx(0.5).margin(0.1));
  CHECK(has_any(dup.flags, ArtifactFlags::frozen_frames));
  CHECK_FALSE(has_any(still.flags, ArtifactFlags::frozen_frames));
}

TEST_CASE("a sudden speed change and camera shake are flagged", "[curation]") {
  const ClipAnalysis speed = score(moving(30, 3, 3, 0), test::Defect::speed_change, 72);
  test::Look shaky = moving(30, 3, 1, 0);
  shaky.shake_px = 6;
  const ClipAnalysis shake = score(shaky);
  const ClipAnalysis steady = score(moving(30, 3, 6, 0), test::Defect::none, 72);
  INFO("speed ratio " << speed.speed_change_ratio << " shake " << shake.shake_px << " steady ratio "
                      << steady.speed_change_ratio << " steady shake " << steady.shake_px);
  CHECK(has_any(speed.flags, ArtifactFlags::speed_change));
  CHECK(has_any(shake.flags, ArtifactFlags::camera_shake));
  CHECK_FALSE(has_any(steady.flags, ArtifactFlags::speed_change | ArtifactFlags::camera_shake));
}

TEST_CASE("a dull grey picture scores low on the aesthetic heuristic", "[curation]") {
  test::Look dull = moving();
  dull.gray = 1;
  dull.contrast = 0.15;
  const ClipAnalysis a = score(dull);
  const ClipAnalysis b = score(moving());
  INFO("dull " << a.aesthetic << " colourful " << b.aesthetic);
  CHECK(a.aesthetic < 4.5);
  CHECK(b.aesthetic > a.aesthetic + 2);
  CHECK(a.aesthetic >= 1);
  CHECK(b.aesthetic <= 10);
}

TEST_CASE("perceptual hashes match near duplicates and separate different shots", "[unit][curation]") {
  const RgbFrame a = test::look_frame(moving(30, 3), 320, 180, 0);
  const RgbFrame a_shifted = test::look_frame(moving(30, 3), 320, 180, 1);
  const RgbFrame a_small = test::look_frame(moving(30, 3), 160, 90, 0);
  const RgbFrame other = test::look_frame(moving(200, 9), 320, 180, 0);
  CHECK(hamming_distance(perceptual_hash(a), perceptual_hash(a_shifted)) <= 10);
  CHECK(hamming_distance(perceptual_hash(a), perceptual_hash(other)) >= 20);
  CHECK(hamming_distance(0, ~uint64_t{0}) == 64);
  CHECK(laplacian_variance(a) > 0);
}

TEST_CASE("scores of an encoded clip match the frames it was made from", "[curation][media]") {
  test::TempDir dir;
  const auto video = test::write_clip(dir / "clip.mp4", moving(), test::Defect::letterbox, 48);
  const ClipAnalysis decoded = analyze_clip(video.path, 0, 0);
  const ClipAnalysis raw = score(moving(), test::Defect::letterbox);
  CHECK(decoded.frames == 48);
  CHECK(decoded.motion == Approx(raw.motion).epsilon(0.15));
  CHECK(decoded.sharpness == Approx(raw.sharpness).epsilon(0.35));
  CHECK(decoded.flags == raw.flags);
  REQUIRE_THROWS_AS(ClipScorer().analyze(0, 1), Error);
}

TEST_CASE("one pass finds the shots and scores each clip", "[curation][media]") {
  test::TempDir dir;
  test::Look blurred = moving(200, 7, -3, 0);
  blurred.blur_sigma_px = 3;
  const auto video = test::write_shots(dir / "two.mp4", {{moving(), 60}, {blurred, 60}});
  AnalyzeOptions options;
  options.clip_min_len_s = 1.0;
  options.clip_max_len_s = 10;
  const VideoAnalysis v = analyze_video(video.path, options);
  REQUIRE(v.scenes.cuts.size() == 1);
  CHECK(v.scenes.cuts[0].frame_index == 60);
  REQUIRE(v.clips.size() == 2);
  CHECK(v.clips[0].end_s == Approx(2.5));
  CHECK(v.clips[0].sharpness > 200);
  CHECK(v.clips[1].sharpness < 200);
}

TEST_CASE("goldeneye: clip scores are in plausible ranges", "[curation][media][real]") {
  auto file = test::real_data_file("goldeneye-vfr-drop3.mp4");
  if (!file) return;
  AnalyzeOptions options;
  options.clip_min_len_s = 1.0;
  const VideoAnalysis v = analyze_video(*file, options);
  REQUIRE(v.clips.size() == 3);
  for (const ClipAnalysis& c : v.clips) {
    INFO("clip " << c.start_s << "-" << c.end_s << " sharp " << c.sharpness << " motion " << c.motion
                 << " aesthetic " << c.aesthetic << " flags " << to_string(c.flags));
    CHECK(c.sharpness > 10);
    CHECK(c.motion < 40);
    CHECK(c.aesthetic > 1);
  }
}
