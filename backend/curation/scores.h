#pragma once
// Per-clip quality scores for curation (docs/MUGV.md §1): sharpness, motion, camera shake, a heuristic
// aesthetic score, artifact indicators and perceptual hashes.
//
// ClipScorer is fed the frames of a video (or of one clip) in presentation order and keeps only small
// per-frame numbers and periodic samples (about 6 KB per sample_interval_s), so one decoding pass can score
// every clip of a long video: analyze(start_s, end_s) then summarises any range already pushed.
// Not thread-safe; one scorer per video.
//
// Analysis resolutions (frames are first reduced with area averaging; narrower frames are used as they are):
//  - kScoreAnalysisWidth (320 px wide): sharpness, aesthetics, borders, frozen-frame differences, pHash
//  input.
//  - kMotionAnalysisWidth (256 px wide): optical flow (OpenCV DIS, fast preset) between consecutive frames.
//  - kOverlayAnalysisWidth (160 px wide): edge persistence for burned-in text and static overlays.
//
// Scores:
//  - sharpness: variance of the 3x3 Laplacian of 8-bit luma at 320 px wide, mean of the keyframes nearest
//    the clip's start, middle and end. MUG-V keeps [200, 2000]; its absolute scale depends on the
//    resolution it is measured at, so calibrate thresholds per source when in doubt.
//  - motion: mean optical-flow magnitude in pixels per frame at a 256-px-wide frame, averaged over three
//    consecutive-frame pairs at the start, middle and end (MUG-V's [1, 20] range: 1 px/frame is an object
//    crossing the frame in ~10 s at 25 fps; 20 px/frame crosses it in half a second).
//  - shake_px: high-frequency jitter of the global (median) flow vector over the clip's flow samples:
//    mean |g[i] - (g[i-1] + g[i+1]) / 2| in px at 256 wide. A steady pan gives ~0.
//  - aesthetic: the user's learned predictor when ScoreOptions::aesthetic_model is set (aesthetic_model.h;
//    mean of its scores of the three keyframes at 320 px wide), otherwise a HEURISTIC stand-in for
//    LAION's CLIP-based predictor, 1..10:
//    1 + 9 * exposure * (0.35 contrast + 0.35 colourfulness + 0.30 composition), each part 0..1 —
//    exposure (mean luma near 0.45, few clipped pixels), RMS contrast (luma std / 64), colourfulness
//    (Hasler & Süsstrunk 2003, M / 70), composition (gradient-energy centroid near a rule-of-thirds point
//    or the centre). It ranks well-exposed, colourful, structured pictures above dull ones; it does not
//    judge content.
//  - artifacts: letterbox/pillarbox (rows/columns of near-constant dark pixels on both sides in every
//    keyframe), text_overlay (edges present in >= 80 % of samples whose surroundings change: burned-in
//    captions, logos), frozen_frames (share of near-identical consecutive frames in moving content),
//    speed_change (the flow magnitude jumps by a factor >= speed_change_min_ratio between neighbouring
//    stretches of the clip), camera_shake (shake_px >= shake_min_px).
//  - phash: 64-bit DCT perceptual hash (32x32 luma, 8x8 low frequencies against their median) of the three
//    keyframes; compare with hamming_distance (<= 10 of 64 bits: near duplicates).

#include "core/progress.h"
#include "media/frame.h"

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

inline constexpr int kScoreAnalysisWidth = 320;
inline constexpr int kMotionAnalysisWidth = 256;
inline constexpr int kOverlayAnalysisWidth = 160;

// A bitmask; its zero value is the empty set (no artifact found), which is why it is `none`, not `unknown`.
enum class ArtifactFlags : uint32_t {
  none = 0,
  letterbox = 1u << 0,
  pillarbox = 1u << 1,
  text_overlay = 1u << 2,
  frozen_frames = 1u << 3,
  speed_change = 1u << 4,
  camera_shake = 1u << 5,
};

constexpr ArtifactFlags operator|(ArtifactFlags a, ArtifactFlags b) {
  return static_cast<ArtifactFlags>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}
