#include "dataset/shapes.h"

#include "core/error.h"
#include "core/strings.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace mugv::shapes {
namespace {

// Signed "inside" test in shape-local coordinates (u, v) with the shape's radius normalised to 1.
bool inside(const std::string& shape, double u, double v) {
  if (shape == "circle") return u * u + v * v <= 1.0;
  if (shape == "square") return std::fabs(u) <= 0.85 && std::fabs(v) <= 0.85;
  if (shape == "diamond") return std::fabs(u) + std::fabs(v) <= 1.0;
  if (shape == "triangle") {
    // Upward equilateral triangle inscribed in the unit circle: apex (0,-1), base at v = 0.5.
    if (v > 0.5 || v < -1.0) return false;
    double half_width = (v + 1.0) / 1.5 * 0.866;
    return std::fabs(u) <= half_width;
  }
  if (shape == "cross")
    return (std::fabs(u) <= 0.3 && std::fabs(v) <= 0.95) || (std::fabs(v) <= 0.3 && std::fabs(u) <= 0.95);
  throw Error(ErrorCode::invalid_argument, shape, "unknown shape");
}

const NamedColor& find_color(const std::vector<NamedColor>& table, const std::string& name) {
  for (const auto& c : table)
    if (c.name == name) return c;
  throw Error(ErrorCode::invalid_argument, name, "unknown color");
}

std::pair<double, double> direction_vector(const std::string& direction) {
  if (direction == "left") return {-1, 0};
  if (direction == "right") return {1, 0};
  if (direction == "up") return {0, -1};
  if (direction == "down") return {0, 1};
  throw Error(ErrorCode::invalid_argument, direction, "unknown direction");
}

// Backgrounds that clash with a color (too little contrast to see the shape) are never paired with it.
bool readable(const std::string& color, const std::string& background) {
  const Rgb& c = find_color(colors(), color).rgb;
  const Rgb& b = find_color(backgrounds(), background).rgb;
  double dist = std::sqrt(std::pow(c.r - b.r, 2) + std::pow(c.g - b.g, 2) + std::pow(c.b - b.b, 2));
  return dist > 160;
}

std::vector<Combo> all_combos() {
  std::vector<Combo> combos;
  for (const auto& c : colors())
    for (const auto& s : shape_names())
      for (const auto& d : directions()) combos.push_back({c.name, s, d});
  return combos;
}

ClipSpec make_spec(const Combo& combo, int size, int frames, double fps, Placement placement,
                   std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  ClipSpec spec;
  spec.color = combo.color;
  spec.shape = combo.shape;
  spec.direction = combo.direction;
  const std::vector<std::string> bgs = backgrounds_for(combo.color);
  spec.background = bgs[rng() % bgs.size()];
  spec.size = size;
  spec.frames = frames;
  spec.fps = fps;
  spec.radius = 0.14 + 0.06 * unit(rng);
  // The motion must be obvious and the shape must stay in view. From the edge it can travel half the
  // frame; placed anywhere, a third, which leaves room for the path to start at many places.
  double travel = placement == Placement::edge ? 0.45 + 0.1 * unit(rng) : 0.30 + 0.06 * unit(rng);
  spec.speed = frames > 1 ? travel / (frames - 1) : 0.0;
  auto [dx, dy] = direction_vector(combo.direction);
  const double margin = spec.radius + 0.02;
  // Where the path starts along its axis, as the distance from the edge it moves away from.
  const double from_edge =
      placement == Placement::edge ? margin : margin + std::max(0.0, 1.0 - 2 * margin - travel) * unit(rng);
  auto start_along = [&](double d) { return d > 0 ? from_edge : (d < 0 ? 1.0 - from_edge : 0.0); };
  double cross = margin + (1.0 - 2 * margin) * unit(rng);
  spec.start_x = dx != 0 ? start_along(dx) : cross;
  spec.start_y = dy != 0 ? start_along(dy) : cross;
  return spec;
}

}  // namespace

const char* to_string(Placement placement) {
  return placement == Placement::edge ? "edge" : "anywhere";
}

Placement placement_from_string(const std::string& name) {
  if (name == "edge") return Placement::edge;
  if (name == "anywhere") return Placement::anywhere;
  throw Error(ErrorCode::invalid_argument, name, "unknown placement; use edge or anywhere");
}

const std::vector<NamedColor>& colors() {
  static const std::vector<NamedColor> table = {
      {"red", {220, 30, 30}},      {"green", {30, 190, 50}},   {"blue", {40, 70, 230}},
      {"yellow", {240, 220, 30}},  {"white", {245, 245, 245}}, {"cyan", {30, 210, 220}},
      {"magenta", {210, 40, 200}}, {"orange", {245, 140, 20}},
  };
  return table;
}

const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> names = {"circle", "square", "triangle", "diamond", "cross"};
  return names;
}

const std::vector<std::string>& directions() {
  static const std::vector<std::string> names = {"left", "right", "up", "down"};
  return names;
}

const std::vector<NamedColor>& backgrounds() {
  static const std::vector<NamedColor> table = {
      {"black", {0, 0, 0}}, {"gray", {110, 110, 110}}, {"white", {250, 250, 250}}, {"navy", {15, 20, 70}}};
  return table;
}

std::vector<std::string> backgrounds_for(const std::string& color) {
  std::vector<std::string> names;
  for (const auto& b : backgrounds())
    if (readable(color, b.name)) names.push_back(b.name);
  return names;
}

