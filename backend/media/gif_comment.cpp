#include "media/gif_comment.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace mugv::gif {
namespace {

constexpr size_t kHeaderBytes = 6 + 7;  // signature + logical screen descriptor

size_t color_table_bytes(uint8_t flags) {
  return (flags & 0x80) ? 3u * (1u << ((flags & 0x07) + 1)) : 0u;
}

bool is_gif(const std::string& gif) {
  return gif.size() >= kHeaderBytes && (gif.compare(0, 6, "GIF89a") == 0 || gif.compare(0, 6, "GIF87a") == 0);
}

// Skips a chain of sub-blocks starting at `pos`; returns the position after the terminator, or npos.
size_t skip_sub_blocks(const std::string& gif, size_t pos, std::string* data) {
  while (pos < gif.size()) {
    size_t len = static_cast<uint8_t>(gif[pos]);
    ++pos;
    if (len == 0) return pos;
    if (pos + len > gif.size()) return std::string::npos;
    if (data) data->append(gif, pos, len);
    pos += len;
  }
  return std::string::npos;
}

}  // namespace

std::string insert_comment(const std::string& gif, const std::string& text, const std::string& subject) {
  if (!is_gif(gif)) throw Error(ErrorCode::format, subject, "encoder output is not a GIF stream");
  size_t at = kHeaderBytes + color_table_bytes(static_cast<uint8_t>(gif[10]));
  if (at > gif.size()) throw Error(ErrorCode::format, subject, "GIF header is truncated");
  std::string block = "\x21\xFE";
  for (size_t pos = 0; pos < text.size(); pos += 255) {
    size_t len = std::min<size_t>(255, text.size() - pos);
    block.push_back(static_cast<char>(len));
    block.append(text, pos, len);
  }
  block.push_back('\0');
  std::string out = gif;
  out.replace(0, 6, "GIF89a");
  out.insert(at, block);
  return out;
}

std::vector<std::string> read_comments(const std::string& gif) {
  std::vector<std::string> comments;
  if (!is_gif(gif)) return comments;
  size_t pos = kHeaderBytes + color_table_bytes(static_cast<uint8_t>(gif[10]));
  while (pos < gif.size()) {
    uint8_t introducer = static_cast<uint8_t>(gif[pos]);
    if (introducer == 0x21 && pos + 1 < gif.size()) {
      uint8_t label = static_cast<uint8_t>(gif[pos + 1]);
      std::string data;
      pos = skip_sub_blocks(gif, pos + 2, label == 0xFE ? &data : nullptr);
      if (label == 0xFE) comments.push_back(std::move(data));
    } else if (introducer == 0x2C && pos + 10 <= gif.size()) {
      uint8_t flags = static_cast<uint8_t>(gif[pos + 9]);
      pos += 10 + color_table_bytes(flags) + 1;  // descriptor, local table, LZW minimum code size
      pos = skip_sub_blocks(gif, pos, nullptr);
    } else {
      break;  // trailer (0x3B) or damage: stop, keeping what was found
    }
  }
  return comments;
}

std::map<std::string, std::string> metadata_from_comments(const std::vector<std::string>& comments) {
  std::map<std::string, std::string> out;
  for (const std::string& text : comments) {
    auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_object()) {
      for (auto it = json.begin(); it != json.end(); ++it)
        out[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    } else {
      out["comment"] = text;
    }
  }
  return out;
}

}  // namespace mugv::gif
