#include "dataset/shapes.h"

#include "core/error.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

using namespace mugv;
using namespace mugv::shapes;

TEST_CASE("held-out combinations never appear in training and every word stays learnable",
          "[unit][dataset]") {
  auto held = held_out_combos(7, 0.1);
  REQUIRE(held.size() >= 10);
  auto train = training_specs(400, 32, 5, 8, 7, held, Placement::edge);
  std::set<std::string> colors_seen, shapes_seen, dirs_seen;
  for (const auto& s : train) {
    Combo c{s.color, s.shape, s.direction};
    CHECK(std::find(held.begin(), held.end(), c) == held.end());
    colors_seen.insert(s.color);
    shapes_seen.insert(s.shape);
    dirs_seen.insert(s.direction);
  }
  CHECK(colors_seen.size() == colors().size());
  CHECK(shapes_seen.size() == shape_names().size());
  CHECK(dirs_seen.size() == directions().size());
}

TEST_CASE("the split and the clips are deterministic in the seed", "[unit][dataset]") {
  CHECK(held_out_combos(3) == held_out_combos(3));
  CHECK_FALSE(held_out_combos(3) == held_out_combos(4));
  auto a = training_specs(20, 32, 5, 8, 11, held_out_combos(11), Placement::edge);
  auto b = training_specs(20, 32, 5, 8, 11, held_out_combos(11), Placement::edge);
  for (size_t i = 0; i < a.size(); ++i) CHECK(render_frame(a[i], 2).rgb == render_frame(b[i], 2).rgb);
}

TEST_CASE("captions follow the grammar and parse back", "[unit][dataset]") {
  ClipSpec spec;
  spec.color = "red";
  spec.shape = "circle";
  spec.direction = "left";
  spec.background = "black";
  CHECK(caption_of(spec) == "a red circle moving left on a black background");
  Combo combo;
  std::string bg;
  REQUIRE(parse_caption("A red circle moving left on a black background", &combo, &bg));
  CHECK(combo == Combo{"red", "circle", "left"});
  CHECK(bg == "black");
  CHECK_FALSE(parse_caption("a red circle", &combo, &bg));
}

TEST_CASE("the rendered shape has the caption's color and moves in its direction", "[unit][dataset]") {
  for (const std::string dir : {"left", "right", "up", "down"}) {
    ClipSpec spec;
    spec.color = "green";
    spec.shape = "square";
    spec.direction = dir;
    spec.background = "black";
    spec.size = 64;
    spec.frames = 9;
    spec.start_x = spec.start_y = 0.5;
    spec.speed = 0.03;
    auto centroid = [&](const RgbFrame& f) {
      double sx = 0, sy = 0, n = 0;
      for (int y = 0; y < f.height; ++y)
        for (int x = 0; x < f.width; ++x)
          if (f.rgb[(y * f.width + x) * 3 + 1] > 100) sx += x, sy += y, n += 1;
      return std::make_pair(sx / n, sy / n);
    };
    auto first = centroid(render_frame(spec, 0));
    auto last = centroid(render_frame(spec, 8));
    double dx = last.first - first.first, dy = last.second - first.second;
    if (dir == "left") CHECK(dx < -10);
    if (dir == "right") CHECK(dx > 10);
    if (dir == "up") CHECK(dy < -10);
    if (dir == "down") CHECK(dy > 10);
    auto f = render_frame(spec, 0);
    size_t center = (32 * 64 + 32) * 3;
    CHECK(int(f.rgb[center + 1]) > 150);  // green channel inside the square
    CHECK(int(f.rgb[center]) < 60);
  }
}

TEST_CASE("placement: from the edge the direction fixes the position; anywhere it does not",
          "[unit][dataset]") {
  // Start position along the motion axis, measured from the edge the shape moves away from.
  auto from_edge = [](const ClipSpec& s) {
    if (s.direction == "right") return s.start_x;
    if (s.direction == "left") return 1.0 - s.start_x;
    if (s.direction == "down") return s.start_y;
    return 1.0 - s.start_y;
  };
  for (const Placement placement : {Placement::edge, Placement::anywhere}) {
    double lowest = 1, highest = 0;
    for (const auto& s : training_specs(400, 64, 17, 8, 3, held_out_combos(3), placement)) {
      const double start = from_edge(s), end = start + s.speed * (s.frames - 1);
      // The whole path stays in view with the shape's margin.
      CHECK(start >= s.radius + 0.02 - 1e-9);
      CHECK(end <= 1.0 - s.radius - 0.02 + 1e-9);
      CHECK(end - start >= (placement == Placement::edge ? 0.45 : 0.30) - 1e-9);
      lowest = std::min(lowest, start);
      highest = std::max(highest, start);
    }
    if (placement == Placement::edge) {
      CHECK(highest <= 0.22 + 1e-9);  // always at the edge: radius + margin
    } else {
      CHECK(highest - lowest >= 0.3);  // paths start across much of the frame
    }
  }
  CHECK(placement_from_string("anywhere") == Placement::anywhere);
  CHECK_THROWS_AS(placement_from_string("middle"), Error);
}