std::string caption_of(const Combo& combo, const std::string& background) {
  return cat("a ", combo.color, " ", combo.shape, " moving ", combo.direction, " on a ", background,
             " background");
}

std::string caption_of(const ClipSpec& spec) {
  return caption_of(Combo{spec.color, spec.shape, spec.direction}, spec.background);
}

bool parse_caption(const std::string& caption, Combo* combo, std::string* background) {
  auto words = split(trim(to_lower(caption)), ' ');
  // a <color> <shape> moving <direction> on a <background> background
  if (words.size() != 9 || words[0] != "a" || words[3] != "moving" || words[5] != "on" || words[6] != "a" ||
      words[8] != "background")
    return false;
  if (combo) *combo = Combo{words[1], words[2], words[4]};
  if (background) *background = words[7];
  return true;
}

std::vector<Combo> held_out_combos(uint64_t seed, double fraction) {
  std::vector<Combo> combos = all_combos();
  std::mt19937_64 rng(seed ^ 0x5eedC0FFEEull);
  std::shuffle(combos.begin(), combos.end(), rng);
  size_t target = static_cast<size_t>(std::lround(fraction * combos.size()));
  std::map<std::string, int> remaining;  // training occurrences per vocabulary word
  for (const auto& c : all_combos()) {
    ++remaining["c:" + c.color];
    ++remaining["s:" + c.shape];
    ++remaining["d:" + c.direction];
  }
  std::vector<Combo> held;
  for (const auto& c : combos) {
    if (held.size() >= target) break;
    // Keep at least a few training examples of every word so each is learnable on its own.
    if (remaining["c:" + c.color] <= 4 || remaining["s:" + c.shape] <= 4 ||
        remaining["d:" + c.direction] <= 4)
      continue;
    --remaining["c:" + c.color];
    --remaining["s:" + c.shape];
    --remaining["d:" + c.direction];
    held.push_back(c);
  }
  return held;
}

std::vector<ClipSpec> training_specs(int count, int size, int frames, double fps, uint64_t seed,
                                     const std::vector<Combo>& held_out, Placement placement) {
  std::vector<Combo> train;
  for (const auto& c : all_combos())
    if (std::find(held_out.begin(), held_out.end(), c) == held_out.end()) train.push_back(c);
  std::mt19937_64 rng(seed);
  std::vector<ClipSpec> specs;
  specs.reserve(count);
  // Cycle through a shuffled list so combinations are balanced rather than drawn with replacement.
  std::vector<Combo> order = train;
  for (int i = 0; i < count; ++i) {
    if (i % order.size() == 0) std::shuffle(order.begin(), order.end(), rng);
    specs.push_back(make_spec(order[i % order.size()], size, frames, fps, placement, rng));
  }
  return specs;
}

std::vector<ClipSpec> held_out_specs(int size, int frames, double fps, uint64_t seed,
                                     const std::vector<Combo>& held_out, Placement placement) {
  std::mt19937_64 rng(seed + 1);
  std::vector<ClipSpec> specs;
  for (const auto& c : held_out) specs.push_back(make_spec(c, size, frames, fps, placement, rng));
  return specs;
}

RgbFrame render_frame(const ClipSpec& spec, int index) {
  if (spec.size < 8 || spec.size > 4096)
    throw Error(ErrorCode::invalid_argument, "size", cat("size ", spec.size, " is out of range 8..4096"));
  const Rgb fg = find_color(colors(), spec.color).rgb;
  const Rgb bg = find_color(backgrounds(), spec.background).rgb;
  auto [dx, dy] = direction_vector(spec.direction);
  const double n = spec.size;
  const double cx = (spec.start_x + dx * spec.speed * index) * n;
  const double cy = (spec.start_y + dy * spec.speed * index) * n;
  const double r = spec.radius * n;
  RgbFrame frame;
  frame.width = frame.height = spec.size;
  frame.rgb.resize(static_cast<size_t>(spec.size) * spec.size * 3);
  frame.index = index;
  frame.pts_s = index / spec.fps;
  constexpr int kSub = 4;  // 4x4 supersampling for anti-aliased edges
  for (int y = 0; y < spec.size; ++y) {
    for (int x = 0; x < spec.size; ++x) {
      int hits = 0;
      if (std::fabs(x + 0.5 - cx) <= r + 1 && std::fabs(y + 0.5 - cy) <= r + 1) {
        for (int sy = 0; sy < kSub; ++sy)
          for (int sx = 0; sx < kSub; ++sx) {
            double u = (x + (sx + 0.5) / kSub - cx) / r;
            double v = (y + (sy + 0.5) / kSub - cy) / r;
            hits += inside(spec.shape, u, v);
          }
      }
      double a = hits / double(kSub * kSub);
      uint8_t* px = &frame.rgb[(static_cast<size_t>(y) * spec.size + x) * 3];
      px[0] = static_cast<uint8_t>(std::lround(a * fg.r + (1 - a) * bg.r));
      px[1] = static_cast<uint8_t>(std::lround(a * fg.g + (1 - a) * bg.g));
      px[2] = static_cast<uint8_t>(std::lround(a * fg.b + (1 - a) * bg.b));
    }
  }
  return frame;
}

std::vector<RgbFrame> render_clip(const ClipSpec& spec) {
  std::vector<RgbFrame> frames;
  frames.reserve(spec.frames);
  for (int i = 0; i < spec.frames; ++i) frames.push_back(render_frame(spec, i));
  return frames;
}

}  // namespace mugv::shapes
