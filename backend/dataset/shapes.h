#pragma once
// The procedural "shapes" starter dataset (DESIGN.md "The starter dataset"): one shape of one color moving in
// one direction on one background, captioned "a red circle moving left on a black background".
//
// The vocabulary is fixed, so a model trained on it can be checked for compositional generalisation: a set of
// (color, shape, direction) combinations is held out of the training split, chosen so that every color, every
// shape and every direction still appears in training. Rendering is pure CPU raster (anti-aliased by 4x4
// supersampling); no FFmpeg here. Thread-safe: all functions are pure.

#include "media/frame.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mugv::shapes {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

struct NamedColor {
  std::string name;
  Rgb rgb;
};

const std::vector<NamedColor>& colors();
const std::vector<std::string>& shape_names();
const std::vector<std::string>& directions();
const std::vector<NamedColor>& backgrounds();
// The backgrounds a shape of `color` is drawn on: those with enough contrast to see it. Throws
// Error(invalid_argument) for an unknown colour.
std::vector<std::string> backgrounds_for(const std::string& color);

// One (color, shape, direction) combination; background varies freely within a combination.
struct Combo {
  std::string color, shape, direction;
  bool operator==(const Combo& o) const {
    return color == o.color && shape == o.shape && direction == o.direction;
  }
};

// Where a clip's path lies. `edge`: the shape starts at the edge it moves away from and travels about half
// the frame, so the direction also fixes where the shape is in every frame. `anywhere`: the whole path
// (about a third of the frame) lies anywhere in view, so the direction is only the motion itself and not
// an absolute position, which a RoPE-only DiT can read off its tokens only indirectly (docs/BENCHMARKS.md,
// "Why direction was learnt late").
enum class Placement { edge, anywhere };
const char* to_string(Placement placement);
// Parses "edge" / "anywhere"; throws Error(invalid_argument) naming the value otherwise.
Placement placement_from_string(const std::string& name);

// Everything that defines one clip; rendering the same ClipSpec gives identical frames.
struct ClipSpec {
  std::string color, shape, direction, background;
  int size = 64;  // square frame side in pixels
  int frames = 17;
  double fps = 8;
  double radius = 0.2;                  // shape radius as a fraction of size
  double start_x = 0.5, start_y = 0.5;  // center at frame 0, fractions of size
  double speed = 0.03;                  // fraction of size per frame, along `direction`
};

std::string caption_of(const ClipSpec& spec);
std::string caption_of(const Combo& combo, const std::string& background);

// The combinations held out of training for `seed`: about `fraction` of all combinations, never removing the
// last training occurrence of any color, shape or direction. Deterministic in (seed, fraction).
std::vector<Combo> held_out_combos(uint64_t seed, double fraction = 0.1);

// `count` clip specs for the training split (no held-out combination), deterministic in the seed.
std::vector<ClipSpec> training_specs(int count, int size, int frames, double fps, uint64_t seed,
                                     const std::vector<Combo>& held_out, Placement placement);
// One spec per held-out combination (for evaluation and held-out reconstruction checks).
std::vector<ClipSpec> held_out_specs(int size, int frames, double fps, uint64_t seed,
                                     const std::vector<Combo>& held_out, Placement placement);

// Renders frame `index` of the clip.
RgbFrame render_frame(const ClipSpec& spec, int index);
std::vector<RgbFrame> render_clip(const ClipSpec& spec);

// Parses a caption of the dataset's grammar back into its parts; nullopt-like empty Combo when it does not
// match.
bool parse_caption(const std::string& caption, Combo* combo, std::string* background);

}  // namespace mugv::shapes
