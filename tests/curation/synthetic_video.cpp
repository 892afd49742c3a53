#include "synthetic_video.h"

#include "media/encoder.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <map>
#include <tuple>

namespace mugv::test {

namespace {

constexpr double kPi = 3.14159265358979323846;

uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

double unit(uint32_t seed, uint32_t n) {
  return (hash32(seed * 7919u + n) & 0xffffffu) / double(0x1000000);
}

// A periodic RGB texture (period = its size) so that any offset can be sampled with wrap-around.
const cv::Mat& texture_for(const Look& look, int width, int height) {
  using Key = std::tuple<uint32_t, double, double, double, double, int, int>;
  static std::map<Key, cv::Mat> cache;
  const Key key{look.seed, look.hue_deg, look.gray, look.contrast, look.grain, width, height};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  const int tw = 2 * width, th = 2 * height;
  cv::Mat value(th, tw, CV_32F, cv::Scalar(0));
  for (int i = 0; i < 5; ++i) {
    const int fx = 1 + static_cast<int>(unit(look.seed, 10 + i) * 6);
    const int fy = 1 + static_cast<int>(unit(look.seed, 20 + i) * 4);
    const double phase = unit(look.seed, 30 + i) * 2 * kPi;
    for (int y = 0; y < th; ++y) {
      float* row = value.ptr<float>(y);
      for (int x = 0; x < tw; ++x) {
        row[x] +=
            static_cast<float>(0.2 * std::sin(2 * kPi * (fx * double(x) / tw + fy * double(y) / th) + phase));
      }
    }
  }
  cv::Mat hsv(th, tw, CV_32FC3);
  const double saturation = 0.8 * (1 - look.gray);
  for (int y = 0; y < th; ++y) {
    const float* v = value.ptr<float>(y);
    cv::Vec3f* out = hsv.ptr<cv::Vec3f>(y);
    for (int x = 0; x < tw; ++x) {
      double hue = std::fmod(look.hue_deg + 40.0 * v[x] + 360.0, 360.0);
      double val = std::clamp(0.55 + look.contrast * 0.5 * v[x], 0.0, 1.0);
      out[x] = cv::Vec3f(static_cast<float>(hue), static_cast<float>(saturation), static_cast<float>(val));
    }
  }
  cv::Mat rgb_f, rgb;
  cv::cvtColor(hsv, rgb_f, cv::COLOR_HSV2RGB);
  rgb_f.convertTo(rgb, CV_8UC3, 255.0);
  // Hard-edged shapes, drawn at every periodic copy so the texture stays seamless.
  for (int i = 0; i < 14; ++i) {
    const int cx = static_cast<int>(unit(look.seed, 100 + i) * tw);
    const int cy = static_cast<int>(unit(look.seed, 200 + i) * th);
    const int r = 6 + static_cast<int>(unit(look.seed, 300 + i) * height / 6);
    const double hue = std::fmod(look.hue_deg + (unit(look.seed, 400 + i) - 0.5) * 80 + 360, 360);
    const double val = 0.15 + 0.8 * unit(look.seed, 500 + i);
    cv::Mat px(1, 1, CV_32FC3, cv::Scalar(hue, saturation, 0.5 + look.contrast * (val - 0.5)));
    cv::Mat px_rgb;
    cv::cvtColor(px, px_rgb, cv::COLOR_HSV2RGB);
    const cv::Vec3f c = px_rgb.at<cv::Vec3f>(0, 0) * 255.0f;
    const cv::Scalar colour(c[0], c[1], c[2]);
    for (int dy : {-th, 0, th}) {
      for (int dx : {-tw, 0, tw}) {
        if (i % 2 == 0) {
          cv::circle(rgb, {cx + dx, cy + dy}, r, colour, cv::FILLED, cv::LINE_8);
        } else {
          cv::rectangle(rgb, cv::Rect(cx + dx, cy + dy, r * 2, r), colour, cv::FILLED, cv::LINE_8);
        }
      }
    }
  }
  if (look.grain > 0) {
    cv::Mat grain(th, tw, CV_16SC1);
    cv::RNG rng(look.seed);
    rng.fill(grain, cv::RNG::NORMAL, 0, look.grain);
    cv::Mat grain3, rgb16;
    cv::merge(std::vector<cv::Mat>{grain, grain, grain}, grain3);
    rgb.convertTo(rgb16, CV_16SC3);
    rgb16 += grain3;
    rgb16.convertTo(rgb, CV_8UC3);
  }
  return cache.emplace(key, rgb).first->second;
}

RgbFrame to_frame(const cv::Mat& rgb) {
  RgbFrame frame(rgb.cols, rgb.rows);
  cv::Mat dst(rgb.rows, rgb.cols, CV_8UC3, frame.rgb.data(), frame.stride_bytes());
  rgb.copyTo(dst);
  return frame;
}

cv::Mat render(const Look& look, int width, int height, double ox, double oy, int k) {
  const cv::Mat& texture = texture_for(look, width, height);
  if (look.shake_px > 0) {
    ox += (unit(look.seed + 77, static_cast<uint32_t>(k)) * 2 - 1) * look.shake_px;
    oy += (unit(look.seed + 78, static_cast<uint32_t>(k)) * 2 - 1) * look.shake_px;
  }
  const double tx = std::fmod(std::fmod(ox, texture.cols) + texture.cols, texture.cols);
  const double ty = std::fmod(std::fmod(oy, texture.rows) + texture.rows, texture.rows);
  cv::Mat affine = (cv::Mat_<double>(2, 3) << 1, 0, tx, 0, 1, ty);
  cv::Mat out;
  cv::warpAffine(texture, out, affine, cv::Size(width, height), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                 cv::BORDER_WRAP);
  if (look.blur_sigma_px > 0) cv::GaussianBlur(out, out, cv::Size(), look.blur_sigma_px);
  return out;
}

cv::Mat render_at(const Look& look, int width, int height, int k) {
  return render(look, width, height, look.vx_px * k, look.vy_px * k, k);
}

cv::Mat blend(const cv::Mat& a, const cv::Mat& b, double alpha) {
  cv::Mat out;
  cv::addWeighted(a, 1 - alpha, b, alpha, 0, out);
  return out;
}

}  // namespace

RgbFrame look_frame(const Look& look, int width, int height, int k) {
  return to_frame(render_at(look, width, height, k));
}

GeneratedVideo write_shots(const fs::path& path, const std::vector<Shot>& shots, int width, int height,
                           double fps) {
  GeneratedVideo video;
  video.path = path;
  video.fps = fps;
  std::vector<int64_t> begin;
  int64_t total = 0;
  for (const Shot& shot : shots) {
    begin.push_back(total);
    total += shot.frames;
  }
  video.frames = total;

  EncodeOptions options;
  options.fps = fps;
  options.crf = 16;
  options.speed_preset = "ultrafast";
  VideoEncoder encoder;
  encoder.open(path, width, height, options);
  size_t s = 0;
  for (int64_t g = 0; g < total; ++g) {
    while (s + 1 < shots.size() && g >= begin[s + 1]) ++s;
    cv::Mat picture = render_at(shots[s].look, width, height, static_cast<int>(g - begin[s]));
    // A transition into the next shot (its first half lies in this shot) or from the previous one.
    for (size_t b = 1; b < shots.size(); ++b) {
      const Shot& into = shots[b];
      const int half = into.transition_frames / 2;
      if (into.into == Transition::hard || half <= 0) continue;
      const int64_t j = g - begin[b];
      if (into.into == Transition::fade_out_cut) {
        // Only the previous shot's last transition_frames frames darken; the cut itself is abrupt.
        const int64_t n = into.transition_frames;
        if (j >= 0 || j < -n) continue;
        const double brightness = 1.0 - (1.0 - into.fade_floor) * static_cast<double>(j + n + 1) / n;
        picture = blend(cv::Mat(height, width, CV_8UC3, cv::Scalar::all(0)), picture, brightness);
        continue;
      }
      if (j < -half || j > half) continue;
      const Look& a = shots[b - 1].look;
      const Look& next = into.look;
      const cv::Mat pa = render_at(a, width, height, static_cast<int>(g - begin[b - 1]));
      const cv::Mat pb = render_at(next, width, height, static_cast<int>(j));
      if (into.into == Transition::dissolve) {
        if (j == half) continue;
        const double alpha = (static_cast<double>(j + half) + 0.5) / (2.0 * half);
        picture = blend(pa, pb, alpha);
      } else {
        const cv::Mat flat(height, width, CV_8UC3,
                           into.into == Transition::fade_white ? cv::Scalar::all(255) : cv::Scalar::all(0));
        picture = j < 0 ? blend(flat, pa, static_cast<double>(-j) / half)
                        : blend(flat, pb, static_cast<double>(j) / half);
      }
    }
    encoder.write(to_frame(picture));
  }
  encoder.finish();

  for (size_t b = 1; b < shots.size(); ++b) {
    CutKind kind = CutKind::hard;
    if (shots[b].into == Transition::dissolve) kind = CutKind::dissolve;
    if (shots[b].into == Transition::fade_black || shots[b].into == Transition::fade_white)
      kind = CutKind::fade;
    video.cuts.push_back({begin[b], static_cast<double>(begin[b]) / fps, kind});
  }
  return video;
}

std::vector<RgbFrame> clip_frames(const Look& look, Defect defect, int frames, int width, int height,
                                  double fps) {
  std::vector<RgbFrame> out;
  out.reserve(static_cast<size_t>(frames));
  const int bar_rows = static_cast<int>(height * 0.14);
  const int bar_cols = static_cast<int>(width * 0.14);
  for (int k = 0; k < frames; ++k) {
    cv::Mat picture;
    if (defect == Defect::duplicated) {
      picture = render_at(look, width, height, k / 2);
    } else if (defect == Defect::speed_change) {
      const int slow = frames / 2;
      const double slow_step = 0.4, fast_step = 2.0;
      const double t = k < slow ? k * slow_step : slow * slow_step + (k - slow) * fast_step;
      picture = render(look, width, height, look.vx_px * t, look.vy_px * t, k);
    } else {
      picture = render_at(look, width, height, k);
    }
    if (defect == Defect::letterbox) {
      picture(cv::Rect(0, 0, width, bar_rows)).setTo(cv::Scalar::all(0));
      picture(cv::Rect(0, height - bar_rows, width, bar_rows)).setTo(cv::Scalar::all(0));
    } else if (defect == Defect::pillarbox) {
      picture(cv::Rect(0, 0, bar_cols, height)).setTo(cv::Scalar::all(0));
      picture(cv::Rect(width - bar_cols, 0, bar_cols, height)).setTo(cv::Scalar::all(0));
    } else if (defect == Defect::text_overlay) {
      const double scale = height / 240.0;
      const cv::Point at(width / 16, height - height / 8);
      cv::putText(picture, "BREAKING NEWS 24/7", at, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar::all(0),
                  std::max(3, static_cast<int>(4 * scale)), cv::LINE_AA);
      cv::putText(picture, "BREAKING NEWS 24/7", at, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar::all(255),
                  std::max(1, static_cast<int>(2 * scale)), cv::LINE_AA);
    }
    RgbFrame frame = to_frame(picture);
    frame.pts_s = k / fps;
    frame.index = k;
    out.push_back(std::move(frame));
  }
  return out;
}

GeneratedVideo write_clip(const fs::path& path, const Look& look, Defect defect, int frames, int width,
                          int height, double fps) {
  EncodeOptions options;
  options.fps = fps;
  options.crf = 16;
  options.speed_preset = "ultrafast";
  encode_video(path, clip_frames(look, defect, frames, width, height, fps), options);
  GeneratedVideo video;
  video.path = path;
  video.fps = fps;
  video.frames = frames;
  return video;
}

}  // namespace mugv::test
