#pragma once
// PyTorch checkpoints in the zip format torch.save has written since PyTorch 1.6 (the released
// dit.pt and vae.pt, Hugging Face pytorch_model.bin), read and written without LibTorch. Layout
// (torch/serialization.py, caffe2/serialize/inline_container.h):
//   <archive>/data.pkl     the pickled state dict (core/torch_pickle.h)
//   <archive>/data/<key>   the raw little-endian bytes of each storage, stored uncompressed and
//                          64-byte aligned; several tensors may view one storage at offsets
//   <archive>/version      "3\n" (format version); <archive>/byteorder "little" (may be absent)
// where <archive> is any top-level folder name. Archives over 4 GiB use zip64 (core/zip_archive.h).
//
// TorchCheckpoint maps the file read-only and validates everything before returning, so every
// TensorView points inside the mapping: each tensor must be contiguous (row-major strides, any
// storage offset) and lie within its storage, and each storage entry must hold the bytes its
// persistent id declares. Errors name the file, and the tensor where there is one:
//   Error(unsupported)  a legacy (pre-1.6, non-zip) torch.save file; a non-contiguous tensor
//                       ("re-save it with .contiguous()"); big-endian data; a pickle opcode or
//                       global outside what torch.save emits for a state dict
//   Error(format)       not a zip / no data.pkl / a malformed pickle
//   Error(corrupt)      truncation or damage: no end of central directory, an entry beyond the
//                       end of the file, a missing or short storage, data.pkl failing its CRC
// Tensor data is only checked by CRC for data.pkl (checking gigabytes of weights on every open
// would cost a full read). A TorchCheckpoint is move-only; views stay valid while it lives.
// Reading and release() are thread-safe.
//
// TorchCheckpointWriter writes a checkpoint torch.load accepts: a flat OrderedDict of tensors,
// each tensor's bytes streamed to disk when added (memory stays at one tensor), data.pkl,
// byteorder and version at finish(), atomically (nothing appears at `path` until finish()
// succeeds). Data is written in host byte order, which is little-endian on every platform MUG-V
// builds for. Not thread-safe. Misuse is Error(invalid_argument) naming the tensor; disk failures
// are Error(io) naming the path.

#include "core/mapped_file.h"
#include "core/safetensors.h"
#include "core/torch_pickle.h"
#include "core/zip_archive.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mugv {

// True when `bytes` starts like a legacy (pre-1.6) torch.save file: a bare pickle stream.
[[nodiscard]] bool looks_like_legacy_torch(const uint8_t* bytes, uint64_t size_bytes);
// What to tell a person holding one.
extern const char* const kLegacyTorchMessage;

class TorchCheckpoint {
 public:
  [[nodiscard]] static TorchCheckpoint open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  // The top-level folder inside the zip.
  const std::string& archive_name() const { return archive_; }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws Error(not_found) naming the file and the tensor.
  const TensorView& at(const std::string& name) const;
  size_t size() const { return tensors_.size(); }
  // Drops the tensor's resident pages (core/mapped_file.h release_mapped_pages); the view stays
  // valid and re-reads from the file when touched. Throws Error(not_found) like at().
  void release(const std::string& name) const;

 private:
  explicit TorchCheckpoint(MappedFile file) : file_(std::move(file)) {}
  MappedFile file_;
  std::string archive_;
  std::map<std::string, TensorView> tensors_;
};

class TorchCheckpointWriter {
 public:
  struct Options {
    std::string archive_name;  // empty = the file's stem, as torch.save does
    bool force_zip64 = false;  // zip64 records everywhere, to test them without a 4 GiB file
  };
  explicit TorchCheckpointWriter(std::filesystem::path path)
      : TorchCheckpointWriter(std::move(path), Options{}) {}
  TorchCheckpointWriter(std::filesystem::path path, Options options);

  // A tensor with a storage of its own, written now. Throws Error(invalid_argument) for an empty
  // or repeated name, an unknown dtype, a negative dimension, or bytes != numel * dtype size.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
           size_t bytes);
  // A storage for several tensors (as torch saves views of one buffer), written now; returns its
  // key for add_view(). `bytes` must be a multiple of the dtype size.
  std::string add_storage(DType dtype, const void* data, size_t bytes);
  // A tensor viewing a storage from add_storage(): `storage_offset` and `stride` in elements; an
  // empty `stride` means row-major. Strides may be non-contiguous (as torch would save them; the
  // reader refuses those), but every element must lie inside the storage.
  void add_view(const std::string& name, const std::string& storage_key, int64_t storage_offset,
                const std::vector<int64_t>& shape, const std::vector<int64_t>& stride = {});
  // Writes data.pkl, byteorder, version and the zip directory, and moves the file into place.
  void finish();
  size_t size() const { return records_.size(); }

 private:
  struct Storage {
    DType dtype = DType::unknown;
    uint64_t numel = 0;
  };
  std::string write_storage(const std::string& subject, DType dtype, const void* data, size_t bytes);
  void check_name(const std::string& name) const;
  std::string archive_;
  ZipWriter zip_;
  std::map<std::string, Storage> storages_;
  std::vector<TorchTensorRecord> records_;
  std::map<std::string, size_t> names_;
};

}  // namespace mugv
