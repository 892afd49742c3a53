#pragma once
// Hugging Face safetensors files (https://github.com/huggingface/safetensors, "Format"):
//   [8 bytes: little-endian u64 N][N bytes: UTF-8 JSON header][byte buffer]
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the buffer) plus an optional "__metadata__" object of string -> string.
//
// SafetensorsFile maps a file read-only and validates the whole header before returning, so a
// TensorView never points outside the mapping: tensors must tile the buffer exactly (sorted by
// begin, no overlap, no hole, no trailing bytes) and each byte count must equal numel * dtype size.
// Every violation is Error(format) (the header is malformed) or Error(corrupt) (the header does
// not match the bytes present: truncation, trailing bytes), naming the file and the problem.
// release(name) drops a tensor's resident pages after it has been copied (core/mapped_file.h).
// Tensor data is little-endian and only as aligned as its offset (8 + N is a multiple of 8 for
// files this writer produces); copy with memcpy rather than casting when alignment matters.
// A SafetensorsFile is move-only; views stay valid while it lives. Reading is thread-safe.
//
// SafetensorsWriter builds a file deterministically: tensors sorted by name in both header and
// buffer, "__metadata__" first when present, the header padded with spaces to a multiple of 8
// bytes (as the reference implementation does), streamed to a temporary file and renamed into
// place (core/paths.h AtomicFileWriter). Not thread-safe. add_generated() lets a converter write a
// file far larger than memory: each tensor's bytes are produced only while write() streams it.

#include "core/error.h"
#include "core/mapped_file.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class DType { unknown = 0, f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean, f8_e4m3, f8_e5m2 };
// The format's spelling: "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
// "F8_E4M3", "F8_E5M2".
const char* to_string(DType dtype);
std::optional<DType> dtype_from_string(std::string_view name);
// Bytes per element; 0 for unknown.
size_t dtype_size_bytes(DType dtype);

struct TensorView {
  DType dtype = DType::unknown;
  std::vector<int64_t> shape;     // empty = scalar (one element)
  const uint8_t* data = nullptr;  // inside the file mapping; nullptr when size_bytes is 0
  size_t size_bytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Throws Error(not_found / io) when the file cannot be opened or mapped, Error(format /
  // corrupt) when it is not a valid safetensors file.
  [[nodiscard]] static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws Error(not_found) naming the file and the tensor.
  const TensorView& at(const std::string& name) const;
  size_t size() const { return tensors_.size(); }
  uint64_t header_size_bytes() const { return header_bytes_; }
  // Drops the tensor's resident pages (core/mapped_file.h release_mapped_pages); the view stays
  // valid and re-reads from the file when touched. Throws Error(not_found) like at().
  void release(const std::string& name) const;

 private:
  explicit SafetensorsFile(MappedFile mapping) : mapping_(std::move(mapping)) {}
  std::filesystem::path path_;
  MappedFile mapping_;
  uint64_t header_bytes_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Largest header accepted, as in the reference implementation.
constexpr uint64_t kSafetensorsMaxHeaderBytes = uint64_t(100) << 20;

class SafetensorsWriter {
 public:
  // Copies `bytes` bytes from `data`. Throws Error(invalid_argument) for an empty, duplicate or
  // reserved ("__metadata__") name, an unknown dtype, a negative dimension, or a byte count that
  // is not numel * dtype size.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
           size_t bytes);
  // Like add() but does not copy: `data` must stay valid and unchanged until write() returns.
  // For multi-gigabyte checkpoints, to avoid holding two copies of the weights.
  void add_borrowed(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                    size_t bytes);
  // Like add() but the bytes come later: write() calls `fill` with a buffer of `bytes` bytes to
  // fill, just before streaming that tensor, and reuses the buffer for the next generated tensor,
  // so memory holds one tensor at a time (converting a 20 GB checkpoint, for instance). `fill` may
  // throw to abort the write (nothing is left at the path). The file is byte-identical to add()
  // with the same bytes.
  void add_generated(const std::string& name, DType dtype, const std::vector<int64_t>& shape, size_t bytes,
                     std::function<void(uint8_t* out)> fill);
  void set_metadata(const std::string& key, const std::string& value);
  // The header exactly as write() emits it (JSON plus space padding), without the length prefix.
  [[nodiscard]] std::string header() const;
  // Writes the file atomically. Throws Error(io) naming the path.
  void write(const std::filesystem::path& path) const;
  size_t size() const { return tensors_.size(); }

 private:
  struct Pending {
    DType dtype = DType::unknown;
    std::vector<int64_t> shape;
    std::vector<uint8_t> owned;
    const uint8_t* data = nullptr;
    std::function<void(uint8_t*)> fill;
    size_t bytes = 0;
  };
  Pending& add_entry(const std::string& name, DType dtype, const std::vector<int64_t>& shape, size_t bytes);
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace mugv
