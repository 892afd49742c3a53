#pragma once
// torch.save archives held in memory, read and written without LibTorch: the single-tensor archives that
// torch.distributed.checkpoint writes for every tensor chunk of a `.distcp` file, the objects Megatron stores
// there (torch.save of a list), and small files such as Megatron's common.pt.
//
// Layout (torch/serialization.py _save / _load, caffe2/serialize/inline_container.cc): a zip of stored
// (uncompressed) entries under one top-level folder, the "archive name" ("archive" when saving to a stream):
//   <archive>/data.pkl       the pickled object (protocol 2, pickle.h); every tensor a REDUCE of
//                            torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
//                            requires_grad, backward_hooks[, metadata]), or _rebuild_tensor_v3(..., dtype
//                            [, metadata]) for the dtypes without a typed storage class (float8, uint16,
//                            ...); a storage is BINPERSID(('storage', torch.<Type>Storage |
//                            torch.UntypedStorage, key, location, numel)), numel in elements (bytes for
//                            UntypedStorage)
//   <archive>/data/<key>     the storage's raw bytes, aligned to 64 bytes from the archive's start
//   <archive>/byteorder      "little" (absent before torch 1.13: little-endian then too)
//   <archive>/version        "3\n"; newer torch also writes .format_version, .storage_alignment and
//                            .data/serialization_id, which are not needed to read the data
// The zip reader is core/zip_archive.h (zip64 included); torch's local headers with data descriptors are
// read through the central directory.
//
// TorchArchive validates the zip and data.pkl (its CRC and its pickle) on parse; a tensor's storage is
// checked (present, long enough, CRC) when the tensor is decoded. Errors name `subject`:
//   Error(format)       not a zip, no <archive>/data.pkl, a pickle that is not what torch.save writes for
//                       the value asked for (a tensor, a dict of tensors)
//   Error(corrupt)      a CRC mismatch, a missing or short storage, a view past the end of its storage
//   Error(unsupported)  big-endian data, a dtype without a DType here (complex, bits, fnuz float8); a view
//                       that reads its storage's elements over and over (stride 0: an expanded tensor)
//                       and would take more than 64 MiB and more than 64 times its storage's bytes once
//                       made contiguous (header() refuses it too)
//   Error(out_of_memory) a tensor whose contiguous bytes cannot be allocated
// A TorchArchive does not own the bytes passed to parse(): they must outlive it. Reading is thread-safe.
//
// TorchArchiveWriter builds such an archive in memory, as torch.save(obj, buffer) does: data.pkl, byteorder,
// data/<key> for each tensor's storage (64-byte aligned through the zip extra field torch uses), version.
// Entries are stored with correct CRC-32s and local sizes (no data descriptors), which every zip reader and
// torch.load accept. Archives over 4 GiB (zip64) are not written: Error(unsupported). Not thread-safe.

#include "core/safetensors.h"
#include "core/torch_pickle.h"  // torch's names for dtypes and storage classes
#include "core/zip_archive.h"
#include "interop/pickle.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv {

// A tensor's elements, contiguous (row-major) and little-endian.
struct TensorData {
  DType dtype = DType::unknown;
  std::vector<int64_t> shape;  // empty = scalar
  std::vector<uint8_t> bytes;  // numel() * dtype_size_bytes(dtype)
  int64_t numel() const;
};

struct TorchTensorHeader {
  DType dtype = DType::unknown;
  std::vector<int64_t> shape;
};

class TorchArchive {
 public:
  [[nodiscard]] static TorchArchive parse(const uint8_t* bytes, uint64_t size_bytes, std::string subject);

  const std::string& subject() const { return subject_; }
  const std::string& archive_name() const { return archive_; }
  // data.pkl's root value.
  const PickleRef& root() const { return root_; }

  // True for a value torch.save writes for a tensor (a _rebuild_tensor_v2 / _v3 call, or a Parameter
  // around one).
  [[nodiscard]] static bool is_tensor(const PickleValue& value);
  // The dtype and shape of the tensor `value` stands for, after checking its view lies inside its storage's
  // declared size; no tensor bytes are touched. `what` names it in errors.
  [[nodiscard]] TorchTensorHeader header(const PickleValue& value, const std::string& what) const;
  // The tensor `value` stands for, its elements gathered into contiguous bytes (any strides and storage
  // offset torch.save can write). `what` names it in errors.
  [[nodiscard]] TensorData tensor(const PickleValue& value, const std::string& what) const;
  // The root, which must be a tensor (torch.save(tensor)).
  [[nodiscard]] TensorData single_tensor() const;
  // The root, which must be a dict or OrderedDict with str keys: its tensors in order. Values that are not
  // tensors (None, numbers, nested objects) are skipped. Error(unsupported) when they would take more than
  // 64 times the archive's bytes (and 64 MiB) together: one stored tensor under many keys.
  [[nodiscard]] std::vector<std::pair<std::string, TensorData>> tensor_dict() const;

 private:
  struct View {
    DType dtype = DType::unknown;
    std::vector<int64_t> shape, stride;
    int64_t offset = 0;
    std::string key;
    uint64_t storage_numel = 0;
  };
  View view(const PickleValue& value, const std::string& what) const;
  TorchArchive(ZipArchive zip, std::string subject) : zip_(std::move(zip)), subject_(std::move(subject)) {}
  ZipArchive zip_;
  std::string subject_;
  std::string archive_;
  PickleRef root_;
};

class TorchArchiveWriter {
 public:
  explicit TorchArchiveWriter(std::string archive_name = "archive");

  // Stores a contiguous tensor's bytes as a storage of its own and returns the value torch.save writes for
  // the tensor, to be placed anywhere in the root passed to finish(). Throws Error(invalid_argument) for an
  // unknown dtype, a negative dimension, or `bytes` != numel * dtype size.
  PickleRef add_tensor(DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes);
  // The archive bytes with `root` as data.pkl. The writer cannot be used afterwards.
  [[nodiscard]] std::string finish(const PickleRef& root);

 private:
  std::string archive_;
  std::vector<std::pair<std::string, std::string>> storages_;  // key, bytes
  bool finished_ = false;
};

// torch.save(tensor) of a contiguous tensor, as bytes.
[[nodiscard]] std::string save_torch_tensor(DType dtype, const std::vector<int64_t>& shape, const void* data,
                                            size_t bytes);
// torch.save(obj) of an object holding no tensors, as bytes.
[[nodiscard]] std::string save_torch_object(const PickleRef& root);

}  // namespace mugv
