#include "curation/scores.h"

#include "core/error.h"
#include "core/strings.h"
#include "curation/aesthetic_model.h"
#include "curation/cv_util.h"
#include "media/decoder.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/video/tracking.hpp>

#include <algorithm>
#include <bitset>
#include <cmath>
#include <cstring>
#include <numeric>

namespace mugv {

using curation_detail::fit_width;
using curation_detail::luma_of;
using curation_detail::view_rgb;

const std::vector<ArtifactFlags>& all_artifact_flags() {
  static const std::vector<ArtifactFlags> flags{ArtifactFlags::letterbox,    ArtifactFlags::pillarbox,
                                                ArtifactFlags::text_overlay, ArtifactFlags::frozen_frames,
                                                ArtifactFlags::speed_change, ArtifactFlags::camera_shake};
  return flags;
}

namespace {

const char* flag_name(ArtifactFlags flag) {
  switch (flag) {
    case ArtifactFlags::letterbox:
      return "letterbox";
    case ArtifactFlags::pillarbox:
      return "pillarbox";
    case ArtifactFlags::text_overlay:
      return "text_overlay";
    case ArtifactFlags::frozen_frames:
      return "frozen_frames";
    case ArtifactFlags::speed_change:
      return "speed_change";
    case ArtifactFlags::camera_shake:
      return "camera_shake";
    default:
      return "none";
  }
}

double median_of(std::vector<double> values) {
  if (values.empty()) return 0;
  const auto mid = values.begin() + static_cast<long>(values.size() / 2);
  std::nth_element(values.begin(), mid, values.end());
  return *mid;
}

}  // namespace

std::string to_string(ArtifactFlags flags) {
  std::string out;
  for (ArtifactFlags flag : all_artifact_flags()) {
    if (!has_any(flags, flag)) continue;
    if (!out.empty()) out += '|';
    out += flag_name(flag);
  }
  return out.empty() ? "none" : out;
}

std::optional<ArtifactFlags> artifact_flags_from_string(std::string_view text) {
  std::string normalised(text);
  std::replace(normalised.begin(), normalised.end(), ',', '|');
  ArtifactFlags result = ArtifactFlags::none;
  for (const std::string& part : split(normalised, '|')) {
    const std::string name = trim(part);
    if (name.empty() || name == "none") continue;
    bool known = false;
    for (ArtifactFlags flag : all_artifact_flags()) {
      if (name == flag_name(flag)) {
        result |= flag;
        known = true;
      }
    }
    if (!known) return std::nullopt;
  }
  return result;
}

namespace {

cv::Mat analysis_luma(const RgbFrame& frame) {
  return luma_of(fit_width(view_rgb(frame), kScoreAnalysisWidth));
}

double laplacian_variance_of(const cv::Mat& gray) {
  cv::Mat lap;
  cv::Laplacian(gray, lap, CV_64F, 1);
  cv::Scalar mean, stddev;
  cv::meanStdDev(lap, mean, stddev);
  return stddev[0] * stddev[0];
}

uint64_t phash_of(const cv::Mat& gray) {
  cv::Mat small, small_f, dct;
  cv::resize(gray, small, cv::Size(32, 32), 0, 0, cv::INTER_AREA);
  small.convertTo(small_f, CV_32F);
  cv::dct(small_f, dct);
  std::vector<float> low;
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) low.push_back(dct.at<float>(y, x));
  }
  std::vector<float> sorted = low;
  std::nth_element(sorted.begin(), sorted.begin() + 32, sorted.end());
  const float median = sorted[32];
  uint64_t hash = 0;
  for (size_t i = 0; i < low.size(); ++i) {
    if (low[i] > median) hash |= uint64_t{1} << i;
  }
  return hash;
}

