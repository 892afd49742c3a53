#pragma once
// Streaming scene detection: hard cuts, fades through black/white and dissolves.
//
// SceneDetector is fed decoded frames in presentation order (push) and reports cuts at finish(). Each frame
// is reduced to a small analysis picture, kSceneAnalysisWidth px wide (height keeps the aspect ratio; frames
// already that small are used as they are), so it can run beside the decoder at a fraction of its cost.
// It never keeps pictures of the whole video: only a ring of 2 * dissolve_half_window_frames + 1 analysis
// pictures and a few numbers per frame (about 40 bytes, i.e. ~7 MB for two hours at 24 fps).
//
// Detectors (all on the analysis picture):
//  - hard cuts: PySceneDetect's adaptive content detector. d[t] is the mean absolute HSV difference between
//    frames t-1 and t (average of the three channels, 0..255 scale). A cut starts frame t when
//    d[t] >= min_content_diff and d[t] / mean(d of the adaptive_window_frames neighbours on each side)
//    >= adaptive_ratio, so camera motion, which raises every neighbour alike, does not cut.
//  - fades: a run of frames whose mean luma is below fade_black_luma (above fade_white_luma) that has
//    brighter (darker) picture on both sides; the cut is placed at the darkest (brightest) frame of the run.
//    A dark run at the start or end of the video is a fade-in/out, not a cut. A run entered gradually and
//    left abruptly (a shot fading out, cut before black) or the reverse (a cut to black, fading in) is the
//    hard cut on its abrupt side.
//  - dissolves: a blend A*(1-a) + B*a is linear in time, so for a frame t inside it the picture equals the
//    average of frames t-L and t+L (L = dissolve_half_window_frames), while t-L and t+L differ strongly in
//    structure. Motion and hard cuts break that linearity (a hard cut gives exactly half the difference).
//    A run of such frames is one dissolve, cut at its middle, unless an abrupt change (the hard-cut test)
//    lies in its window: a shot fading out looks like a blend towards black, and when it ends in a cut it is
//    that cut.
// Gradual transitions win over hard-cut candidates inside them; cuts closer than min_scene_len_s to the
// previous cut (or to the start of the video) are dropped.
//
// Times are the decoder's presentation times (RgbFrame::pts_s), so variable-frame-rate files are handled.
// Not thread-safe; one detector per video.

#include "core/progress.h"
#include "media/frame.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

inline constexpr int kSceneAnalysisWidth = 160;

enum class CutKind { unknown = 0, hard, fade, dissolve };

const char* to_string(CutKind kind);
std::optional<CutKind> cut_kind_from_string(std::string_view name);

struct SceneCut {
  double time_s = 0;        // presentation time of the first frame of the new scene
  int64_t frame_index = 0;  // position of that frame in the sequence pushed (0-based)
  CutKind kind = CutKind::unknown;
  double score =
      0;  // hard: d[t]; fade: |luma - 128| distance of the extreme frame; dissolve: structure change
};

// A shot as a half-open time range [start_s, end_s).
struct Scene {
  double start_s = 0;
  double end_s = 0;
  double length_s() const { return end_s - start_s; }
};

struct SceneDetectOptions {
  // hard cuts
  double adaptive_ratio = 3.0;
  double min_content_diff = 15.0;  // absolute floor for d[t], 0..255
  // Floor for the mean-removed luma difference of the two frames, 0..255: a cut changes the picture's
  // structure, not only its colours (a flat background turning from grey to red is not a new shot).
  double min_structure_diff = 4.0;
  int adaptive_window_frames = 2;
  // fades
  double fade_black_luma = 20.0;
  double fade_white_luma = 235.0;
  double fade_white_min_texture = 8.0;  // luma std-dev of the picture faded from or into, 0..255
  // dissolves
  int dissolve_half_window_frames = 5;
  double dissolve_min_change = 12.0;         // mean-removed luma difference of the two window ends, 0..255
  double dissolve_max_nonlinearity = 0.35;   // |F[t] - (F[t-L] + F[t+L]) / 2| as a fraction of that change
  double dissolve_min_colour_change = 0.15;  // HSV histogram distance (0..1) of F[t] to the nearer end
  int dissolve_min_run_frames = 2;
  // all
  double min_scene_len_s = 0.5;
};

struct SceneDetection {
  std::vector<SceneCut> cuts;  // ascending time; empty: one continuous shot
  std::vector<Scene> scenes;   // cover [first pts, end_s) without gaps; empty only when no frame was pushed
  int64_t frames = 0;
  double end_s = 0;  // last pts plus one typical frame interval
};

class SceneDetector {
 public:
  explicit SceneDetector(SceneDetectOptions options = {});
  ~SceneDetector();
  SceneDetector(SceneDetector&&) noexcept;
  SceneDetector& operator=(SceneDetector&&) noexcept;
  SceneDetector(const SceneDetector&) = delete;
  SceneDetector& operator=(const SceneDetector&) = delete;

  // Frames in presentation order, any size; throws Error(invalid_argument) for a frame without pixels.
  void push(const RgbFrame& frame);
  // Runs the detectors over what was pushed. May be called more than once; push() may continue afterwards.
  [[nodiscard]] SceneDetection finish() const;

  int64_t frames_pushed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Scenes from cut times: [start_s, cut1), [cut1, cut2), ..., [cutN, end_s).
[[nodiscard]] std::vector<Scene> scenes_from_cuts(const std::vector<SceneCut>& cuts, double start_s,
                                                  double end_s);

// Training clips from shots: a shot shorter than min_len_s is dropped, one up to max_len_s is kept whole,
// a longer one is cut into consecutive max_len_s windows from its start, keeping a remainder only when it
// is at least min_len_s long. max_len_s <= 0 means no upper limit.
[[nodiscard]] std::vector<Scene> split_into_clips(const std::vector<Scene>& scenes, double min_len_s,
                                                  double max_len_s);

// Decodes `path` at kSceneAnalysisWidth (VideoDecoder, one thread) and runs a SceneDetector over it.
// Checks `cancel` once per frame (Error(cancelled)); reports progress in frames ("scenes" stage).
// Throws what VideoDecoder throws for unreadable files.
[[nodiscard]] SceneDetection detect_scenes(const fs::path& path, const SceneDetectOptions& options = {},
                                           const CancelToken* cancel = nullptr,
                                           const ProgressFn& progress = {});

}  // namespace mugv
