#include "media/probe.h"

#include "media/encoder.h"
#include "media/media_fixtures.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

using namespace mugv;
using mugv::test::real_data_file;

TEST_CASE("probe reads size, rate and frame count of a real H.264 file", "[media][probe]") {
  auto file = real_data_file("counter.mp4");
  if (!file) return;
  MediaInfo info = probe(*file);
  CHECK(info.has_video);
  CHECK_FALSE(info.has_audio);
  CHECK(info.video_codec == "h264");
  CHECK(info.width == 1920);
  CHECK(info.height == 1080);
  CHECK(info.fps == Approx(10.0));
  CHECK(info.nominal_fps == Approx(10.0));
  CHECK(info.frame_count == 30);
  CHECK(info.duration_s == Approx(3.0).margin(0.05));
  CHECK_FALSE(info.variable_frame_rate);
  CHECK(info.rotation_deg == 0);
  CHECK(info.bit_rate > 0);
  CHECK(info.container.find("mp4") != std::string::npos);
  CHECK(info.depth == ProbeDepth::packets);
}

TEST_CASE("probe detects variable frame rate from packet timestamps", "[media][probe]") {
  auto file = real_data_file("goldeneye-vfr-drop3.mp4");
  if (!file) return;
  MediaInfo info = probe(*file);
  CHECK(info.variable_frame_rate);
  CHECK(info.frame_count == 160);
  CHECK(info.nominal_fps == Approx(23.976).margin(0.01));
  CHECK(info.fps < info.nominal_fps);  // frames are missing, so the average rate is lower
  CHECK(info.width == 1280);
  CHECK(info.height == 544);

  MediaInfo headers = probe(*file, ProbeDepth::headers);
  CHECK(headers.depth == ProbeDepth::headers);
  CHECK(headers.width == 1280);
}

TEST_CASE("probe reports constant frame rate for a CFR MPEG-4 file", "[media][probe]") {
  auto file = real_data_file("fades.mp4");
  if (!file) return;
  MediaInfo info = probe(*file);
  CHECK(info.video_codec == "mpeg4");
  CHECK(info.frame_count == 250);
  CHECK(info.fps == Approx(25.0));
  CHECK_FALSE(info.variable_frame_rate);
}

TEST_CASE("probe on our own encodes: rate and frame count", "[media][probe]") {
  test::TempDir dir;
  EncodeOptions options;
  options.fps = 12;
  options.speed_preset = "ultrafast";
  encode_video(dir / "a.mp4", test::pattern_clip(64, 48, 18), options);
  MediaInfo info = probe(dir / "a.mp4");
  CHECK(info.frame_count == 18);
  CHECK(info.fps == Approx(12.0));
  CHECK(info.duration_s == Approx(1.5).margin(0.1));
  CHECK_FALSE(info.variable_frame_rate);
}

TEST_CASE("probe enums round-trip through strings", "[media][unit]") {
  for (ProbeDepth d : {ProbeDepth::unknown, ProbeDepth::headers, ProbeDepth::packets})
    CHECK(probe_depth_from_string(to_string(d)) == d);
  CHECK_FALSE(probe_depth_from_string("deep"));
}
