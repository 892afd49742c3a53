#pragma once
// SHA-256 (libsodium) for checkpoint manifests, cache keys and content identity of source videos.
// Digests are rendered as 64 lowercase hex characters. Sha256 is not thread-safe; the free
// functions are. File functions throw Error(not_found / io) naming the path.

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mugv {

// SplitMix64: one step of a well-mixed 64-bit generator, for seeds derived from (seed, step, index) tuples
// without a generator's state (the same value wherever and whenever it is computed).
[[nodiscard]] constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hash: update() any number of times, then finish() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* bytes, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  // Ends the hash; calling update() or finish() again throws Error(internal).
  [[nodiscard]] Sha256Digest finish();
  [[nodiscard]] std::string finish_hex();

 private:
  alignas(64) unsigned char state_[128];
  bool finished_ = false;
};

[[nodiscard]] std::string to_hex(const uint8_t* bytes, size_t size);
[[nodiscard]] std::string sha256_hex(std::string_view bytes);
[[nodiscard]] std::string sha256_hex(const void* bytes, size_t size);

// `bytes` bytes from the operating system's secure random source, as lowercase hex (secrets, tokens).
[[nodiscard]] std::string random_hex(size_t bytes);
// Equality of two secrets in time that does not depend on where they differ.
[[nodiscard]] bool secrets_equal(std::string_view a, std::string_view b);

// SHA-256 of the whole file, read in 1 MiB chunks (constant memory).
[[nodiscard]] std::string sha256_file(const std::filesystem::path& path);

// Fast identity of a large file's content: SHA-256 over a "mugv-content-v1" tag, the file size
// (8 bytes little-endian), the first 4 MiB and the last 4 MiB (the whole file when it is at most
// 8 MiB). Used to recognise a source video that was moved or renamed without reading gigabytes:
// container headers (moov/EBML) and trailing index blocks live at the ends, so two different
// videos of equal size practically never agree there. Not a proof of integrity; use sha256_file
// for manifests.
[[nodiscard]] std::string content_hash_of_file(const std::filesystem::path& path);

}  // namespace mugv
