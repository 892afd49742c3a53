#pragma once
// One entry point for model weights as people have them, read in place without LibTorch:
//   - a safetensors file (core/safetensors.h)
//   - a torch.save zip checkpoint: dit.pt, vae.pt, *.pth, *.ckpt, pytorch_model.bin
//     (core/torch_checkpoint.h)
//   - a shard index: *.safetensors.index.json or pytorch_model.bin.index.json, Hugging Face's
//     {"metadata": {...}, "weight_map": {tensor: shard file name}}, shards beside the index
//   - a directory, as Hugging Face lays models out: its one *.index.json (a *.safetensors.index.json
//     wins over others), else its one *.safetensors, else its one .bin/.pt/.pth/.ckpt. Hidden files
//     are ignored.
// A file's kind is decided by its content (zip signature versus safetensors header), not by its
// extension; a name ending in .json is an index.
//
// All files are mapped read-only and validated when opened (see the two readers), so every
// TensorView points inside a live mapping for as long as the WeightFiles lives. The weight_map of
// an index is authoritative: a shard's tensors that the map does not name are not exposed.
// release(name) drops a tensor's resident pages once the caller has copied it, so a loader that
// copies tensor by tensor keeps resident memory near one tensor's size.
//
// Errors name the path opened (the file, the index or the directory):
//   Error(not_found)         the path, a shard, or a tensor asked of at(); an empty directory
//   Error(invalid_argument)  a directory holding several candidates (listed)
//   Error(format/corrupt/unsupported)  from the readers, or an index that is not valid JSON, names
//                            a shard outside its directory, or maps a tensor to a shard lacking it
// Move-only. Reading and release() are thread-safe.

#include "core/safetensors.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class WeightFormat { unknown = 0, safetensors, safetensors_sharded, torch_zip, torch_zip_sharded };
// "safetensors", "safetensors_sharded", "torch_zip", "torch_zip_sharded".
const char* to_string(WeightFormat format);
std::optional<WeightFormat> weight_format_from_string(std::string_view name);

// The kind of a single weight file by its first bytes: safetensors or torch_zip. Throws
// Error(not_found / io) when it cannot be read, Error(unsupported) for a legacy (pre-1.6)
// torch.save file, Error(format) for anything else.
[[nodiscard]] WeightFormat detect_weight_file(const std::filesystem::path& path);

class WeightFiles {
 public:
  [[nodiscard]] static WeightFiles open(const std::filesystem::path& path);

  WeightFiles(WeightFiles&& other) noexcept;
  WeightFiles& operator=(WeightFiles&& other) noexcept;
  WeightFiles(const WeightFiles&) = delete;
  WeightFiles& operator=(const WeightFiles&) = delete;
  ~WeightFiles();

  // What open() was given.
  const std::filesystem::path& path() const { return path_; }
  WeightFormat format() const { return format_; }
  // The files holding tensors (shards in index order of first use); an index is not among them.
  const std::vector<std::filesystem::path>& files() const { return files_; }
  // A safetensors __metadata__, or an index's "metadata" (non-string values as JSON text) merged
  // over its shards' own; empty for torch checkpoints.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  size_t size() const { return tensors_.size(); }
  // Throws Error(not_found) naming the files searched and the tensor.
  const TensorView& at(const std::string& name) const;
  // The file holding the tensor (for error messages). Throws like at().
  const std::filesystem::path& file_of(const std::string& name) const;
  // Sum of every tensor's size_bytes.
  uint64_t total_bytes() const;
  // Drops the tensor's resident pages; the view stays valid and re-reads from the file when
  // touched. Throws like at().
  void release(const std::string& name) const;

 private:
  WeightFiles() = default;
  struct Shard;
  struct Entry {
    const TensorView* view = nullptr;
    size_t file = 0;  // index into files_
  };
  const Entry& entry(const std::string& name) const;
  void add_shard(const std::filesystem::path& file);

  std::filesystem::path path_;
  WeightFormat format_ = WeightFormat::unknown;
  std::vector<std::filesystem::path> files_;
  std::vector<std::unique_ptr<Shard>> shards_;  // parallel to files_
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace mugv
