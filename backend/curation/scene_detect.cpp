#include "curation/scene_detect.h"

#include "core/error.h"
#include "core/strings.h"
#include "curation/cv_util.h"
#include "media/decoder.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <deque>

namespace mugv {

using curation_detail::fit_width;
using curation_detail::view_rgb;

const char* to_string(CutKind kind) {
  switch (kind) {
    case CutKind::hard:
      return "hard";
    case CutKind::fade:
      return "fade";
    case CutKind::dissolve:
      return "dissolve";
    case CutKind::unknown:
      break;
  }
  return "unknown";
}

std::optional<CutKind> cut_kind_from_string(std::string_view name) {
  for (CutKind kind : {CutKind::unknown, CutKind::hard, CutKind::fade, CutKind::dissolve}) {
    if (name == to_string(kind)) return kind;
  }
  return std::nullopt;
}

namespace {

// A frame range [first, last] in which a gradual transition happens; hard-cut candidates inside are part of
// it.
struct Span {
  int64_t first = 0;
  int64_t last = 0;
};

bool inside(const std::vector<Span>& spans, int64_t index) {
  return std::any_of(spans.begin(), spans.end(),
                     [&](const Span& s) { return index >= s.first && index <= s.last; });
}

}  // namespace

struct SceneDetector::Impl {
  SceneDetectOptions options;
  std::vector<double> pts;
  std::vector<float> content_diff;  // d[t], HSV difference to the previous frame
  std::vector<float> luma;          // mean luma
  std::vector<float> change;        // dissolve: structure change between t-L and t+L (at t)
  std::vector<float> nonlinearity;  // dissolve: |F[t] - mean(F[t-L], F[t+L])| / change
  std::vector<float>
      colour_change;  // dissolve: HSV histogram distance of F[t] to the nearer of F[t-L], F[t+L]
  std::vector<float> structure_diff;  // mean-removed luma difference to the previous frame
  std::vector<float> luma_std;        // spread of luma within the frame
  cv::Mat prev_hsv;
  std::deque<cv::Mat> ring;       // last 2L+1 luma pictures, CV_32F
  std::deque<cv::Mat> hist_ring;  // their normalised HSV histograms

  void push(const RgbFrame& frame) {
    cv::Mat small = fit_width(view_rgb(frame), kSceneAnalysisWidth);
    cv::Mat hsv, gray;
    cv::cvtColor(small, hsv, cv::COLOR_RGB2HSV);
    cv::cvtColor(small, gray, cv::COLOR_RGB2GRAY);

    float d = 0;
    if (!prev_hsv.empty() && prev_hsv.size() == hsv.size()) {
      cv::Mat diff;
      cv::absdiff(hsv, prev_hsv, diff);
      const cv::Scalar m = cv::mean(diff);
      d = static_cast<float>((m[0] + m[1] + m[2]) / 3.0);
    }
    prev_hsv = hsv;
    cv::Scalar mean, stddev;
    cv::meanStdDev(gray, mean, stddev);
    cv::Mat gray_f;
    gray.convertTo(gray_f, CV_32F);
    if (!ring.empty() && ring.back().size() != gray_f.size()) {
      ring.clear();
      hist_ring.clear();
    }
    float structure = 0;
    if (!ring.empty()) {
      structure = static_cast<float>(mean_removed_difference(gray_f, mean[0], ring.back(), luma.back()));
    }
    pts.push_back(frame.pts_s);
    content_diff.push_back(d);
    luma.push_back(static_cast<float>(mean[0]));
    luma_std.push_back(static_cast<float>(stddev[0]));
    structure_diff.push_back(structure);
    change.push_back(0);
    nonlinearity.push_back(1);
    colour_change.push_back(0);

    const int half = std::max(1, options.dissolve_half_window_frames);
    ring.push_back(gray_f);
    hist_ring.push_back(histogram(hsv));
    if (static_cast<int>(ring.size()) > 2 * half + 1) {
      ring.pop_front();
      hist_ring.pop_front();
    }
    if (static_cast<int>(ring.size()) == 2 * half + 1) measure_linearity(half);
  }

