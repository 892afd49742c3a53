#include "media/media_fixtures.h"

#include "support/test_support.h"

#include <cmath>
#include <cstdint>
#include <string>

namespace mugv::test {

RgbFrame pattern_frame(int width, int height, int k) {
  constexpr double kTwoPi = 6.283185307179586;
  RgbFrame f(width, height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      double r = 128 + 100 * std::sin(kTwoPi * (x + 2.0 * k) / width);
      double g = 128 + 100 * std::cos(kTwoPi * (y + 1.0 * k) / height);
      double b = 128 + 80 * std::sin(kTwoPi * (x + y - 3.0 * k) / (width + height));
      f.set_pixel(x, y, static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b));
    }
  }
  f.index = k;
  return f;
}

std::vector<RgbFrame> pattern_clip(int width, int height, int frames) {
  std::vector<RgbFrame> clip;
  clip.reserve(static_cast<size_t>(frames));
  for (int k = 0; k < frames; ++k) clip.push_back(pattern_frame(width, height, k));
  return clip;
}

namespace {
void put_le(std::string& out, uint32_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}
}  // namespace

void write_wav(const fs::path& path, int samples) {
  const uint32_t data_bytes = static_cast<uint32_t>(samples) * 2;
  std::string wav = "RIFF";
  put_le(wav, 36 + data_bytes, 4);
  wav += "WAVEfmt ";
  put_le(wav, 16, 4);     // fmt chunk size
  put_le(wav, 1, 2);      // PCM
  put_le(wav, 1, 2);      // mono
  put_le(wav, 8000, 4);   // sample rate
  put_le(wav, 16000, 4);  // byte rate
  put_le(wav, 2, 2);      // block align
  put_le(wav, 16, 2);     // bits per sample
  wav += "data";
  put_le(wav, data_bytes, 4);
  wav.append(data_bytes, '\0');
  write_bytes(path, wav);
}

void write_y4m_header(const fs::path& path, int width, int height) {
  write_bytes(path, "YUV4MPEG2 W" + std::to_string(width) + " H" + std::to_string(height) +
                        " F25:1 Ip A1:1 C420jpeg\n");
}

}  // namespace mugv::test
