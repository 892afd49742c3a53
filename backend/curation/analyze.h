#pragma once
// One decoding pass over a video for curation: shots (SceneDetector), training clips cut from them
// (split_into_clips) and the scores of every clip (ClipScorer).
//
// The video is decoded once at kScoreAnalysisWidth. Decoding runs on its own thread and hands frames
// through a small bounded queue (8 frames) to the analysis on the calling thread, so the two overlap and
// memory stays bounded. Clips are scored after the pass from the scorer's per-frame numbers and samples.
// Thread-safe in the sense that separate calls are independent.

#include "core/progress.h"
#include "curation/scene_detect.h"
#include "curation/scores.h"

#include <filesystem>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

struct AnalyzeOptions {
  SceneDetectOptions scene;
  ScoreOptions scores;
  double clip_min_len_s = 2.0;
  double clip_max_len_s = 10.0;  // <= 0: whole shots
  int decode_threads = 1;
};

struct VideoAnalysis {
  SceneDetection scenes;
  std::vector<ClipAnalysis> clips;  // one per clip from split_into_clips, in time order
  int64_t frames = 0;
};

// Checks `cancel` once per frame (Error(cancelled)); reports progress in frames ("curate" stage).
// Throws what VideoDecoder throws for unreadable files; errors on the decoding thread are rethrown here.
[[nodiscard]] VideoAnalysis analyze_video(const fs::path& path, const AnalyzeOptions& options = {},
                                          const CancelToken* cancel = nullptr,
                                          const ProgressFn& progress = {});

}  // namespace mugv
