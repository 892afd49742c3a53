#include "sample/eval.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "dataset/shapes.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>

namespace mugv {
namespace {

using Color = std::array<double, 3>;

double distance(const Color& a, const Color& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) +
                   (a[2] - b[2]) * (a[2] - b[2]));
}

Color pixel_color(const RgbFrame& f, int x, int y) {
  const uint8_t* p = f.pixel(x, y);
  return {double(p[0]), double(p[1]), double(p[2])};
}

Color border_median(const std::vector<RgbFrame>& frames) {
  std::array<std::vector<uint8_t>, 3> values;
  for (const auto& f : frames) {
    auto add = [&](int x, int y) {
      const uint8_t* p = f.pixel(x, y);
      for (int k = 0; k < 3; ++k) values[k].push_back(p[k]);
    };
    for (int x = 0; x < f.width; ++x) {
      add(x, 0);
      add(x, f.height - 1);
    }
    for (int y = 1; y + 1 < f.height; ++y) {
      add(0, y);
      add(f.width - 1, y);
    }
  }
  Color median{};
  for (int k = 0; k < 3; ++k) {
    auto mid = values[k].begin() + values[k].size() / 2;
    std::nth_element(values[k].begin(), mid, values[k].end());
    median[k] = *mid;
  }
  return median;
}

// Area of each shape at radius 1 (dataset/shapes.cpp's inside() tests), to turn a mask area into a radius.
double unit_area(const std::string& shape) {
  if (shape == "circle") return M_PI;
  if (shape == "square") return 1.7 * 1.7;
  if (shape == "diamond") return 2.0;
  if (shape == "triangle") return 0.5 * 1.732 * 1.5;
  if (shape == "cross") return 2 * 0.6 * 1.9 - 0.6 * 0.6;
  return M_PI;
}

struct FrameMask {
  std::vector<float> alpha;
  double area = 0, cx = 0, cy = 0;
};

// Soft IoU of the mask with `shape` rendered at the mask's centroid and area.
double template_iou(const FrameMask& m, int width, int height, const std::string& shape) {
  shapes::ClipSpec spec;
  spec.color = "white";
  spec.background = "black";
  spec.shape = shape;
  spec.direction = "right";
  spec.size = std::max(width, height);
  spec.frames = 1;
  spec.speed = 0;
  spec.radius = std::sqrt(m.area / unit_area(shape)) / spec.size;
  spec.start_x = m.cx / spec.size;
  spec.start_y = m.cy / spec.size;
  const RgbFrame t = shapes::render_frame(spec, 0);
  const double white = shapes::colors()[4].rgb.r;
  double inter = 0, uni = 0;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const double a = m.alpha[static_cast<size_t>(y) * width + x];
      const double b = t.pixel(x, y)[0] / white;
      inter += std::min(a, b);
      uni += std::max(a, b);
    }
  return uni > 0 ? inter / uni : 0.0;
}

double slope(const std::vector<double>& xs, const std::vector<double>& ys) {
  const double n = double(xs.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    mx += xs[i] / n;
    my += ys[i] / n;
  }
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) * (xs[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : 0.0;
}

}  // namespace

