#include "curation/scene_detect.h"

#include "core/error.h"
#include "support/test_support.h"
#include "synthetic_video.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <sstream>

using namespace mugv;

namespace {

test::Look look(double hue, uint32_t seed, double vx = 2, double vy = 0) {
  test::Look l;
  l.hue_deg = hue;
  l.seed = seed;
  l.vx_px = vx;
  l.vy_px = vy;
  return l;
}

std::string describe(const SceneDetection& d) {
  std::ostringstream out;
  for (const SceneCut& c : d.cuts)
    out << to_string(c.kind) << "@" << c.frame_index << "(" << c.time_s << "s," << c.score << ") ";
  return out.str();
}

struct Match {
  int true_positive = 0;
  int false_positive = 0;
  int false_negative = 0;
};

// A found cut matches an expected one of any kind within the tolerance for the expected kind.
Match match_cuts(const std::vector<test::ExpectedCut>& expected, const std::vector<SceneCut>& found) {
  Match m;
  std::vector<bool> used(found.size(), false);
  for (const test::ExpectedCut& e : expected) {
    const int64_t tolerance = e.kind == CutKind::hard ? 1 : 3;
    bool hit = false;
    for (size_t i = 0; i < found.size() && !hit; ++i) {
      if (!used[i] && std::llabs(found[i].frame_index - e.frame) <= tolerance) used[i] = hit = true;
    }
    hit ? ++m.true_positive : ++m.false_negative;
  }
  for (bool u : used) m.false_positive += u ? 0 : 1;
  return m;
}

}  // namespace

TEST_CASE("cut kinds round-trip through their names", "[unit][curation]") {
  for (CutKind kind : {CutKind::unknown, CutKind::hard, CutKind::fade, CutKind::dissolve}) {
    REQUIRE(cut_kind_from_string(to_string(kind)) == kind);
  }
  REQUIRE_FALSE(cut_kind_from_string("wipe"));
}

TEST_CASE("scenes split into training clips of bounded length", "[unit][curation]") {
  const std::vector<Scene> scenes{{0, 1.5}, {1.5, 6.5}, {6.5, 18.0}, {18.0, 29.5}};
  const auto clips = split_into_clips(scenes, 2.0, 5.0);
  // 1.5 s dropped; 5 s kept whole; 11.5 s -> 5 + 5 + 1.5 (remainder dropped); 11.5 s -> 5 + 5.
  REQUIRE(clips.size() == 5);
  CHECK(clips[0].start_s == Approx(1.5));
  CHECK(clips[0].end_s == Approx(6.5));
  CHECK(clips[1].start_s == Approx(6.5));
  CHECK(clips[2].end_s == Approx(16.5));
  CHECK(clips[4].end_s == Approx(28.0));
  const auto whole = split_into_clips(scenes, 2.0, 0);
  REQUIRE(whole.size() == 3);
  CHECK(whole[2].length_s() == Approx(11.5));

  const auto with_remainder = split_into_clips({{0, 12.5}}, 2.0, 5.0);
  REQUIRE(with_remainder.size() == 3);
  CHECK(with_remainder[2].start_s == Approx(10.0));
  CHECK(with_remainder[2].end_s == Approx(12.5));
}

TEST_CASE("scenes from cuts cover the video without gaps", "[unit][curation]") {
  std::vector<SceneCut> cuts{{2.0, 48, CutKind::hard, 40}, {5.0, 120, CutKind::fade, 100}};
  const auto scenes = scenes_from_cuts(cuts, 0, 8);
  REQUIRE(scenes.size() == 3);
  CHECK(scenes[0].end_s == 2.0);
  CHECK(scenes[1].start_s == 2.0);
  CHECK(scenes[2].end_s == 8.0);
}

