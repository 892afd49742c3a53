// Every kind of bad input must end in a mugv::Error with the right code and the file named in what(),
// never a crash, a hang or a silent success.

#include "media/decoder.h"
#include "media/encoder.h"
#include "media/image.h"
#include "media/probe.h"

#include "core/error.h"
#include "media/media_fixtures.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <random>

using namespace mugv;

namespace {

// Runs `fn`, requires it to throw mugv::Error with `code` and a what() naming `path`; returns the message.
template <typename Fn>
std::string require_error(Fn&& fn, ErrorCode code, const fs::path& path) {
  try {
    fn();
  } catch (const Error& e) {
    INFO("what(): " << e.what());
    CHECK(to_string(e.code()) == std::string(to_string(code)));
    CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
    return e.what();
  }
  FAIL("no mugv::Error thrown for " << path);
  return {};
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

fs::path encode_small_mp4(const test::TempDir& dir, const std::string& name, int frames) {
  EncodeOptions options;
  options.fps = 24;
  options.speed_preset = "ultrafast";
  encode_video(dir / name, test::pattern_clip(128, 96, frames), options);
  return dir / name;
}

}  // namespace

TEST_CASE("missing file is not_found", "[media][errors]") {
  test::TempDir dir;
  fs::path path = dir / "nope.mp4";
  require_error([&] { (void)probe(path); }, ErrorCode::not_found, path);
  require_error([&] { VideoDecoder d(path); }, ErrorCode::not_found, path);
  require_error([&] { (void)read_image(dir / "nope.png"); }, ErrorCode::not_found, dir / "nope.png");
}

TEST_CASE("a directory where a file is expected is io", "[media][errors]") {
  test::TempDir dir;
  fs::create_directory(dir / "clip.mp4");
  require_error([&] { (void)probe(dir / "clip.mp4"); }, ErrorCode::io, dir / "clip.mp4");
  require_error([&] { (void)read_image(dir.path()); }, ErrorCode::io, dir.path());
}

TEST_CASE("zero-byte, random and text files are not video files", "[media][errors]") {
  test::TempDir dir;
  test::write_bytes(dir / "empty.mp4", "");
  CHECK(require_error([&] { (void)probe(dir / "empty.mp4"); }, ErrorCode::format, dir / "empty.mp4")
            .find("not a video file") != std::string::npos);

  std::mt19937 rng(7);
  std::string noise(64 * 1024, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xFF);
  test::write_bytes(dir / "noise.mp4", noise);
  require_error([&] { (void)probe(dir / "noise.mp4"); }, ErrorCode::format, dir / "noise.mp4");

  const std::string text = "This is a shopping list.\nMilk\nEggs\nA video, sadly not.\n";
  test::write_bytes(dir / "notes.txt", text);
  test::write_bytes(dir / "notes.mp4", text);
  CHECK(require_error([&] { (void)probe(dir / "notes.txt"); }, ErrorCode::format, dir / "notes.txt")
            .find("not a video file") != std::string::npos);
  require_error([&] { (void)probe(dir / "notes.mp4"); }, ErrorCode::format, dir / "notes.mp4");
  require_error([&] { (void)read_image(dir / "notes.txt"); }, ErrorCode::format, dir / "notes.txt");
}

TEST_CASE("an audio-only file has no video stream", "[media][errors]") {
  test::TempDir dir;
  test::write_wav(dir / "tone.wav", 8000);
  CHECK(require_error([&] { (void)probe(dir / "tone.wav"); }, ErrorCode::format, dir / "tone.wav")
            .find("no video stream") != std::string::npos);
  require_error([&] { VideoDecoder d(dir / "tone.wav"); }, ErrorCode::format, dir / "tone.wav");
}

TEST_CASE("absurd frame dimensions are rejected", "[media][errors]") {
  test::TempDir dir;
  test::write_y4m_header(dir / "huge.y4m", 99999, 16);
  CHECK(require_error([&] { (void)probe(dir / "huge.y4m"); }, ErrorCode::format, dir / "huge.y4m")
            .find("99999") != std::string::npos);
}

TEST_CASE("a truncated mp4 is reported as corrupt; its decodable part still decodes", "[media][errors]") {
  test::TempDir dir;
  fs::path full = encode_small_mp4(dir, "full.mp4", 48);
  std::string bytes = read_all(full);
  fs::path cut = dir / "cut.mp4";
  test::write_bytes(cut, bytes.substr(0, bytes.size() / 2));
  require_error([&] { (void)probe(cut); }, ErrorCode::corrupt, cut);

  VideoDecoder decoder(cut);
  int64_t frames = 0;
  while (decoder.next()) ++frames;
  CHECK(frames > 0);
  CHECK(frames < 48);
  DecodeStats stats = decoder.stats();
  CHECK(stats.frames_lost + frames >= 48);
  CHECK_FALSE(stats.first_error.empty());
}

TEST_CASE("a corrupt region in the middle decodes to the end and is counted", "[media][errors]") {
  test::TempDir dir;
  fs::path path = encode_small_mp4(dir, "damaged.mp4", 48);
  std::string bytes = read_all(path);
  // faststart puts the index first, so the middle of the file is picture data.
  std::mt19937 rng(11);
  for (size_t i = bytes.size() * 2 / 5; i < bytes.size() * 3 / 5; ++i)
    bytes[i] = static_cast<char>(rng() & 0xFF);
  test::write_bytes(path, bytes);

  VideoDecoder decoder(path);
  int64_t frames = 0;
  double last_pts = -1;
  while (auto frame = decoder.next()) {
    ++frames;
    CHECK(frame->pts_s > last_pts);
    last_pts = frame->pts_s;
  }
  DecodeStats stats = decoder.stats();
  INFO("frames " << frames << " lost " << stats.frames_lost << " corrupt packets " << stats.packets_corrupt
                 << " damaged " << stats.frames_damaged << " first error: " << stats.first_error);
  CHECK(frames > 10);
  CHECK(stats.frames_lost + stats.packets_corrupt + stats.frames_damaged > 0);
  CHECK((stats.frames_lost > 0 || stats.packets_corrupt > 0));
  CHECK_FALSE(stats.first_error.empty());
  CHECK(frames + stats.frames_lost == 48);
}

TEST_CASE("an unwritable output path is io and leaves nothing behind", "[media][errors]") {
  test::TempDir dir;
  test::write_bytes(dir / "file.txt", "a file, not a directory");
  const auto frames = test::pattern_clip(32, 32, 2);
  for (const char* name : {"out.mp4", "out.webm", "out.gif", "frames"}) {
    fs::path path = dir / "file.txt" / name;
    require_error([&] { encode_video(path, frames, EncodeOptions{}); }, ErrorCode::io, path);
  }
  require_error([&] { write_png(dir / "file.txt" / "x.png", frames[0]); }, ErrorCode::io,
                dir / "file.txt" / "x.png");
}
