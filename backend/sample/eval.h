#pragma once
// Checks generated videos of the shapes starter dataset (dataset/shapes.h) against their prompts:
// which colour, which shape, which direction of motion the frames actually show.
//
// Analysis of one clip (RGB frames, any size):
//   background  the median colour of the border pixels of the first frame
//   foreground  per pixel, alpha = distance to the background / distance of the shape's colour to
//               the background, clamped to [0, 1] (anti-aliased edges count partially)
//   colour      mean of the confidently-foreground pixels over all frames → nearest named colour of
//               shapes::colors()
//   shape       for a few frames: the alpha mask against templates of every shapes::shape_names()
//               rendered by shapes::render_frame at the mask's centroid and at the radius that gives
//               the mask's area; the best soft IoU (summed over frames) wins
//   direction   the alpha-weighted centroid trajectory: least-squares slope in x and y; the larger
//               axis and its sign give left/right/up/down (image y grows downwards)
// A verdict also says whether the motion is along the asked axis whatever its sign (`axis_ok`): a model
// learns the axis of a motion (horizontal or vertical) long before its sign, the arrow of time, so the two
// are reported apart (docs/BENCHMARKS.md, "the axis before the sign").
// A clip with no visible foreground gives empty names and found = false. Pure functions; thread-safe.

#include "media/frame.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mugv {

struct ShapeAnalysis {
  bool found = false;      // a foreground was detected
  std::string color;       // nearest named colour ("" when not found)
  std::string shape;       // best matching template
  std::string direction;   // "" when the centroid moves less than a pixel over the clip
  double shape_score = 0;  // mean soft IoU of the best template, 0..1
  double motion_px_per_frame = 0;
  double foreground_fraction = 0;  // mean alpha over the frames' pixels
};

[[nodiscard]] ShapeAnalysis analyze_shapes_clip(const std::vector<RgbFrame>& frames);

// What a prompt asked for and what came out.
struct ShapesVerdict {
  std::string prompt;
  std::string want_color, want_shape, want_direction, background;
  uint64_t seed = 0;  // the noise seed of the generation (0 for judged clips)
  int repeat = 0;     // which of the prompt's seeds (0 … seeds-1), for the spread over seeds
  ShapeAnalysis got;
  bool color_ok = false, shape_ok = false, direction_ok = false;
  // Moving along the asked axis (left/right: horizontal, up/down: vertical), either way.
  bool axis_ok = false;
  bool all_ok() const { return color_ok && shape_ok && direction_ok; }
};

// Compares the analysis with the prompt's words (shapes::parse_caption). Throws
// Error(invalid_argument) naming the prompt when it is not of the dataset's grammar.
[[nodiscard]] ShapesVerdict judge_shapes_clip(const std::string& prompt, const std::vector<RgbFrame>& frames);

struct ShapesScore {
  int clips = 0, color = 0, shape = 0, direction = 0, axis = 0, all = 0;
};
[[nodiscard]] ShapesScore score(const std::vector<ShapesVerdict>& verdicts);
// Scores per background and per seed repeat (keys "black", …; "0", "1", …).
[[nodiscard]] std::map<std::string, ShapesScore> score_by_background(
    const std::vector<ShapesVerdict>& verdicts);
[[nodiscard]] std::map<std::string, ShapesScore> score_by_repeat(const std::vector<ShapesVerdict>& verdicts);
[[nodiscard]] nlohmann::json to_json(const ShapesVerdict& verdict);
[[nodiscard]] nlohmann::json to_json(const ShapesScore& score);

// For a prompt of the dataset's grammar, the prompts that differ from it in exactly one attribute,
// grouped as "color", "shape", "direction" and "background" (every other value of that attribute).
// Throws Error(invalid_argument) naming the prompt when it is not of the grammar.
[[nodiscard]] std::map<std::string, std::vector<std::string>> shapes_prompt_alternatives(
    const std::string& prompt);

// Each prompt of the dataset's grammar on every background its colour is drawn on in the starter set
// (shapes::backgrounds_for), in prompt order; the listed background first. Throws as judge_shapes_clip.
[[nodiscard]] std::vector<std::string> on_every_background(const std::vector<std::string>& prompts);

// The prompts of a heldout.json written by `mugv make-dataset shapes` (dataset/starter.h).
// Throws Error(not_found) for a missing file, Error(format) for one without a "prompts" list.
[[nodiscard]] std::vector<std::string> read_heldout_prompts(const std::filesystem::path& path);

}  // namespace mugv
