#pragma once
// Standard base64 (RFC 4648, with '=' padding): RNG state in JSON files, images in HTTP requests.
// Pure functions; thread-safe.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

[[nodiscard]] std::string base64_encode(const uint8_t* bytes, size_t size);
[[nodiscard]] inline std::string base64_encode(std::string_view bytes) {
  return base64_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}
// Throws Error(format) naming `subject` for characters outside the alphabet.
[[nodiscard]] std::vector<uint8_t> base64_decode(std::string_view text, const std::string& subject);

}  // namespace mugv
