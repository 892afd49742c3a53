#include "core/hash.h"

#include "core/error.h"

#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace mugv {
namespace {

static_assert(sizeof(crypto_hash_sha256_state) <= 128, "Sha256::state_ too small");

constexpr size_t kChunkBytes = size_t(1) << 20;
constexpr uint64_t kEdgeBytes = uint64_t(4) << 20;

void ensure_sodium() {
  static const int rc = sodium_init();  // thread-safe once, by the static initialisation rule
  if (rc < 0) throw Error(ErrorCode::internal, "libsodium", "sodium_init failed");
}

crypto_hash_sha256_state* state_of(unsigned char* raw) {
  return reinterpret_cast<crypto_hash_sha256_state*>(raw);
}

std::ifstream open_for_hash(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(ErrorCode::not_found, path.string(), "no such file");
  if (std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::io, path.string(), "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, path.string(), std::string("cannot open: ") + std::strerror(errno));
  return in;
}

// Reads up to `size` bytes at `offset` into the hash; throws when the file ends early (it changed).
void hash_range(std::ifstream& in, const std::filesystem::path& path, uint64_t offset, uint64_t size,
                Sha256& hash, std::vector<char>& buffer) {
  in.seekg(static_cast<std::streamoff>(offset));
  while (size > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(size, buffer.size()));
    in.read(buffer.data(), static_cast<std::streamsize>(want));
    auto got = static_cast<size_t>(in.gcount());
    if (got != want) throw Error(ErrorCode::io, path.string(), "read failed (file shrank while hashing?)");
    hash.update(buffer.data(), got);
    size -= got;
  }
}

}  // namespace

Sha256::Sha256() {
  ensure_sodium();
  crypto_hash_sha256_init(state_of(state_));
}

void Sha256::update(const void* bytes, size_t size) {
  if (finished_) throw Error(ErrorCode::internal, "sha256", "update after finish");
  crypto_hash_sha256_update(state_of(state_), static_cast<const unsigned char*>(bytes), size);
}

Sha256Digest Sha256::finish() {
  if (finished_) throw Error(ErrorCode::internal, "sha256", "finish called twice");
  finished_ = true;
  Sha256Digest digest{};
  crypto_hash_sha256_final(state_of(state_), digest.data());
  return digest;
}

std::string Sha256::finish_hex() {
  Sha256Digest digest = finish();
  return to_hex(digest.data(), digest.size());
}

std::string to_hex(const uint8_t* bytes, size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

std::string sha256_hex(const void* bytes, size_t size) {
  Sha256 hash;
  hash.update(bytes, size);
  return hash.finish_hex();
}

std::string sha256_hex(std::string_view bytes) {
  return sha256_hex(bytes.data(), bytes.size());
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in = open_for_hash(path);
  std::vector<char> buffer(kChunkBytes);
  Sha256 hash;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() > 0) hash.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw Error(ErrorCode::io, path.string(), "read failed");
  return hash.finish_hex();
}

std::string content_hash_of_file(const std::filesystem::path& path) {
  std::ifstream in = open_for_hash(path);
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorCode::io, path.string(), "cannot read size: " + ec.message());
  Sha256 hash;
  hash.update(std::string_view("mugv-content-v1"));
  unsigned char size_le[8];
  for (int i = 0; i < 8; ++i) size_le[i] = static_cast<unsigned char>(size >> (8 * i));
  hash.update(size_le, sizeof size_le);
  std::vector<char> buffer(kChunkBytes);
  if (size <= 2 * kEdgeBytes) {
    hash_range(in, path, 0, size, hash, buffer);
  } else {
    hash_range(in, path, 0, kEdgeBytes, hash, buffer);
    hash_range(in, path, size - kEdgeBytes, kEdgeBytes, hash, buffer);
  }
  return hash.finish_hex();
}

std::string random_hex(size_t bytes) {
  ensure_sodium();
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  return to_hex(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
}

bool secrets_equal(std::string_view a, std::string_view b) {
  ensure_sodium();
  if (a.size() != b.size()) return false;
  return a.empty() || sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mugv
