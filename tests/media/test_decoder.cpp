#include "media/decoder.h"

#include "core/error.h"
#include "media/encoder.h"
#include "media/media_fixtures.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cmath>

using namespace mugv;
using mugv::test::real_data_file;

namespace {

// Mean PSNR of decoded frames against the frames that were encoded.
double round_trip_psnr(const fs::path& path, const std::vector<RgbFrame>& original) {
  std::vector<RgbFrame> decoded = decode_range(path, 0, 0);
  REQUIRE(decoded.size() == original.size());
  double sum = 0;
  for (size_t i = 0; i < decoded.size(); ++i) sum += std::min(psnr(decoded[i], original[i]), 99.0);
  return sum / static_cast<double>(decoded.size());
}

}  // namespace

TEST_CASE("mp4 round trip keeps size, count, times and quality at CRF 17", "[media][decoder][encoder]") {
  test::TempDir dir;
  for (auto [w, h] : {std::pair{64, 64}, std::pair{256, 144}}) {
    DYNAMIC_SECTION(w << "x" << h) {
      auto clip = test::pattern_clip(w, h, 24);
      EncodeOptions options;
      options.fps = 12;
      options.crf = 17;
      fs::path path = dir / ("rt" + std::to_string(w) + ".mp4");
      encode_video(path, clip, options);
      VideoDecoder decoder(path);
      CHECK(decoder.info().width == w);
      CHECK(decoder.info().height == h);
      std::vector<RgbFrame> frames;
      while (auto f = decoder.next()) frames.push_back(std::move(*f));
      REQUIRE(frames.size() == clip.size());
      for (size_t i = 0; i < frames.size(); ++i) {
        CHECK(frames[i].index == static_cast<int64_t>(i));
        CHECK(frames[i].pts_s == Approx(i / 12.0).margin(1e-3));
      }
      double db = round_trip_psnr(path, clip);
      INFO("mp4 PSNR " << db << " dB");
      CHECK(db >= 35.0);
      CHECK(decoder.stats().frames_lost == 0);
      CHECK(decoder.stats().packets_corrupt == 0);
    }
  }
}

TEST_CASE("webm (VP9) round trip has a sane PSNR", "[media][decoder][encoder]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(96, 64, 12);
  EncodeOptions options;
  options.fps = 8;
  options.crf = 30;
  options.speed_preset = "veryfast";
  encode_video(dir / "rt.webm", clip, options);
  MediaInfo info = probe(dir / "rt.webm");
  CHECK(info.video_codec == "vp9");
  CHECK(info.frame_count == 12);
  double db = round_trip_psnr(dir / "rt.webm", clip);
  INFO("webm PSNR " << db << " dB");
  CHECK(db >= 30.0);
}

TEST_CASE("a different picture gives a low PSNR (the metric can fail)", "[media][unit]") {
  RgbFrame a = test::pattern_frame(32, 32, 0);
  RgbFrame b = test::pattern_frame(32, 32, 8);
  CHECK(psnr(a, b) < 25.0);
  CHECK(std::isinf(psnr(a, a)));
  CHECK_THROWS_AS(psnr(a, test::pattern_frame(16, 16, 0)), Error);
}

TEST_CASE("exact seek on counter.mp4 lands on the frame with that time", "[media][decoder][seek]") {
  auto file = real_data_file("counter.mp4");
  if (!file) return;
  DecodeOptions options;
  options.width = 192;
  options.height = 108;
  std::vector<RgbFrame> sequential = decode_range(*file, 0, 0, options);
  REQUIRE(sequential.size() == 30);
  for (size_t i = 0; i < sequential.size(); ++i) CHECK(sequential[i].pts_s == Approx(i / 10.0).margin(1e-3));

  VideoDecoder decoder(*file, options);
  for (int n : {17, 3, 29, 0, 10, 11}) {
    const double t = n / 10.0;
    REQUIRE(decoder.seek(t));
    auto frame = decoder.next();
    REQUIRE(frame);
    INFO("seek to " << t);
    CHECK(frame->pts_s == Approx(t).margin(1e-3));
    CHECK(frame->index == n);
    CHECK(frame->rgb == sequential[static_cast<size_t>(n)].rgb);
    auto after = decoder.next();
    if (n < 29) {
      REQUIRE(after);
      CHECK(after->rgb == sequential[static_cast<size_t>(n + 1)].rgb);
    } else {
      CHECK_FALSE(after);
    }
  }
  // Within half a frame before a frame time still lands on that frame.
  REQUIRE(decoder.seek(0.98));
  CHECK(decoder.next()->rgb == sequential[10].rgb);
  CHECK_FALSE(decoder.seek(5.0));
  CHECK_FALSE(decoder.next());
}