AestheticParts aesthetic_parts_of(const cv::Mat& rgb, const cv::Mat& gray) {
  AestheticParts parts;
  cv::Scalar mean, stddev;
  cv::meanStdDev(gray, mean, stddev);
  const double mu = mean[0] / 255.0;
  const double clipped =
      (cv::countNonZero(gray < 8) + cv::countNonZero(gray > 247)) / static_cast<double>(gray.total());
  parts.exposure =
      std::clamp(1.0 - std::abs(mu - 0.45) / 0.45, 0.0, 1.0) * (1.0 - std::min(1.0, 2.0 * clipped));
  parts.contrast = std::clamp(stddev[0] / 64.0, 0.0, 1.0);

  // Hasler & Süsstrunk: rg = R - G, yb = (R + G) / 2 - B; M = sigma_rgyb + 0.3 mu_rgyb.
  cv::Mat rgb_f;
  rgb.convertTo(rgb_f, CV_32FC3);
  std::vector<cv::Mat> ch;
  cv::split(rgb_f, ch);
  cv::Mat rg = ch[0] - ch[1];
  cv::Mat yb = 0.5 * (ch[0] + ch[1]) - ch[2];
  cv::Scalar rg_mean, rg_std, yb_mean, yb_std;
  cv::meanStdDev(rg, rg_mean, rg_std);
  cv::meanStdDev(yb, yb_mean, yb_std);
  const double m = std::hypot(rg_std[0], yb_std[0]) + 0.3 * std::hypot(rg_mean[0], yb_mean[0]);
  parts.colourfulness = std::clamp(m / 70.0, 0.0, 1.0);

  // Composition: where the picture's structure (gradient energy) is centred, against the rule-of-thirds
  // points and the centre.
  cv::Mat gx, gy, magnitude;
  cv::Sobel(gray, gx, CV_32F, 1, 0);
  cv::Sobel(gray, gy, CV_32F, 0, 1);
  cv::magnitude(gx, gy, magnitude);
  cv::GaussianBlur(magnitude, magnitude, cv::Size(), 4);
  const cv::Moments moments = cv::moments(magnitude);
  if (moments.m00 > 1e-3 * gray.total()) {
    const double cx = moments.m10 / moments.m00 / gray.cols;
    const double cy = moments.m01 / moments.m00 / gray.rows;
    double best = 1e9;
    for (double px : {1.0 / 3, 0.5, 2.0 / 3}) {
      for (double py : {1.0 / 3, 0.5, 2.0 / 3}) {
        if ((px == 0.5) != (py == 0.5)) continue;
        best = std::min(best, std::hypot(cx - px, cy - py));
      }
    }
    parts.composition = std::exp(-(best * best) / (2 * 0.12 * 0.12));
  }
  return parts;
}

double aesthetic_score(const AestheticParts& p) {
  // Bad exposure spoils everything else, so it scales the rest instead of adding to it.
  return 1.0 + 9.0 * p.exposure * (0.35 * p.contrast + 0.35 * p.colourfulness + 0.30 * p.composition);
}

// Number of near-constant dark lines from each end along `rows ? rows : columns`.
std::pair<int, int> dark_bars(const cv::Mat& gray, bool rows) {
  const int count = rows ? gray.rows : gray.cols;
  auto dark = [&](int i) {
    cv::Mat line = rows ? gray.row(i) : gray.col(i);
    cv::Scalar mean, stddev;
    cv::meanStdDev(line, mean, stddev);
    return mean[0] < 24 && stddev[0] < 6;
  };
  int first = 0, last = 0;
  while (first < count && dark(first)) ++first;
  while (last < count - first && dark(count - 1 - last)) ++last;
  return {first, last};
}

// A packed RGB copy of an 8-bit 3-channel picture.
RgbFrame frame_of(const cv::Mat& rgb) {
  RgbFrame f(rgb.cols, rgb.rows);
  for (int y = 0; y < rgb.rows; ++y)
    std::memcpy(f.rgb.data() + static_cast<size_t>(y) * rgb.cols * 3, rgb.ptr<uint8_t>(y),
                static_cast<size_t>(rgb.cols) * 3);
  return f;
}

struct Keyframe {
  double pts_s = 0;
  double sharpness = 0;
  AestheticParts aesthetic;
  double model_aesthetic = 0;  // the user's model's score, when one is set
  double letterbox = -1;       // thinner bar share; -1: frame too dark to tell
  double pillarbox = -1;
  uint64_t phash = 0;
  std::vector<uint64_t> edges;  // kOverlayAnalysisWidth picture, one bit per pixel
  cv::Mat coarse_luma;          // half the overlay width, CV_8U: for "does the picture move here"
};

struct MotionSample {
  double pts_s = 0;       // time of the second frame of the pair
  double prev_pts_s = 0;  // time of the first
  double magnitude = 0;
  double gx = 0, gy = 0;  // median flow vector
};

std::vector<uint64_t> pack_bits(const cv::Mat& mask) {
  std::vector<uint64_t> bits((mask.total() + 63) / 64, 0);
  size_t i = 0;
  for (int y = 0; y < mask.rows; ++y) {
    const uint8_t* row = mask.ptr<uint8_t>(y);
    for (int x = 0; x < mask.cols; ++x, ++i) {
      if (row[x]) bits[i / 64] |= uint64_t{1} << (i % 64);
    }
  }
  return bits;
}

}  // namespace

