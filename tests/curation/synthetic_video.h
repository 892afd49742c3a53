#pragma once
// Synthetic test videos with known answers for the curation tests: shots of procedural textured
// pictures (each with its own hue family, texture and motion) joined by hard cuts, fades through
// black/white and dissolves at known frames, plus single-shot clips with one property changed (blur,
// stillness, letterbox bars, a burned-in caption, duplicated frames, a speed change, camera shake).
// Written as H.264 mp4 through mugv::VideoEncoder. Deterministic: the same arguments give the same pixels.

#include "curation/scene_detect.h"
#include "media/frame.h"

#include <cstdint>
#include <filesystem>
#include <vector>

namespace mugv::test {

namespace fs = std::filesystem;

struct Look {
  double hue_deg = 0;  // base hue of the texture (0..360)
  uint32_t seed = 1;   // texture layout
  double vx_px = 2;    // content motion per frame, px at the output size
  double vy_px = 0;
  double blur_sigma_px = 0;  // Gaussian blur applied to every frame (0 = sharp)
  double shake_px = 0;       // random per-frame jitter of the view, +-px
  double gray = 0;           // 0..1: how much colour is removed (1 = grey)
  double contrast = 1;       // texture contrast around mid grey
  double grain = 0;          // std-dev of fine per-pixel texture (film grain, foliage), 0..255 levels
};

// fade_out_cut: the previous shot fades towards black over transition_frames frames, down to fade_floor of
// its brightness, and the new shot starts with a hard cut before black is reached (a hard cut, at the new
// shot's first frame).
enum class Transition { unknown = 0, hard, fade_black, fade_white, dissolve, fade_out_cut };

struct Shot {
  Look look;
  int frames = 48;
  Transition into = Transition::hard;  // how this shot begins (ignored for the first shot)
  int transition_frames = 0;           // length of a fade or dissolve (taken half from each side)
  double fade_floor = 0.15;            // fade_out_cut: brightness the previous shot reaches before the cut
};

struct ExpectedCut {
  int64_t frame = 0;  // the first frame of the new shot (fade: the darkest/brightest frame)
  double time_s = 0;
  CutKind kind = CutKind::unknown;
};

struct GeneratedVideo {
  fs::path path;
  double fps = 24;
  int64_t frames = 0;
  std::vector<ExpectedCut> cuts;
};

// A procedural picture of `look` at frame k (size width x height).
RgbFrame look_frame(const Look& look, int width, int height, int k);

// Renders `shots` back to back and writes them to `path` (mp4).
GeneratedVideo write_shots(const fs::path& path, const std::vector<Shot>& shots, int width = 320,
                           int height = 180, double fps = 24);

// Variants of one moving shot.
enum class Defect {
  unknown = 0,
  none,
  letterbox,     // black bars top and bottom (14 % each)
  pillarbox,     // black bars left and right (14 % each)
  text_overlay,  // a static white caption burned in over the moving picture
  duplicated,    // every frame shown twice
  speed_change,  // the motion jumps from slow to 5x faster halfway
};

// One shot of `frames` frames of `look` with `defect`, written to `path` (mp4).
GeneratedVideo write_clip(const fs::path& path, const Look& look, Defect defect, int frames = 48,
                          int width = 320, int height = 180, double fps = 24);

// The frames write_clip would encode (before compression), for tests that analyse pictures directly.
std::vector<RgbFrame> clip_frames(const Look& look, Defect defect, int frames, int width = 320,
                                  int height = 180, double fps = 24);

}  // namespace mugv::test