TEST_CASE("VFR goldeneye keeps real presentation gaps", "[media][decoder][vfr]") {
  auto file = real_data_file("goldeneye-vfr-drop3.mp4");
  if (!file) return;
  DecodeOptions options;
  options.output = PixelOutput::none;
  std::vector<RgbFrame> frames = decode_range(*file, 0, 0, options);
  REQUIRE(frames.size() == 160);
  CHECK(frames.front().pts_s == Approx(0).margin(1e-6));
  const double frame_s = 1001.0 / 24000.0;
  int single = 0, double_gaps = 0, other = 0;
  for (size_t i = 1; i < frames.size(); ++i) {
    const double gap = frames[i].pts_s - frames[i - 1].pts_s;
    REQUIRE(gap > 0);
    if (std::abs(gap - frame_s) < 0.1 * frame_s)
      ++single;
    else if (std::abs(gap - 2 * frame_s) < 0.1 * frame_s)
      ++double_gaps;
    else
      ++other;
  }
  // The file drops every third frame of a 23.976 fps film: one-frame and two-frame steps alternate.
  CHECK(other == 0);
  CHECK(double_gaps == 79);
  CHECK(single == 80);
  CHECK(frames.back().pts_s == Approx(238238.0 / 24000.0).margin(1e-3));
  CHECK(frames.front().width == 1280);
  CHECK(frames.front().rgb.empty());
}

TEST_CASE("fades.mp4 decodes all 250 frames", "[media][decoder]") {
  auto file = real_data_file("fades.mp4");
  if (!file) return;
  DecodeOptions options;
  options.width = 96;
  options.height = 64;
  VideoDecoder decoder(*file, options);
  int64_t n = 0;
  while (auto f = decoder.next()) {
    CHECK(f->width == 96);
    CHECK(f->height == 64);
    ++n;
  }
  CHECK(n == 250);
  CHECK(decoder.stats().frames_decoded == 250);
  CHECK(decoder.stats().frames_lost == 0);
}

TEST_CASE("fps resampling 25 -> 10 gives the right count, times and source frames", "[media][decoder][fps]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(64, 48, 50);  // 2 s at 25 fps
  EncodeOptions enc;
  enc.fps = 25;
  enc.crf = 10;
  enc.speed_preset = "ultrafast";
  encode_video(dir / "25.mp4", clip, enc);
  std::vector<RgbFrame> native = decode_range(dir / "25.mp4", 0, 0);
  REQUIRE(native.size() == 50);

  DecodeOptions options;
  options.fps = 10;
  std::vector<RgbFrame> frames = decode_range(dir / "25.mp4", 0, 0, options);
  REQUIRE(frames.size() == 20);
  for (size_t k = 0; k < frames.size(); ++k) {
    CHECK(frames[k].pts_s == Approx(k / 10.0).margin(1e-6));
    CHECK(frames[k].index == static_cast<int64_t>(k));
    // Output k shows the last source frame at or before k/10 s: source frame floor(2.5 k).
    CHECK(frames[k].rgb == native[static_cast<size_t>(std::floor(2.5 * k + 1e-9))].rgb);
  }

  options.fps = 50;  // upsampling repeats frames
  CHECK(decode_range(dir / "25.mp4", 0, 0, options).size() == 100);

  options.fps = 10;
  VideoDecoder decoder(dir / "25.mp4", options);
  REQUIRE(decoder.seek(1.0));
  auto first = decoder.next();
  REQUIRE(first);
  CHECK(first->pts_s == Approx(1.0));
  CHECK(first->rgb == native[25].rgb);
  int64_t rest = 1;
  while (decoder.next()) ++rest;
  CHECK(rest == 10);
}

