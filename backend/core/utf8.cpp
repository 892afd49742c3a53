#include "core/utf8.h"

namespace mugv {
// The allowed range of the second byte follows from the lead byte (Table 3-7 of the Unicode standard); later
// continuation bytes are 80..BF.
std::pair<uint32_t, size_t> decode_utf8(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return {lead, 1};
  size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF)
    length = 2;
  else if (lead == 0xE0)
    length = 3, low = 0xA0;  // no overlong forms
  else if (lead >= 0xE1 && lead <= 0xEC)
    length = 3;
  else if (lead == 0xED)
    length = 3, high = 0x9F;  // no UTF-16 surrogates
  else if (lead >= 0xEE && lead <= 0xEF)
    length = 3;
  else if (lead == 0xF0)
    length = 4, low = 0x90;
  else if (lead >= 0xF1 && lead <= 0xF3)
    length = 4;
  else if (lead == 0xF4)
    length = 4, high = 0x8F;  // nothing past U+10FFFF
  else
    return {0, 0};
  if (i + length > text.size() || byte(i + 1) < low || byte(i + 1) > high) return {0, 0};
  uint32_t code = lead & (0x7F >> length);
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return {0, 0};
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  return {code, length};
}

bool is_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t length = decode_utf8(text, i).second;
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t length = decode_utf8(text, i).second;
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string_view without_bom(std::string_view text) {
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  return text.substr(0, kBom.size()) == kBom ? text.substr(kBom.size()) : text;
}

}  // namespace mugv