ShapeAnalysis analyze_shapes_clip(const std::vector<RgbFrame>& frames) {
  ShapeAnalysis out;
  if (frames.empty() || frames.front().empty()) return out;
  const int width = frames.front().width, height = frames.front().height;
  for (const auto& f : frames)
    if (f.width != width || f.height != height)
      throw Error(ErrorCode::invalid_argument, "frames", "all frames of a clip must have the same size");
  const Color bg = border_median(frames);

  // The shape's colour: pixels at least half as far from the background as the farthest ones.
  double farthest = 0;
  for (const auto& f : frames)
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) farthest = std::max(farthest, distance(pixel_color(f, x, y), bg));
  constexpr double kMinContrast = 40;  // below this nothing stands out from the background
  if (farthest < kMinContrast) return out;
  Color sum{};
  double count = 0;
  for (const auto& f : frames)
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        Color c = pixel_color(f, x, y);
        if (distance(c, bg) >= 0.5 * farthest) {
          for (int k = 0; k < 3; ++k) sum[k] += c[k];
          ++count;
        }
      }
  const Color fg{sum[0] / count, sum[1] / count, sum[2] / count};
  double best = std::numeric_limits<double>::max();
  for (const auto& named : shapes::colors()) {
    double d = distance(fg, {double(named.rgb.r), double(named.rgb.g), double(named.rgb.b)});
    if (d < best) {
      best = d;
      out.color = named.name;
    }
  }

  // Alpha: an anti-aliased edge pixel is a·fg + (1 − a)·bg, so its distance to bg is a·|fg − bg|.
  const double contrast = distance(fg, bg);
  std::vector<FrameMask> masks;
  std::vector<double> index, xs, ys;
  double alpha_total = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    FrameMask m;
    m.alpha.resize(static_cast<size_t>(width) * height);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        double a = std::clamp(distance(pixel_color(frames[i], x, y), bg) / contrast, 0.0, 1.0);
        // Generated frames carry low-level noise everywhere; it must not add up to area.
        if (a < 0.15) a = 0;
        m.alpha[static_cast<size_t>(y) * width + x] = static_cast<float>(a);
        m.area += a;
        m.cx += a * (x + 0.5);
        m.cy += a * (y + 0.5);
      }
    alpha_total += m.area;
    if (m.area < 2.0) {
      masks.push_back(std::move(m));
      continue;
    }
    m.cx /= m.area;
    m.cy /= m.area;
    index.push_back(double(i));
    xs.push_back(m.cx);
    ys.push_back(m.cy);
    masks.push_back(std::move(m));
  }
  out.foreground_fraction = alpha_total / (double(width) * height * frames.size());
  if (index.empty()) {
    out.color.clear();
    return out;
  }
  out.found = true;

  // Shape: three frames spread over the clip (first, middle, last visible).
  std::vector<size_t> picks;
  for (size_t k : {size_t(0), index.size() / 2, index.size() - 1})
    if (std::find(picks.begin(), picks.end(), k) == picks.end()) picks.push_back(k);
  double best_score = -1;
  for (const auto& name : shapes::shape_names()) {
    double s = 0;
    for (size_t k : picks) s += template_iou(masks[static_cast<size_t>(index[k])], width, height, name);
    s /= double(picks.size());
    if (s > best_score) {
      best_score = s;
      out.shape = name;
    }
  }
  out.shape_score = best_score;

  if (index.size() >= 2) {
    const double sx = slope(index, xs), sy = slope(index, ys);
    out.motion_px_per_frame = std::hypot(sx, sy);
    const double travel = std::max(std::fabs(sx), std::fabs(sy)) * (index.back() - index.front());
    if (travel >= 1.0) {
      if (std::fabs(sx) >= std::fabs(sy))
        out.direction = sx > 0 ? "right" : "left";
      else
        out.direction = sy > 0 ? "down" : "up";
    }
  }
  return out;
}

namespace {

shapes::Combo parse_shapes_prompt(const std::string& prompt, std::string* background = nullptr) {
  shapes::Combo combo;
  if (!shapes::parse_caption(prompt, &combo, background))
    throw Error(
        ErrorCode::invalid_argument, prompt,
        "not a shapes prompt (\"a <color> <shape> moving <direction> on a <background> background\")");
  return combo;
}

bool is_horizontal(const std::string& direction) {
  return direction == "left" || direction == "right";
}

}  // namespace

std::map<std::string, std::vector<std::string>> shapes_prompt_alternatives(const std::string& prompt) {
  std::string background;
  const shapes::Combo combo = parse_shapes_prompt(prompt, &background);
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& c : shapes::colors())
    if (c.name != combo.color)
      groups["color"].push_back(shapes::caption_of({c.name, combo.shape, combo.direction}, background));
  for (const auto& s : shapes::shape_names())
    if (s != combo.shape)
      groups["shape"].push_back(shapes::caption_of({combo.color, s, combo.direction}, background));
  for (const auto& d : shapes::directions())
    if (d != combo.direction)
      groups["direction"].push_back(shapes::caption_of({combo.color, combo.shape, d}, background));
  for (const auto& b : shapes::backgrounds())
    if (b.name != background) groups["background"].push_back(shapes::caption_of(combo, b.name));
  return groups;
}