struct ClipScorer::Impl {
  ScoreOptions options;
  std::vector<double> frame_pts;
  std::vector<float> frame_diff;  // mean |luma - previous luma| at 320 wide; 0 for the first frame
  std::vector<Keyframe> keyframes;
  std::vector<MotionSample> motion;
  cv::Mat prev_gray;
  double prev_pts = 0;
  double last_motion_pts = -1e300;
  double last_keyframe_pts = -1e300;
  cv::Size overlay_size;
  cv::Ptr<cv::DISOpticalFlow> flow = cv::DISOpticalFlow::create(cv::DISOpticalFlow::PRESET_FAST);

  void push(const RgbFrame& frame) {
    cv::Mat rgb = fit_width(view_rgb(frame), kScoreAnalysisWidth);
    cv::Mat gray = luma_of(rgb);
    const bool same_size = !prev_gray.empty() && prev_gray.size() == gray.size();
    float diff = 0;
    if (same_size) {
      cv::Mat d;
      cv::absdiff(gray, prev_gray, d);
      diff = static_cast<float>(cv::mean(d)[0]);
    }
    frame_pts.push_back(frame.pts_s);
    frame_diff.push_back(diff);

    if (same_size && frame.pts_s - last_motion_pts >= options.motion_interval_s - 1e-9) {
      measure_motion(prev_gray, gray, frame.pts_s);
      last_motion_pts = frame.pts_s;
    }
    if (frame.pts_s - last_keyframe_pts >= options.sample_interval_s - 1e-9) {
      keyframes.push_back(sample(rgb, gray, frame.pts_s));
      last_keyframe_pts = frame.pts_s;
    }
    prev_gray = gray;
    prev_pts = frame.pts_s;
  }

  void measure_motion(const cv::Mat& a_full, const cv::Mat& b_full, double pts) {
    const cv::Mat a = fit_width(a_full, kMotionAnalysisWidth);
    const cv::Mat b = fit_width(b_full, kMotionAnalysisWidth);
    cv::Mat uv;
    flow->calc(a, b, uv);
    // Reported at a 256-px-wide frame even when the source is narrower.
    const double scale = static_cast<double>(kMotionAnalysisWidth) / a.cols;
    std::vector<cv::Mat> xy;
    cv::split(uv, xy);
    cv::Mat magnitude;
    cv::magnitude(xy[0], xy[1], magnitude);
    MotionSample s;
    s.pts_s = pts;
    s.prev_pts_s = prev_pts;
    s.magnitude = cv::mean(magnitude)[0] * scale;
    auto median = [](const cv::Mat& m) {
      std::vector<double> v(m.begin<float>(), m.end<float>());
      return median_of(std::move(v));
    };
    s.gx = median(xy[0]) * scale;
    s.gy = median(xy[1]) * scale;
    motion.push_back(s);
  }

  Keyframe sample(const cv::Mat& rgb, const cv::Mat& gray, double pts) {
    Keyframe k;
    k.pts_s = pts;
    k.sharpness = laplacian_variance_of(gray);
    k.aesthetic = aesthetic_parts_of(rgb, gray);
    if (options.aesthetic_model) k.model_aesthetic = options.aesthetic_model->score(frame_of(rgb));
    k.phash = phash_of(gray);
    const auto [top, bottom] = dark_bars(gray, true);
    const auto [left, right] = dark_bars(gray, false);
    // A mostly dark picture says nothing about bars.
    if (top + bottom < gray.rows / 2) k.letterbox = std::min(top, bottom) / static_cast<double>(gray.rows);
    if (left + right < gray.cols / 2) k.pillarbox = std::min(left, right) / static_cast<double>(gray.cols);

    const cv::Mat small = fit_width(gray, kOverlayAnalysisWidth);
    cv::Mat edges;
    cv::Canny(small, edges, 80, 160);
    overlay_size = small.size();
    k.edges = pack_bits(edges);
    cv::resize(small, k.coarse_luma, cv::Size((small.cols + 1) / 2, (small.rows + 1) / 2), 0, 0,
               cv::INTER_AREA);
    return k;
  }

