#include "core/base64.h"

#include "core/error.h"

#include <cstring>

namespace mugv {

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(const uint8_t* bytes, size_t size) {
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t v = uint32_t(bytes[i]) << 16;
    if (i + 1 < size) v |= uint32_t(bytes[i + 1]) << 8;
    if (i + 2 < size) v |= bytes[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < size ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(std::string_view text, const std::string& subject) {
  std::vector<uint8_t> out;
  uint32_t v = 0;
  int bits = 0;
  for (char ch : text) {
    if (ch == '=') break;
    const char* p = std::strchr(kAlphabet, ch);
    if (!p || ch == '\0') throw Error(ErrorCode::format, subject, "not base64");
    v = (v << 6) | uint32_t(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t((v >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace mugv