  // mean |(a - mean_a) - (b - mean_b)|: how much the picture changed apart from its overall brightness.
  static double mean_removed_difference(const cv::Mat& a, double mean_a, const cv::Mat& b, double mean_b) {
    cv::Mat diff;
    cv::subtract(a, b, diff);
    diff -= cv::Scalar(mean_a - mean_b);
    return cv::mean(cv::abs(diff))[0];
  }

  // 8 hue x 4 saturation x 4 value bins, summing to 1.
  static cv::Mat histogram(const cv::Mat& hsv) {
    const int channels[] = {0, 1, 2};
    const int bins[] = {8, 4, 4};
    const float hue_range[] = {0, 180}, other_range[] = {0, 256};
    const float* ranges[] = {hue_range, other_range, other_range};
    cv::Mat hist;
    cv::calcHist(&hsv, 1, channels, cv::Mat(), hist, 3, bins, ranges);
    hist /= static_cast<double>(hsv.total());
    return hist;
  }

  void measure_linearity(int half) {
    const cv::Mat& a = ring.front();
    const cv::Mat& mid = ring[static_cast<size_t>(half)];
    const cv::Mat& b = ring.back();
    const double structure_change = mean_removed_difference(a, cv::mean(a)[0], b, cv::mean(b)[0]);
    cv::Mat average, error_map;
    cv::addWeighted(a, 0.5, b, 0.5, 0, average);
    cv::absdiff(mid, average, error_map);
    const double error = cv::mean(error_map)[0];
    const size_t center = pts.size() - 1 - static_cast<size_t>(half);
    change[center] = static_cast<float>(structure_change);
    // The middle of a dissolve has colours of both shots, so it differs from each end; motion or a hard cut
    // leaves it equal to at least one end.
    const cv::Mat& hist_mid = hist_ring[static_cast<size_t>(half)];
    colour_change[center] =
        static_cast<float>(0.5 * std::min(cv::norm(hist_mid, hist_ring.front(), cv::NORM_L1),
                                          cv::norm(hist_mid, hist_ring.back(), cv::NORM_L1)));
    nonlinearity[center] = static_cast<float>(structure_change > 1e-6 ? error / structure_change : 1.0);
  }

  // Fades: runs beyond the luma threshold with picture on both sides.
  void find_fades(bool black, std::vector<SceneCut>& cuts, std::vector<Span>& spans) const {
    const int64_t n = static_cast<int64_t>(luma.size());
    auto extreme = [&](int64_t t) {
      return black ? luma[static_cast<size_t>(t)] < options.fade_black_luma
                   : luma[static_cast<size_t>(t)] > options.fade_white_luma;
    };
    // Ordering that makes "darker" (or "brighter") the larger value.
    auto depth = [&](int64_t t) {
      return black ? -luma[static_cast<size_t>(t)] : luma[static_cast<size_t>(t)];
    };
    for (int64_t t = 0; t < n;) {
      if (!extreme(t)) {
        ++t;
        continue;
      }
      int64_t first = t;
      while (t < n && extreme(t)) ++t;
      int64_t last = t - 1;
      if (first == 0 || last == n - 1) continue;  // fade-in at the start or fade-out at the end
      // A dark (bright) run entered gradually and left abruptly is a shot fading out and cut before or at the
      // extreme; one entered abruptly and left gradually is a cut to black (white) fading in. Either is that
      // cut, on the abrupt side, and the hard-cut detector places it. Abrupt on both sides (a slate between
      // two cuts) and gradual on both (a fade through black) stay fades.
      if (abrupt_change_at(first) != abrupt_change_at(last + 1)) continue;
      float best = depth(first);
      for (int64_t k = first; k <= last; ++k) best = std::max(best, depth(k));
      // Middle of the frames within half a luma step of the extreme, so a flat black hold is split evenly.
      int64_t lo = -1, hi = -1;
      for (int64_t k = first; k <= last; ++k) {
        if (depth(k) >= best - 0.5f) {
          if (lo < 0) lo = k;
          hi = k;
        }
      }
      const int64_t at = (lo + hi + 1) / 2;
      const int64_t max_ramp = 90;
      int64_t span_first = first, span_last = last;
      while (span_first > 0 && first - span_first < max_ramp && depth(span_first - 1) < depth(span_first))
        --span_first;
      while (span_last < n - 1 && span_last - last < max_ramp && depth(span_last + 1) < depth(span_last))
        ++span_last;
      // Bright flat frames are common content (white cards, blown-out sky); a fade through white must turn
      // real picture into white on at least one side.
      if (!black && std::max(luma_std[static_cast<size_t>(span_first)],
                             luma_std[static_cast<size_t>(span_last)]) < options.fade_white_min_texture) {
        continue;
      }
      cuts.push_back(
          {pts[static_cast<size_t>(at)], at, CutKind::fade, std::abs(128.0 + (black ? best : -best))});
      // The whole ramp into and out of the extreme belongs to the transition.
      spans.push_back({span_first - 1, span_last + 1});
    }
  }

