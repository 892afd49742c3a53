#include "media/encoder.h"

#include "core/error.h"
#include "core/paths.h"
#include "media/decoder.h"
#include "media/image.h"
#include "media/media_fixtures.h"
#include "media/probe.h"
#include "media/remux.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <nlohmann/json.hpp>

using namespace mugv;

namespace {

EncodeOptions with_metadata(ContainerFormat format) {
  EncodeOptions options;
  options.format = format;
  options.speed_preset = "ultrafast";
  options.metadata = {{"title", "A red circle"},
                      {"comment", "made by the test suite"},
                      {"prompt", "a red circle moving left on a black background, \"quoted\""},
                      {"seed", "424242"},
                      {"model", "tiny"}};
  return options;
}

size_t entries_in(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST_CASE("metadata survives mp4, webm and gif", "[media][encoder][metadata]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(48, 32, 4);
  for (auto [format, name] :
       {std::pair{ContainerFormat::mp4, "m.mp4"}, std::pair{ContainerFormat::webm, "m.webm"},
        std::pair{ContainerFormat::gif, "m.gif"}}) {
    DYNAMIC_SECTION(to_string(format)) {
      EncodeOptions options = with_metadata(format);
      encode_video(dir / name, clip, options);
      MediaInfo info = probe(dir / name);
      for (const char* key : {"title", "comment", "prompt", "seed", "model"}) {
        INFO(key);
        REQUIRE(info.metadata.count(key) == 1);
        CHECK(info.metadata.at(key) == options.metadata.at(key));
      }
    }
  }
}

TEST_CASE("gif round trip keeps frame count and size", "[media][encoder][gif]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(40, 30, 6);
  EncodeOptions options;
  options.fps = 10;
  options.metadata = {{"title", "only a title"}};
  encode_video(dir / "a.gif", clip, options);
  MediaInfo info = probe(dir / "a.gif");
  CHECK(info.metadata.at("title") == "only a title");
  CHECK(info.metadata.count("comment") == 0);
  CHECK(info.video_codec == "gif");
  CHECK(info.width == 40);
  CHECK(info.height == 30);
  auto frames = decode_range(dir / "a.gif", 0, 0);
  REQUIRE(frames.size() == 6);
  CHECK(frames[5].pts_s == Approx(0.5).margin(0.011));
  // A 256-colour palette with dithering is lossy but close.
  CHECK(psnr(frames[3], clip[3]) > 25.0);
}

TEST_CASE("png sequence round trip is lossless and carries metadata.json", "[media][encoder][png]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(33, 17, 3);
  EncodeOptions options = with_metadata(ContainerFormat::png_sequence);
  options.fps = 6;
  encode_video(dir / "seq", clip, options);
  REQUIRE(fs::is_directory(dir / "seq"));
  CHECK(entries_in(dir / "seq") == 4);
  for (int i = 0; i < 3; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "frame_%05d.png", i + 1);
    RgbFrame back = read_image(dir / "seq" / name);
    CHECK(back.width == 33);
    CHECK(back.height == 17);
    CHECK(back.rgb == clip[static_cast<size_t>(i)].rgb);
  }
  auto meta = nlohmann::json::parse(read_text_file(dir / "seq" / "metadata.json"));
  CHECK(meta["frame_count"] == 3);
  CHECK(meta["fps"] == 6.0);
  CHECK(meta["metadata"]["seed"] == "424242");

  // Pattern form, and a non-empty existing directory is refused rather than mixed into.
  encode_video(dir / "pat" / "img_%03d.png", clip, EncodeOptions{});
  CHECK(fs::exists(dir / "pat" / "img_003.png"));
  CHECK_THROWS_AS(encode_video(dir / "seq", clip, options), Error);
  CHECK(entries_in(dir / "seq") == 4);
}

TEST_CASE("odd sizes are padded to even by repeating the edge", "[media][encoder]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(63, 45, 3);
  encode_video(dir / "odd.mp4", clip, EncodeOptions{});
  MediaInfo info = probe(dir / "odd.mp4");
  CHECK(info.width == 64);
  CHECK(info.height == 46);
  auto frames = decode_range(dir / "odd.mp4", 0, 0);
  REQUIRE(frames.size() == 3);
  // Compare the original area only.
  RgbFrame original_area(63, 45);
  for (int y = 0; y < 45; ++y) std::memcpy(original_area.pixel(0, y), frames[1].pixel(0, y), 63 * 3);
  CHECK(psnr(original_area, clip[1]) > 35.0);
}

TEST_CASE("output is atomic: an abandoned or failed encode leaves no file", "[media][encoder]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(32, 32, 3);
  {
    VideoEncoder encoder;
    encoder.open(dir / "half.mp4", 32, 32, EncodeOptions{});
    encoder.write(clip[0]);
    CHECK_FALSE(fs::exists(dir / "half.mp4"));
  }
  CHECK(entries_in(dir.path()) == 0);

  VideoEncoder encoder;
  encoder.open(dir / "bad.webm", 32, 32, EncodeOptions{});
  CHECK_THROWS_AS(encoder.write(test::pattern_frame(16, 16, 0)), Error);
  encoder = VideoEncoder();
  CHECK(entries_in(dir.path()) == 0);

  VideoEncoder done;
  done.open(dir / "ok.mp4", 32, 32, EncodeOptions{});
  for (const auto& f : clip) done.write(f);
  CHECK(done.frames_written() == 3);
  done.finish();
  CHECK_FALSE(done.is_open());
  CHECK(entries_in(dir.path()) == 1);
  CHECK(probe(dir / "ok.mp4").frame_count == 3);
}

TEST_CASE("bad encode options are invalid_argument", "[media][encoder]") {
  test::TempDir dir;
  auto clip = test::pattern_clip(16, 16, 1);
  EncodeOptions options;
  options.speed_preset = "warp";
  CHECK_THROWS_AS(encode_video(dir / "a.mp4", clip, options), Error);
  options = EncodeOptions{};
  options.fps = 0;
  CHECK_THROWS_AS(encode_video(dir / "a.mp4", clip, options), Error);
  CHECK_THROWS_AS(encode_video(dir / "a.avi", clip, EncodeOptions{}), Error);
  CHECK_THROWS_AS(encode_video(dir / "a.mp4", {}, EncodeOptions{}), Error);
  CHECK(entries_in(dir.path()) == 0);
}

TEST_CASE("container formats from paths and strings", "[media][unit]") {
  CHECK(format_from_path("a/b.mp4") == ContainerFormat::mp4);
  CHECK(format_from_path("B.WEBM") == ContainerFormat::webm);
  CHECK(format_from_path("x.gif") == ContainerFormat::gif);
  CHECK(format_from_path("out/frame_%05d.png") == ContainerFormat::png_sequence);
  CHECK(format_from_path("out/") == ContainerFormat::png_sequence);
  CHECK(format_from_path("frames") == ContainerFormat::png_sequence);
  CHECK_FALSE(format_from_path("x.avi"));
  for (ContainerFormat f : {ContainerFormat::unknown, ContainerFormat::mp4, ContainerFormat::webm,
                            ContainerFormat::gif, ContainerFormat::png_sequence})
    CHECK(container_format_from_string(to_string(f)) == f);
  CHECK_FALSE(container_format_from_string("avi"));
}

TEST_CASE("a range that starts on a keyframe is stream-copied with identical pictures", "[media]") {
  mugv::test::TempDir dir;
  std::vector<mugv::RgbFrame> frames;
  for (int i = 0; i < 24; ++i) {
    mugv::RgbFrame f;
    f.width = 64;
    f.height = 48;
    f.rgb.resize(64 * 48 * 3);
    for (size_t p = 0; p < f.rgb.size(); ++p) f.rgb[p] = static_cast<uint8_t>((p * 7 + i * 13) % 251);
    frames.push_back(f);
  }
  mugv::EncodeOptions o;
  o.fps = 8;
  mugv::encode_video(dir / "src.mp4", frames, o);
  auto copied = mugv::remux_range(dir / "src.mp4", 0.0, 3.0, dir / "copy.mp4");
  REQUIRE(copied);
  CHECK(*copied == 24);
  auto a = mugv::decode_range(dir / "src.mp4", 0, 0);
  auto b = mugv::decode_range(dir / "copy.mp4", 0, 0);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].rgb == b[i].rgb);  // bit-identical: nothing re-encoded
  // Mid-GOP start: no stream copy, and no file is left behind.
  CHECK_FALSE(mugv::remux_range(dir / "src.mp4", 1.0, 3.0, dir / "mid.mp4"));
  CHECK_FALSE(fs::exists(dir / "mid.mp4"));
}

TEST_CASE("a range that ends inside a group of pictures is not stream-copied", "[media]") {
  mugv::test::TempDir dir;
  std::vector<mugv::RgbFrame> frames;
  for (int i = 0; i < 24; ++i) {
    mugv::RgbFrame f;
    f.width = 32;
    f.height = 32;
    f.rgb.assign(32 * 32 * 3, static_cast<uint8_t>(i * 10));
    frames.push_back(f);
  }
  mugv::EncodeOptions o;
  o.fps = 8;
  mugv::encode_video(dir / "src.mp4", frames, o);
  CHECK_FALSE(mugv::remux_range(dir / "src.mp4", 0.0, 1.0, dir / "head.mp4"));
  CHECK_FALSE(fs::exists(dir / "head.mp4"));
}