TEST_CASE("hard cuts between moving shots are found on the frame", "[curation][media]") {
  test::TempDir dir;
  std::vector<test::Shot> shots{
      {look(0, 1, 3), 30}, {look(120, 2, -2, 1), 26}, {look(240, 3, 0, 3), 34}, {look(60, 4, 4), 22}};
  const auto video = test::write_shots(dir / "hard.mp4", shots);
  const SceneDetection d = detect_scenes(video.path);
  INFO(describe(d));
  REQUIRE(d.frames == video.frames);
  REQUIRE(d.cuts.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(d.cuts[i].kind == CutKind::hard);
    CHECK(d.cuts[i].frame_index == video.cuts[i].frame);
    CHECK(d.cuts[i].time_s == Approx(video.cuts[i].time_s).margin(1e-3));
  }
  REQUIRE(d.scenes.size() == 4);
  CHECK(d.scenes.front().start_s == 0);
  CHECK(d.scenes.back().end_s == Approx(video.frames / video.fps).margin(1e-3));
}

TEST_CASE("fades through black and white are cut at the extreme frame", "[curation][media]") {
  test::TempDir dir;
  std::vector<test::Shot> shots{{look(0, 5, 2), 40},
                                {look(200, 6, -2), 40, test::Transition::fade_black, 16},
                                {look(90, 7, 0, 2), 40, test::Transition::fade_white, 12}};
  const auto video = test::write_shots(dir / "fades.mp4", shots);
  const SceneDetection d = detect_scenes(video.path);
  INFO(describe(d));
  REQUIRE(d.cuts.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(d.cuts[i].kind == CutKind::fade);
    CHECK(std::llabs(d.cuts[i].frame_index - video.cuts[i].frame) <= 1);
  }
}

TEST_CASE("a shot fading out and cut before black is a hard cut on the new shot's first frame",
          "[curation][media]") {
  // Down to 12 % (the last frames are darker than the fade threshold) and to 35 % (never near black).
  for (double floor : {0.12, 0.35}) {
    INFO("fade floor " << floor);
    test::TempDir dir;
    test::Shot faded{look(150, 52, -1), 40, test::Transition::fade_out_cut, 14};
    faded.fade_floor = floor;
    std::vector<test::Shot> shots{
        {look(20, 51, 2), 40}, faded, {look(300, 53, 1), 40, test::Transition::fade_out_cut, 10}};
    shots[2].fade_floor = floor;
    const auto video = test::write_shots(dir / "fade_out_cut.mp4", shots);
    const SceneDetection d = detect_scenes(video.path);
    INFO(describe(d));
    REQUIRE(d.cuts.size() == 2);
    for (size_t i = 0; i < 2; ++i) {
      CHECK(d.cuts[i].kind == CutKind::hard);
      CHECK(d.cuts[i].frame_index == video.cuts[i].frame);
    }
  }
}

TEST_CASE("dissolves are cut near their middle and not mistaken for hard cuts", "[curation][media]") {
  test::TempDir dir;
  std::vector<test::Shot> shots{{look(30, 8, 1), 40},
                                {look(210, 9, -1), 44, test::Transition::dissolve, 20},
                                {look(130, 10, 0, 1), 40, test::Transition::dissolve, 8}};
  const auto video = test::write_shots(dir / "dissolves.mp4", shots);
  const SceneDetection d = detect_scenes(video.path);
  INFO(describe(d));
  REQUIRE(d.cuts.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(d.cuts[i].kind == CutKind::dissolve);
    CHECK(std::llabs(d.cuts[i].frame_index - video.cuts[i].frame) <= 3);
  }
}

TEST_CASE("camera motion within one shot does not cut", "[curation][media]") {
  test::TempDir dir;
  test::Look fast = look(300, 11, 9, 4);
  test::Look shaky = look(150, 12, 1, 0);
  shaky.shake_px = 6;
  const auto a = test::write_shots(dir / "pan.mp4", {{fast, 72}});
  const auto b = test::write_shots(dir / "shake.mp4", {{shaky, 72}});
  const auto da = detect_scenes(a.path);
  const auto db = detect_scenes(b.path);
  INFO(describe(da) << " | " << describe(db));
  CHECK(da.cuts.empty());
  CHECK(db.cuts.empty());
  REQUIRE(da.scenes.size() == 1);
}