  ClipAnalysis analyze(double start_s, double end_s) const {
    ClipAnalysis a;
    a.start_s = start_s;
    a.end_s = end_s;
    auto in_range = [&](double t) { return t >= start_s - 1e-9 && t < end_s - 1e-9; };

    int64_t pairs = 0, frozen = 0, moving = 0;
    for (size_t i = 0; i < frame_pts.size(); ++i) {
      if (!in_range(frame_pts[i])) continue;
      ++a.frames;
      if (i == 0 || !in_range(frame_pts[i - 1])) continue;
      ++pairs;
      if (frame_diff[i] < 0.5f) ++frozen;
      if (frame_diff[i] >= 2.0f) ++moving;
    }
    if (a.frames == 0) {
      throw Error(ErrorCode::invalid_argument, cat("clip ", start_s, "-", end_s, " s"),
                  "no analysed frame lies in this range");
    }

    std::vector<const Keyframe*> keys;
    for (const Keyframe& k : keyframes) {
      if (in_range(k.pts_s)) keys.push_back(&k);
    }
    std::vector<const MotionSample*> flows;
    for (const MotionSample& m : motion) {
      if (in_range(m.pts_s) && in_range(m.prev_pts_s)) flows.push_back(&m);
    }

    // Start, middle and end picks.
    const double middle_s = 0.5 * (start_s + std::min(end_s, frame_pts.back() + 1e-3));
    auto three = [&](const auto& items) {
      using Ptr = std::decay_t<decltype(items.front())>;
      std::array<Ptr, 3> picked{items.front(), items.front(), items.back()};
      double best = 1e300;
      for (Ptr p : items) {
        if (std::abs(p->pts_s - middle_s) < best) {
          best = std::abs(p->pts_s - middle_s);
          picked[1] = p;
        }
      }
      return picked;
    };

    if (!keys.empty()) {
      const auto picked = three(keys);
      AestheticParts parts;
      double letterbox = 1, pillarbox = 1;
      bool judged_letterbox = false, judged_pillarbox = false;
      for (size_t i = 0; i < 3; ++i) {
        const Keyframe& k = *picked[i];
        a.sharpness += k.sharpness / 3;
        parts.exposure += k.aesthetic.exposure / 3;
        parts.contrast += k.aesthetic.contrast / 3;
        parts.colourfulness += k.aesthetic.colourfulness / 3;
        parts.composition += k.aesthetic.composition / 3;
        a.phash[i] = k.phash;
        if (k.letterbox >= 0) {
          letterbox = std::min(letterbox, k.letterbox);
          judged_letterbox = true;
        }
        if (k.pillarbox >= 0) {
          pillarbox = std::min(pillarbox, k.pillarbox);
          judged_pillarbox = true;
        }
      }
      a.aesthetic_parts = parts;
      a.aesthetic = aesthetic_score(parts);
      if (options.aesthetic_model) {
        a.aesthetic =
            (picked[0]->model_aesthetic + picked[1]->model_aesthetic + picked[2]->model_aesthetic) / 3;
        a.aesthetic_source = options.aesthetic_model->source();
      }
      a.letterbox_fraction = judged_letterbox ? letterbox : 0;
      a.pillarbox_fraction = judged_pillarbox ? pillarbox : 0;
      a.overlay_fraction = overlay_fraction(keys);
    }

    if (!flows.empty()) {
      const auto picked = three(flows);
      for (size_t i = 0; i < 3; ++i) {
        a.motion_pairs[i] = picked[i]->magnitude;
        a.motion += picked[i]->magnitude / 3;
      }
      a.shake_px = jitter(flows);
      a.speed_change_ratio = speed_change(flows);
    }
    a.frozen_ratio = pairs > 0 ? static_cast<double>(frozen) / pairs : 0;

    if (a.letterbox_fraction >= options.border_min_fraction) a.flags |= ArtifactFlags::letterbox;
    if (a.pillarbox_fraction >= options.border_min_fraction) a.flags |= ArtifactFlags::pillarbox;
    if (a.overlay_fraction >= options.overlay_min_fraction) a.flags |= ArtifactFlags::text_overlay;
    // A still picture is "static" (motion < 1), not frozen: frozen frames interrupt moving content.
    if (a.frozen_ratio >= options.frozen_min_ratio && pairs > 0 && moving >= pairs / 5) {
      a.flags |= ArtifactFlags::frozen_frames;
    }
    if (a.speed_change_ratio >= options.speed_change_min_ratio) a.flags |= ArtifactFlags::speed_change;
    if (a.shake_px >= options.shake_min_px) a.flags |= ArtifactFlags::camera_shake;
    return a;
  }

