#include "media/image.h"

#include "core/error.h"
#include "media/encoder.h"
#include "media/media_fixtures.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace mugv;

TEST_CASE("write_png / read_image round trip is exact", "[media][image]") {
  test::TempDir dir;
  RgbFrame f = test::pattern_frame(37, 21, 3);
  write_png(dir / "a.png", f);
  RgbFrame back = read_image(dir / "a.png");
  CHECK(back.width == 37);
  CHECK(back.height == 21);
  CHECK(back.rgb == f.rgb);
}

TEST_CASE("read_image decodes BMP and JPEG by content", "[media][image]") {
  test::TempDir dir;
  RgbFrame f = test::pattern_frame(24, 16, 0);
  // A 24-bit BMP written by hand: bottom-up BGR rows padded to 4 bytes.
  const int row = (24 * 3 + 3) & ~3;
  std::string bmp = "BM";
  auto le = [&](uint32_t v, int n) {
    for (int i = 0; i < n; ++i) bmp.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  le(54 + row * 16, 4);
  le(0, 4);
  le(54, 4);
  le(40, 4);
  le(24, 4);
  le(16, 4);
  le(1, 2);
  le(24, 2);
  le(0, 4);
  le(row * 16, 4);
  le(2835, 4);
  le(2835, 4);
  le(0, 4);
  le(0, 4);
  for (int y = 15; y >= 0; --y) {
    for (int x = 0; x < 24; ++x) {
      const uint8_t* p = f.pixel(x, y);
      bmp.push_back(static_cast<char>(p[2]));
      bmp.push_back(static_cast<char>(p[1]));
      bmp.push_back(static_cast<char>(p[0]));
    }
    bmp.append(static_cast<size_t>(row - 24 * 3), '\0');
  }
  test::write_bytes(dir / "named-wrong.png", bmp);
  RgbFrame back = read_image(dir / "named-wrong.png");
  CHECK(back.rgb == f.rgb);

  test::write_bytes(dir / "broken.png", std::string("\x89PNG\r\n\x1a\n", 8) + std::string(40, 'x'));
  try {
    (void)read_image(dir / "broken.png");
    FAIL("a broken PNG decoded");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(std::string(e.what()).find("broken.png") != std::string::npos);
  }
}

TEST_CASE("resize: sizes per mode and aspect keeping", "[media][image]") {
  RgbFrame f = test::pattern_frame(200, 100, 0);
  CHECK(resize(f, 50, 50, ResizeMode::center_crop).width == 50);
  RgbFrame pad = resize(f, 50, 50, ResizeMode::fit_pad);
  CHECK(pad.height == 50);
  const uint8_t* corner = pad.pixel(0, 0);
  CHECK(int(corner[0]) + corner[1] + corner[2] == 0);
  const uint8_t* middle = pad.pixel(25, 25);
  CHECK(int(middle[0]) + middle[1] + middle[2] > 0);
  RgbFrame half = resize(f, 100, 0, ResizeMode::stretch);
  CHECK(half.height == 50);
  // Downscaling a smooth picture then comparing with a direct render stays close.
  CHECK(psnr(resize(f, 100, 50, ResizeMode::stretch), test::pattern_frame(100, 50, 0)) > 20.0);
}

TEST_CASE("thumbnail and contact sheets", "[media][image]") {
  test::TempDir dir;
  EncodeOptions options;
  options.fps = 10;
  options.speed_preset = "ultrafast";
  auto clip = test::pattern_clip(160, 90, 20);
  encode_video(dir / "v.mp4", clip, options);

  RgbFrame thumb = thumbnail(dir / "v.mp4", 1.0, 64);
  CHECK(thumb.width == 64);
  CHECK(thumb.height == 36);
  CHECK(thumb.pts_s == Approx(1.0));
  CHECK(psnr(thumb, resize(clip[10], 64, 36, ResizeMode::stretch)) > 28.0);
  CHECK(thumbnail(dir / "v.mp4", 99.0, 64).pts_s == Approx(1.9));  // clamped to the last frame

  RgbFrame sheet = contact_sheet({clip[0], clip[1], clip[2]}, 2, 32, 18);
  CHECK(sheet.width == 64);
  CHECK(sheet.height == 36);
  const uint8_t* empty_cell = sheet.pixel(48, 27);
  CHECK(int(empty_cell[0]) + empty_cell[1] + empty_cell[2] == 0);

  RgbFrame vsheet = video_contact_sheet(dir / "v.mp4", 4, 2, 48);
  CHECK(vsheet.width == 96);
  CHECK(vsheet.height == 54);
  // Tile 0 is the frame at 0.25 s (frame 2), tile 3 the frame at 1.75 s (frame 17).
  RgbFrame tile3(48, 27);
  for (int y = 0; y < 27; ++y) std::memcpy(tile3.pixel(0, y), vsheet.pixel(48, 27 + y), 48 * 3);
  CHECK(psnr(tile3, resize(clip[17], 48, 27, ResizeMode::stretch)) > 25.0);
  CHECK(psnr(tile3, resize(clip[2], 48, 27, ResizeMode::stretch)) <
        psnr(tile3, resize(clip[17], 48, 27, ResizeMode::stretch)));

  CHECK_THROWS_AS(contact_sheet({}, 2, 32, 18), Error);
}