TEST_CASE("cut detection reaches F1 >= 0.95 on mixed transitions", "[curation][media]") {
  test::TempDir dir;
  using T = test::Transition;
  const std::vector<std::vector<test::Shot>> videos{
      {{look(0, 21, 2), 30},
       {look(180, 22, -3), 30, T::hard},
       {look(90, 23, 1, 1), 36, T::dissolve, 16},
       {look(270, 24, 2, -1), 30, T::fade_black, 12},
       {look(45, 25, 0, 2), 30, T::hard},
       {look(120, 26, -2), 30, T::fade_out_cut, 12}},
      {{look(200, 31, 1), 28},
       {look(20, 32, 3), 34, T::fade_black, 20},
       {look(110, 33, -2), 30, T::hard},
       {look(320, 34, 2, 2), 36, T::dissolve, 12},
       {look(160, 35, -1), 30, T::fade_white, 10}},
      {{look(60, 41, -2), 30},
       {look(240, 42, 2), 24, T::hard},
       {look(0, 43, 0, -2), 30, T::hard},
       {look(140, 44, 3), 40, T::dissolve, 24},
       {look(290, 45, 1), 30, T::hard}},
  };
  Match total;
  std::ostringstream report;
  for (size_t v = 0; v < videos.size(); ++v) {
    const auto video = test::write_shots(dir / ("mixed" + std::to_string(v) + ".mp4"), videos[v]);
    const auto d = detect_scenes(video.path);
    const Match m = match_cuts(video.cuts, d.cuts);
    report << "video " << v << ": " << describe(d) << "\n";
    total.true_positive += m.true_positive;
    total.false_positive += m.false_positive;
    total.false_negative += m.false_negative;
  }
  const double precision = total.true_positive / double(total.true_positive + total.false_positive);
  const double recall = total.true_positive / double(total.true_positive + total.false_negative);
  const double f1 = 2 * precision * recall / (precision + recall);
  INFO(report.str() << "tp " << total.true_positive << " fp " << total.false_positive << " fn "
                    << total.false_negative);
  CHECK(f1 >= 0.95);
}

TEST_CASE("detect_scenes reports progress and stops when cancelled", "[curation][media]") {
  test::TempDir dir;
  const auto video = test::write_shots(dir / "c.mp4", {{look(0, 50, 2), 24}});
  int64_t last_done = 0;
  ProgressFn progress = [&](const Progress& p) { last_done = p.done; };
  const auto d = detect_scenes(video.path, {}, nullptr, progress);
  CHECK(last_done == d.frames);

  CancelToken cancel;
  cancel.request_cancel();
  try {
    (void)detect_scenes(video.path, {}, &cancel);
    FAIL("expected cancellation");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::cancelled);
  }
}

TEST_CASE("goldeneye (VFR): both hard cuts on time and nothing else", "[curation][media][real]") {
  auto file = test::real_data_file("goldeneye-vfr-drop3.mp4");
  if (!file) return;
  const SceneDetection d = detect_scenes(*file);
  INFO(describe(d));
  REQUIRE(d.cuts.size() == 2);
  const double frame_s = 1 / 23.976;
  CHECK(std::abs(d.cuts[0].time_s - 3.754) <= frame_s);
  CHECK(std::abs(d.cuts[1].time_s - 8.759) <= frame_s);
  CHECK(d.cuts[0].kind == CutKind::hard);
  CHECK(d.cuts[1].kind == CutKind::hard);
}

TEST_CASE("fades.mp4: both fades through black are found", "[curation][media][real]") {
  auto file = test::real_data_file("fades.mp4");
  if (!file) return;
  const SceneDetection d = detect_scenes(*file);
  INFO(describe(d));
  REQUIRE(d.cuts.size() == 2);
  CHECK(d.cuts[0].kind == CutKind::fade);
  CHECK(d.cuts[1].kind == CutKind::fade);
  CHECK(std::llabs(d.cuts[0].frame_index - 84) <= 3);
  CHECK(std::llabs(d.cuts[1].frame_index - 167) <= 3);
}

TEST_CASE("counter.mp4: a changing counter is one shot", "[curation][media][real]") {
  auto file = test::real_data_file("counter.mp4");
  if (!file) return;
  const SceneDetection d = detect_scenes(*file);
  INFO(describe(d));
  CHECK(d.frames == 30);
  CHECK(d.cuts.empty());
}