constexpr ArtifactFlags operator&(ArtifactFlags a, ArtifactFlags b) {
  return static_cast<ArtifactFlags>(static_cast<uint32_t>(a) & static_cast<uint32_t>(b));
}
inline ArtifactFlags& operator|=(ArtifactFlags& a, ArtifactFlags b) {
  return a = a | b;
}
constexpr bool has_any(ArtifactFlags set, ArtifactFlags flags) {
  return (set & flags) != ArtifactFlags::none;
}

// Every single flag, in bit order.
const std::vector<ArtifactFlags>& all_artifact_flags();
// "none", one name ("letterbox") or names joined by '|' ("letterbox|text_overlay"), in bit order.
std::string to_string(ArtifactFlags flags);
// Parses what to_string writes (also ',' as separator, spaces ignored); nullopt for an unknown name.
std::optional<ArtifactFlags> artifact_flags_from_string(std::string_view text);

class AestheticModel;

struct ScoreOptions {
  double sample_interval_s = 0.5;       // keyframe samples (sharpness, aesthetics, borders, overlay, pHash)
  double motion_interval_s = 0.2;       // flow pairs (motion, shake, speed change)
  double border_min_fraction = 0.04;    // each bar at least this share of the height (width)
  double overlay_min_fraction = 0.002;  // persistent-edge pixels over the picture
  double frozen_min_ratio = 0.15;       // near-identical consecutive frames over all pairs
  double speed_change_min_ratio = 2.5;
  double shake_min_px = 1.5;
  std::shared_ptr<AestheticModel> aesthetic_model;  // empty: the heuristic aesthetic score
};

struct AestheticParts {
  double exposure = 0;  // each 0..1
  double contrast = 0;
  double colourfulness = 0;
  double composition = 0;
};

struct ClipAnalysis {
  double start_s = 0;
  double end_s = 0;
  int64_t frames = 0;  // frames of the clip that were pushed
  double sharpness = 0;
  double motion = 0;
  std::array<double, 3> motion_pairs{};  // start, middle, end
  double shake_px = 0;
  double aesthetic = 0;
  std::string aesthetic_source = "heuristic";  // or the model's AestheticModel::source()
  AestheticParts aesthetic_parts;              // the heuristic's parts (always measured)
  double letterbox_fraction = 0;               // the thinner of the top/bottom bars, share of the height
  double pillarbox_fraction = 0;               // the thinner of the left/right bars, share of the width
  double overlay_fraction = 0;
  double frozen_ratio = 0;
  double speed_change_ratio = 1;
  std::array<uint64_t, 3> phash{};  // start, middle, end keyframes
  ArtifactFlags flags = ArtifactFlags::none;
};

class ClipScorer {
 public:
  explicit ClipScorer(ScoreOptions options = {});
  ~ClipScorer();
  ClipScorer(ClipScorer&&) noexcept;
  ClipScorer& operator=(ClipScorer&&) noexcept;
  ClipScorer(const ClipScorer&) = delete;
  ClipScorer& operator=(const ClipScorer&) = delete;

  // Frames in presentation order, any size; throws Error(invalid_argument) for a frame without pixels.
  void push(const RgbFrame& frame);
  // Scores of the frames with start_s <= pts < end_s. Throws Error(invalid_argument) when no pushed frame
  // lies in the range.
  [[nodiscard]] ClipAnalysis analyze(double start_s, double end_s) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Scores a clip given as frames (their pts_s define the range).
[[nodiscard]] ClipAnalysis analyze_frames(const std::vector<RgbFrame>& frames,
                                          const ScoreOptions& options = {});
// Decodes [start_s, end_s) of `path` at kScoreAnalysisWidth and scores it (end_s <= 0: to the end).
[[nodiscard]] ClipAnalysis analyze_clip(const fs::path& path, double start_s, double end_s,
                                        const ScoreOptions& options = {},
                                        const CancelToken* cancel = nullptr);

// Variance of the Laplacian of the frame's luma at kScoreAnalysisWidth.
[[nodiscard]] double laplacian_variance(const RgbFrame& frame);
// 64-bit DCT perceptual hash of the frame.
[[nodiscard]] uint64_t perceptual_hash(const RgbFrame& frame);
[[nodiscard]] int hamming_distance(uint64_t a, uint64_t b);

}  // namespace mugv
