#include "sample/eval.h"

#include "core/error.h"
#include "dataset/shapes.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

using namespace mugv;

namespace {

std::vector<shapes::Combo> every_combo() {
  std::vector<shapes::Combo> all;
  for (const auto& c : shapes::colors())
    for (const auto& s : shapes::shape_names())
      for (const auto& d : shapes::directions()) all.push_back({c.name, s, d});
  return all;
}

}  // namespace

TEST_CASE("the analyzer reads colour, shape and direction of every rendered combination",
          "[unit][sample][slow]") {
  const auto combos = every_combo();
  int clips = 0, color = 0, shape = 0, direction = 0;
  std::vector<std::string> misses;
  // Two draws of backgrounds, radii and start positions per combination.
  for (uint64_t seed : {1u, 2u}) {
    for (const auto& spec : shapes::held_out_specs(64, 17, 8, seed, combos, shapes::Placement::edge)) {
      auto got = analyze_shapes_clip(shapes::render_clip(spec));
      ++clips;
      color += got.color == spec.color;
      shape += got.shape == spec.shape;
      direction += got.direction == spec.direction;
      if (got.shape != spec.shape || got.color != spec.color || got.direction != spec.direction)
        misses.push_back(shapes::caption_of(spec) + " -> " + got.color + " " + got.shape + " " +
                         got.direction);
    }
  }
  for (const auto& m : misses) UNSCOPED_INFO(m);
  INFO("clips " << clips << " colour " << color << " shape " << shape << " direction " << direction);
  CHECK(color >= 0.98 * clips);
  CHECK(direction >= 0.98 * clips);
  CHECK(shape >= 0.90 * clips);
}

TEST_CASE("the verdict compares the prompt with what the frames show", "[unit][sample]") {
  shapes::ClipSpec spec;
  spec.color = "red";
  spec.shape = "circle";
  spec.direction = "left";
  spec.background = "black";
  spec.start_x = 0.75;
  const auto frames = shapes::render_clip(spec);
  auto right = judge_shapes_clip("a red circle moving left on a black background", frames);
  CHECK(right.all_ok());
  CHECK(right.axis_ok);
  auto wrong = judge_shapes_clip("a blue square moving up on a black background", frames);
  CHECK_FALSE(wrong.color_ok);
  CHECK_FALSE(wrong.shape_ok);
  CHECK_FALSE(wrong.direction_ok);
  CHECK_FALSE(wrong.axis_ok);
  // The right axis the wrong way: the axis holds, the direction does not.
  auto reversed = judge_shapes_clip("a red circle moving right on a black background", frames);
  CHECK_FALSE(reversed.direction_ok);
  CHECK(reversed.axis_ok);
  auto s = score({right, wrong, reversed});
  CHECK(s.clips == 3);
  CHECK(s.all == 1);
  CHECK(s.direction == 1);
  CHECK(s.axis == 2);
  CHECK(to_json(s)["axis_rate"] == Approx(2.0 / 3));
  CHECK_THROWS_AS(judge_shapes_clip("a cat on a mat", frames), Error);
}

TEST_CASE("a clip without a foreground or without motion says so", "[unit][sample]") {
  std::vector<RgbFrame> blank(5, RgbFrame(32, 32));
  auto none = analyze_shapes_clip(blank);
  CHECK_FALSE(none.found);
  CHECK(none.color.empty());

  shapes::ClipSpec still;
  still.color = "green";
  still.shape = "square";
  still.direction = "right";
  still.background = "navy";
  still.speed = 0;
  auto got = analyze_shapes_clip(shapes::render_clip(still));
  CHECK(got.found);
  CHECK(got.color == "green");
  CHECK(got.shape == "square");
  CHECK(got.direction.empty());
  // No motion is no axis either.
  CHECK_FALSE(
      judge_shapes_clip("a green square moving right on a navy background", shapes::render_clip(still))
          .axis_ok);
}

TEST_CASE("held-out prompts are read from heldout.json", "[unit][sample]") {
  mugv::test::TempDir dir;
  mugv::test::write_bytes(dir / "heldout.json",
                          R"({"seed": 1, "prompts": ["a red circle moving left on a black background"]})");
  auto prompts = read_heldout_prompts(dir / "heldout.json");
  REQUIRE(prompts.size() == 1);
  CHECK(prompts[0] == "a red circle moving left on a black background");
  mugv::test::write_bytes(dir / "bad.json", R"({"combos": []})");
  CHECK_THROWS_AS(read_heldout_prompts(dir / "bad.json"), Error);
  try {
    (void)read_heldout_prompts(dir / "missing.json");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
  }
}

TEST_CASE("the alternatives of a prompt differ from it in exactly one attribute", "[unit][sample]") {
  const std::string prompt = "a red circle moving left on a black background";
  auto groups = shapes_prompt_alternatives(prompt);
  REQUIRE(groups.size() == 4);
  CHECK(groups["color"].size() == shapes::colors().size() - 1);
  CHECK(groups["shape"].size() == shapes::shape_names().size() - 1);
  CHECK(groups["direction"].size() == shapes::directions().size() - 1);
  CHECK(groups["background"].size() == shapes::backgrounds().size() - 1);
  CHECK(std::find(groups["direction"].begin(), groups["direction"].end(),
                  "a red circle moving right on a black background") != groups["direction"].end());
  for (const auto& [name, prompts] : groups) {
    for (const auto& p : prompts) {
      INFO(name << ": " << p);
      CHECK(p != prompt);
      shapes::Combo combo;
      std::string background;
      REQUIRE(shapes::parse_caption(p, &combo, &background));
      const int differences = int(combo.color != "red") + int(combo.shape != "circle") +
                              int(combo.direction != "left") + int(background != "black");
      CHECK(differences == 1);
    }
  }
  CHECK_THROWS_AS(shapes_prompt_alternatives("a cat on a mat"), Error);
}

TEST_CASE("held-out prompts on every background, scored per background and per seed", "[unit][sample]") {
  const auto prompts = on_every_background({"a white circle moving up on a navy background"});
  REQUIRE(prompts.size() == shapes::backgrounds_for("white").size());
  CHECK(prompts[0] == "a white circle moving up on a navy background");  // the listed one first
  CHECK(std::find(prompts.begin(), prompts.end(), "a white circle moving up on a white background") ==
        prompts.end());  // white on white is never drawn
  CHECK_THROWS_AS(on_every_background({"a cat"}), Error);

  shapes::ClipSpec spec;
  spec.color = "white";
  spec.shape = "circle";
  spec.direction = "up";
  spec.background = "navy";
  spec.start_y = 0.75;
  std::vector<ShapesVerdict> verdicts;
  for (int repeat : {0, 1}) {
    auto v = judge_shapes_clip(prompts[0], shapes::render_clip(spec));
    v.repeat = repeat;
    verdicts.push_back(v);
  }
  verdicts.push_back(judge_shapes_clip("a white circle moving up on a black background",
                                       shapes::render_clip(spec)));  // drawn on navy: colour still white
  CHECK(verdicts[0].background == "navy");
  const auto by_background = score_by_background(verdicts);
  CHECK(by_background.at("navy").clips == 2);
  CHECK(by_background.at("black").clips == 1);
  const auto by_seed = score_by_repeat(verdicts);
  CHECK(by_seed.at("0").clips == 2);
  CHECK(by_seed.at("1").direction == 1);
}