  void find_dissolves(const std::vector<Span>& fade_spans, std::vector<SceneCut>& cuts,
                      std::vector<Span>& spans) const {
    const int64_t n = static_cast<int64_t>(change.size());
    const int64_t half = std::max(1, options.dissolve_half_window_frames);
    auto candidate = [&](int64_t t) {
      return change[static_cast<size_t>(t)] >= options.dissolve_min_change &&
             nonlinearity[static_cast<size_t>(t)] <= options.dissolve_max_nonlinearity &&
             colour_change[static_cast<size_t>(t)] >= options.dissolve_min_colour_change;
    };
    for (int64_t t = 0; t < n;) {
      if (!candidate(t)) {
        ++t;
        continue;
      }
      const int64_t first = t;
      int64_t last = t;
      // One frame below the bar (noise) does not end a dissolve.
      while (t < n && (candidate(t) || (t + 1 < n && candidate(t + 1)))) {
        if (candidate(t)) last = t;
        ++t;
      }
      if (last - first + 1 < options.dissolve_min_run_frames) continue;
      // A dissolve's own steps are never abrupt next to each other, so an abrupt change in its window or
      // right at its edges is a cut: a shot fading out (a blend towards black, linear like a dissolve) and
      // then cut, or cut to black and fading in. The hard-cut detector places it.
      bool abrupt = false;
      for (int64_t k = first - half; k <= last + half + 1 && !abrupt; ++k) abrupt = abrupt_change_at(k);
      if (abrupt) continue;
      const Span span{first - half, last + half};
      bool in_fade = false;
      for (const Span& f : fade_spans) {
        if (span.first <= f.last && span.last >= f.first) in_fade = true;
      }
      if (in_fade) continue;
      float score = 0, colour = 0;
      for (int64_t k = first; k <= last; ++k) {
        score = std::max(score, change[static_cast<size_t>(k)]);
        colour = std::max(colour, colour_change[static_cast<size_t>(k)]);
      }
      if (colour < options.dissolve_min_colour_change) continue;
      const int64_t at = (first + last + 1) / 2;
      cuts.push_back({pts[static_cast<size_t>(at)], at, CutKind::dissolve, score});
      spans.push_back(span);
    }
  }

  // Frame t starts a new picture abruptly: the adaptive content test of the hard-cut detector.
  bool abrupt_change_at(int64_t t) const {
    const int64_t n = static_cast<int64_t>(content_diff.size());
    if (t < 1 || t >= n) return false;
    const double d = content_diff[static_cast<size_t>(t)];
    if (d < options.min_content_diff || structure_diff[static_cast<size_t>(t)] < options.min_structure_diff)
      return false;
    const int64_t w = std::max(1, options.adaptive_window_frames);
    double sum = 0;
    int count = 0;
    for (int64_t k = std::max<int64_t>(1, t - w); k <= std::min(n - 1, t + w); ++k) {
      if (k == t) continue;
      sum += content_diff[static_cast<size_t>(k)];
      ++count;
    }
    const double neighbours = count > 0 ? sum / count : 0;
    const double ratio = neighbours > 1e-3 ? d / neighbours : 255.0;
    return ratio >= options.adaptive_ratio;
  }

  void find_hard_cuts(const std::vector<Span>& gradual, std::vector<SceneCut>& cuts) const {
    const int64_t n = static_cast<int64_t>(content_diff.size());
    for (int64_t t = 1; t < n; ++t) {
      if (!abrupt_change_at(t) || inside(gradual, t)) continue;
      cuts.push_back({pts[static_cast<size_t>(t)], t, CutKind::hard, content_diff[static_cast<size_t>(t)]});
    }
  }