ShapesVerdict judge_shapes_clip(const std::string& prompt, const std::vector<RgbFrame>& frames) {
  ShapesVerdict v;
  const shapes::Combo want = parse_shapes_prompt(prompt, &v.background);
  v.prompt = prompt;
  v.want_color = want.color;
  v.want_shape = want.shape;
  v.want_direction = want.direction;
  v.got = analyze_shapes_clip(frames);
  v.color_ok = v.got.color == want.color;
  v.shape_ok = v.got.shape == want.shape;
  v.direction_ok = v.got.direction == want.direction;
  v.axis_ok = !v.got.direction.empty() && is_horizontal(v.got.direction) == is_horizontal(want.direction);
  return v;
}

ShapesScore score(const std::vector<ShapesVerdict>& verdicts) {
  ShapesScore s;
  for (const auto& v : verdicts) {
    ++s.clips;
    s.color += v.color_ok;
    s.shape += v.shape_ok;
    s.direction += v.direction_ok;
    s.axis += v.axis_ok;
    s.all += v.all_ok();
  }
  return s;
}

namespace {
std::map<std::string, ShapesScore> score_by(const std::vector<ShapesVerdict>& verdicts,
                                            const std::function<std::string(const ShapesVerdict&)>& key) {
  std::map<std::string, std::vector<ShapesVerdict>> groups;
  for (const auto& v : verdicts) groups[key(v)].push_back(v);
  std::map<std::string, ShapesScore> scores;
  for (const auto& [name, group] : groups) scores[name] = score(group);
  return scores;
}
}  // namespace

std::map<std::string, ShapesScore> score_by_background(const std::vector<ShapesVerdict>& verdicts) {
  return score_by(verdicts, [](const ShapesVerdict& v) { return v.background; });
}

std::map<std::string, ShapesScore> score_by_repeat(const std::vector<ShapesVerdict>& verdicts) {
  return score_by(verdicts, [](const ShapesVerdict& v) { return std::to_string(v.repeat); });
}

std::vector<std::string> on_every_background(const std::vector<std::string>& prompts) {
  std::vector<std::string> out;
  for (const auto& prompt : prompts) {
    std::string listed;
    const shapes::Combo combo = parse_shapes_prompt(prompt, &listed);
    out.push_back(prompt);
    for (const auto& background : shapes::backgrounds_for(combo.color))
      if (background != listed) out.push_back(shapes::caption_of(combo, background));
  }
  return out;
}

nlohmann::json to_json(const ShapesVerdict& v) {
  return {{"prompt", v.prompt},
          {"background", v.background},
          {"seed", v.seed},
          {"want", {{"color", v.want_color}, {"shape", v.want_shape}, {"direction", v.want_direction}}},
          {"got",
           {{"found", v.got.found},
            {"color", v.got.color},
            {"shape", v.got.shape},
            {"direction", v.got.direction},
            {"shape_score", v.got.shape_score},
            {"motion_px_per_frame", v.got.motion_px_per_frame}}},
          {"color_ok", v.color_ok},
          {"shape_ok", v.shape_ok},
          {"direction_ok", v.direction_ok},
          {"axis_ok", v.axis_ok},
          {"all_ok", v.all_ok()}};
}

nlohmann::json to_json(const ShapesScore& s) {
  auto rate = [&](int n) { return s.clips ? double(n) / s.clips : 0.0; };
  return {{"clips", s.clips},
          {"color", s.color},
          {"shape", s.shape},
          {"direction", s.direction},
          {"axis", s.axis},
          {"all", s.all},
          {"color_rate", rate(s.color)},
          {"shape_rate", rate(s.shape)},
          {"direction_rate", rate(s.direction)},
          {"axis_rate", rate(s.axis)},
          {"all_rate", rate(s.all)}};
}

std::vector<std::string> read_heldout_prompts(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    throw Error(ErrorCode::not_found, path.string(),
                "no held-out list; write one with `mugv make-dataset shapes`");
  const auto j = read_json_file(path);
  if (!j.is_object() || !j.contains("prompts") || !j["prompts"].is_array())
    throw Error(ErrorCode::format, path.string(), "expected an object with a \"prompts\" list");
  std::vector<std::string> prompts;
  for (const auto& p : j["prompts"]) {
    if (!p.is_string()) throw Error(ErrorCode::format, path.string(), "\"prompts\" must hold strings");
    prompts.push_back(p.get<std::string>());
  }
  return prompts;
}

}  // namespace mugv