  // Share of overlay-grid pixels that are an edge in >= 80 % of the samples while the picture around them
  // changes (temporal luma std-dev of their coarse cell >= 8).
  double overlay_fraction(const std::vector<const Keyframe*>& keys) const {
    if (keys.size() < 3 || overlay_size.area() == 0) return 0;
    const int w = overlay_size.width, h = overlay_size.height;
    std::vector<int> counts(static_cast<size_t>(w) * h, 0);
    for (const Keyframe* k : keys) {
      for (size_t i = 0; i < counts.size(); ++i) counts[i] += (k->edges[i / 64] >> (i % 64)) & 1u;
    }
    const cv::Size coarse = keys.front()->coarse_luma.size();
    cv::Mat sum(coarse, CV_64F, cv::Scalar(0)), sum_sq(coarse, CV_64F, cv::Scalar(0));
    for (const Keyframe* k : keys) {
      cv::Mat f;
      k->coarse_luma.convertTo(f, CV_64F);
      sum += f;
      sum_sq += f.mul(f);
    }
    const double n = static_cast<double>(keys.size());
    cv::Mat variance = sum_sq / n - (sum / n).mul(sum / n);
    const int needed = static_cast<int>(std::ceil(0.8 * n));
    int64_t persistent = 0;
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        if (counts[static_cast<size_t>(y) * w + x] < needed) continue;
        const int cy = std::min(coarse.height - 1, y / 2), cx = std::min(coarse.width - 1, x / 2);
        if (variance.at<double>(cy, cx) >= 64.0) ++persistent;
      }
    }
    return static_cast<double>(persistent) / (static_cast<double>(w) * h);
  }

  static double jitter(const std::vector<const MotionSample*>& flows) {
    if (flows.size() < 3) return 0;
    double total = 0;
    for (size_t i = 1; i + 1 < flows.size(); ++i) {
      const double ex = flows[i]->gx - 0.5 * (flows[i - 1]->gx + flows[i + 1]->gx);
      const double ey = flows[i]->gy - 0.5 * (flows[i - 1]->gy + flows[i + 1]->gy);
      total += std::hypot(ex, ey);
    }
    return total / static_cast<double>(flows.size() - 2);
  }

  // Largest ratio between the median flow magnitude of the 3 samples before and after any point, where the
  // slower side still moves (a shot starting to pan from a standstill is not a speed change).
  static double speed_change(const std::vector<const MotionSample*>& flows) {
    const size_t k = 3;
    double best = 1;
    for (size_t split = k; split + k <= flows.size(); ++split) {
      std::vector<double> before, after;
      for (size_t i = split - k; i < split; ++i) before.push_back(flows[i]->magnitude);
      for (size_t i = split; i < split + k; ++i) after.push_back(flows[i]->magnitude);
      const double a = median_of(before), b = median_of(after);
      const double slow = std::min(a, b), fast = std::max(a, b);
      if (slow >= 0.5) best = std::max(best, fast / slow);
    }
    return best;
  }
};

ClipScorer::ClipScorer(ScoreOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
}
ClipScorer::~ClipScorer() = default;
ClipScorer::ClipScorer(ClipScorer&&) noexcept = default;
ClipScorer& ClipScorer::operator=(ClipScorer&&) noexcept = default;

void ClipScorer::push(const RgbFrame& frame) {
  impl_->push(frame);
}
ClipAnalysis ClipScorer::analyze(double start_s, double end_s) const {
  return impl_->analyze(start_s, end_s);
}

ClipAnalysis analyze_frames(const std::vector<RgbFrame>& frames, const ScoreOptions& options) {
  if (frames.empty()) throw Error(ErrorCode::invalid_argument, "clip", "no frames to analyse");
  ClipScorer scorer(options);
  for (const RgbFrame& f : frames) scorer.push(f);
  return scorer.analyze(frames.front().pts_s, frames.back().pts_s + 1e-3);
}

ClipAnalysis analyze_clip(const fs::path& path, double start_s, double end_s, const ScoreOptions& options,
                          const CancelToken* cancel) {
  DecodeOptions decode;
  decode.width = kScoreAnalysisWidth;
  decode.threads = 1;
  VideoDecoder decoder(path, decode);
  if (start_s > 0 && !decoder.seek(start_s)) {
    throw Error(ErrorCode::invalid_argument, path.string(), cat("no frame at or after ", start_s, " s"));
  }
  ClipScorer scorer(options);
  double last_pts = start_s;
  while (auto frame = decoder.next()) {
    if (cancel) cancel->throw_if_cancelled(path.string());
    if (end_s > 0 && frame->pts_s >= end_s) break;
    last_pts = frame->pts_s;
    scorer.push(*frame);
  }
  return scorer.analyze(start_s, end_s > 0 ? end_s : last_pts + 1e-3);
}

double laplacian_variance(const RgbFrame& frame) {
  return laplacian_variance_of(analysis_luma(frame));
}

uint64_t perceptual_hash(const RgbFrame& frame) {
  return phash_of(analysis_luma(frame));
}

int hamming_distance(uint64_t a, uint64_t b) {
  return static_cast<int>(std::bitset<64>(a ^ b).count());
}

}  // namespace mugv