  double end_time() const {
    if (pts.empty()) return 0;
    std::vector<double> gaps;
    for (size_t k = pts.size() > 31 ? pts.size() - 31 : 1; k < pts.size(); ++k)
      gaps.push_back(pts[k] - pts[k - 1]);
    double step = 0.04;
    if (!gaps.empty()) {
      std::nth_element(gaps.begin(), gaps.begin() + static_cast<long>(gaps.size() / 2), gaps.end());
      step = gaps[gaps.size() / 2];
    }
    return pts.back() + std::max(step, 0.0);
  }

  SceneDetection finish() const {
    SceneDetection result;
    result.frames = static_cast<int64_t>(pts.size());
    if (pts.empty()) return result;
    result.end_s = end_time();

    std::vector<SceneCut> candidates;
    std::vector<Span> gradual;
    find_fades(true, candidates, gradual);
    find_fades(false, candidates, gradual);
    std::vector<Span> fade_spans = gradual;
    find_dissolves(fade_spans, candidates, gradual);
    find_hard_cuts(gradual, candidates);
    std::sort(candidates.begin(), candidates.end(),
              [](const SceneCut& a, const SceneCut& b) { return a.frame_index < b.frame_index; });

    double last_s = pts.front();
    for (const SceneCut& cut : candidates) {
      if (cut.time_s - last_s + 1e-6 < options.min_scene_len_s) continue;
      result.cuts.push_back(cut);
      last_s = cut.time_s;
    }
    result.scenes = scenes_from_cuts(result.cuts, pts.front(), result.end_s);
    return result;
  }
};

SceneDetector::SceneDetector(SceneDetectOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
}
SceneDetector::~SceneDetector() = default;
SceneDetector::SceneDetector(SceneDetector&&) noexcept = default;
SceneDetector& SceneDetector::operator=(SceneDetector&&) noexcept = default;

void SceneDetector::push(const RgbFrame& frame) {
  impl_->push(frame);
}
SceneDetection SceneDetector::finish() const {
  return impl_->finish();
}
int64_t SceneDetector::frames_pushed() const {
  return static_cast<int64_t>(impl_->pts.size());
}

std::vector<Scene> scenes_from_cuts(const std::vector<SceneCut>& cuts, double start_s, double end_s) {
  std::vector<Scene> scenes;
  double begin = start_s;
  for (const SceneCut& cut : cuts) {
    if (cut.time_s <= begin || cut.time_s >= end_s) continue;
    scenes.push_back({begin, cut.time_s});
    begin = cut.time_s;
  }
  if (end_s > begin) scenes.push_back({begin, end_s});
  return scenes;
}

std::vector<Scene> split_into_clips(const std::vector<Scene>& scenes, double min_len_s, double max_len_s) {
  // Tolerates the rounding of frame times (a 5 s shot at 24 fps may measure 4.9999999 s).
  const double eps = 1e-6;
  std::vector<Scene> clips;
  for (const Scene& scene : scenes) {
    if (scene.length_s() + eps < min_len_s) continue;
    if (max_len_s <= 0 || scene.length_s() <= max_len_s + eps) {
      clips.push_back(scene);
      continue;
    }
    double begin = scene.start_s;
    while (scene.end_s - begin + eps >= max_len_s) {
      clips.push_back({begin, begin + max_len_s});
      begin += max_len_s;
    }
    if (scene.end_s - begin + eps >= min_len_s && scene.end_s - begin > eps)
      clips.push_back({begin, scene.end_s});
  }
  return clips;
}

SceneDetection detect_scenes(const fs::path& path, const SceneDetectOptions& options,
                             const CancelToken* cancel, const ProgressFn& progress) {
  DecodeOptions decode;
  decode.width = kSceneAnalysisWidth;
  decode.height = 0;
  decode.threads = 1;
  VideoDecoder decoder(path, decode);
  SceneDetector detector(options);
  ProgressMeter meter(progress, "scenes", "frames", decoder.info().frame_count);
  while (auto frame = decoder.next()) {
    if (cancel) cancel->throw_if_cancelled(path.string());
    detector.push(*frame);
    if (progress) meter.advance(1, path.filename().string());
  }
  if (progress) meter.flush();
  return detector.finish();
}

}  // namespace mugv