TEST_CASE("fps resampling on a real 25 fps file", "[media][decoder][fps]") {
  auto file = real_data_file("fades.mp4");
  if (!file) return;
  DecodeOptions options;
  options.fps = 10;
  options.output = PixelOutput::none;
  std::vector<RgbFrame> frames = decode_range(*file, 0, 0, options);
  CHECK(frames.size() == 100);
  CHECK(frames.back().pts_s == Approx(9.9));
}

TEST_CASE("resize modes give the requested size; center crop keeps the middle", "[media][decoder][resize]") {
  test::TempDir dir;
  // A 160x90 clip: red band x < 25, blue band x >= 135, green between.
  RgbFrame f(160, 90);
  for (int y = 0; y < 90; ++y)
    for (int x = 0; x < 160; ++x) {
      if (x < 25)
        f.set_pixel(x, y, 220, 20, 20);
      else if (x >= 135)
        f.set_pixel(x, y, 20, 20, 220);
      else
        f.set_pixel(x, y, 20, 200, 20);
    }
  EncodeOptions enc;
  enc.crf = 10;
  encode_video(dir / "bands.mp4", {f, f, f}, enc);

  DecodeOptions options;
  options.width = 64;
  options.height = 64;
  options.resize = ResizeMode::center_crop;
  auto crop = decode_range(dir / "bands.mp4", 0, 0, options);
  REQUIRE(crop.size() == 3);
  CHECK(crop[0].width == 64);
  CHECK(crop[0].height == 64);
  // The square crop of the 160-wide picture spans x in [35, 125): the bands are cut away.
  for (int x : {1, 32, 62}) {
    const uint8_t* p = crop[0].pixel(x, 32);
    CHECK(int(p[1]) > 150);
    CHECK(int(p[0]) < 80);
    CHECK(int(p[2]) < 80);
  }

  options.resize = ResizeMode::stretch;
  auto stretched = decode_range(dir / "bands.mp4", 0, 0, options);
  CHECK(int(stretched[0].pixel(1, 32)[0]) > 150);  // the red band survives a stretch

  options.resize = ResizeMode::fit_pad;
  auto padded = decode_range(dir / "bands.mp4", 0, 0, options);
  CHECK(padded[0].width == 64);
  CHECK(padded[0].height == 64);
  const uint8_t* top = padded[0].pixel(32, 2);
  CHECK(int(top[0]) + int(top[1]) + int(top[2]) == 0);  // letterbox is black

  options.width = 80;
  options.height = 0;  // keep aspect
  auto half = decode_range(dir / "bands.mp4", 0, 0, options);
  CHECK(half[0].width == 80);
  CHECK(half[0].height == 45);
}

TEST_CASE("decode_range selects by time and honours cancellation", "[media][decoder]") {
  test::TempDir dir;
  EncodeOptions enc;
  enc.fps = 10;
  enc.speed_preset = "ultrafast";
  encode_video(dir / "c.mp4", test::pattern_clip(32, 32, 20), enc);
  auto part = decode_range(dir / "c.mp4", 0.5, 1.2);
  REQUIRE(part.size() == 7);
  CHECK(part.front().pts_s == Approx(0.5));
  CHECK(part.back().pts_s == Approx(1.1));

  CancelToken cancel;
  cancel.request_cancel();
  try {
    (void)decode_range(dir / "c.mp4", 0, 0, {}, &cancel);
    FAIL("cancellation ignored");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::cancelled);
  }
}

TEST_CASE("decoder enums round-trip through strings", "[media][unit]") {
  for (PixelOutput o : {PixelOutput::unknown, PixelOutput::rgb24, PixelOutput::none})
    CHECK(pixel_output_from_string(to_string(o)) == o);
  for (ResizeMode m :
       {ResizeMode::unknown, ResizeMode::stretch, ResizeMode::center_crop, ResizeMode::fit_pad})
    CHECK(resize_mode_from_string(to_string(m)) == m);
  CHECK_FALSE(resize_mode_from_string("zoom"));
}
