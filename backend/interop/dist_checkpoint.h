#pragma once
// torch.distributed.checkpoint folders (DCP; Megatron's `torch_dist` checkpoints are these), read and
// written without Python or LibTorch. Sources: torch/distributed/checkpoint/filesystem.py (FileSystemWriter /
// FileSystemReader), metadata.py, planner_helpers.py; Megatron-LM megatron/core/dist_checkpointing/
// strategies/torch.py and filesystem_async.py (which write through the same _write_item).
//
// A folder holds:
//   .metadata            pickle.dump(Metadata) (protocol 4; 5 from Python 3.14), a dataclass with
//                          state_dict_metadata  {key: TensorStorageMetadata | BytesStorageMetadata}
//                              TensorStorageMetadata(properties=TensorProperties(dtype, ...),
//                                                    size=torch.Size, chunks=[ChunkStorageMetadata(
//                                                    offsets=torch.Size, sizes=torch.Size)])
//                          planner_data         anything (None for Megatron; not needed to read)
//                          storage_data         {MetadataIndex(fqn, offset=chunk offsets | None):
//                                                _StorageInfo(relative_path, offset, length)}
//                          storage_meta, version  (torch >= 2.4 / 2.6; not needed to read)
//   __<rank>_<n>.distcp  each rank's items appended one after another: a chunk of a tensor is
//                        torch.save(chunk) (a whole zip archive, torch_archive.h) at [offset, offset +
//                        length); a bytes item (Megatron: torch.save([objects]) of a ShardedObject) is its
//                        raw bytes
// What varies between torch versions and is accepted: TensorProperties pickled from
// torch.distributed._shard.sharded_tensor.metadata (torch <= 2.3, and Megatron's own ShardedTensor path) or
// torch.distributed.checkpoint.metadata (2.4+), with the enum MEM_FORMAT_ENCODING / _MEM_FORMAT_ENCODING;
// TensorProperties' state as its 5-tuple (__getstate__) or a dict; Metadata with or without storage_meta and
// version; _StorageInfo with or without transform_descriptors (2.6+: only empty ones are read).
//
// DistCheckpointReader::open() parses .metadata, maps every .distcp file it names and checks, before
// returning, that each tensor's chunks tile its global shape exactly and that every chunk and object lies
// inside its file. Reading decodes only the chunks asked for, so a 64 GB checkpoint is read one tensor (or
// one region of one tensor) at a time; pages of the mapped files are released once a chunk is copied.
// Errors name the file and, where there is one, the tensor:
//   Error(not_found)    the folder or its .metadata; a .distcp file the metadata names; an unknown key
//   Error(format)       .metadata is not that pickle (its parse errors, a missing field, a storage path
//                       outside the folder, a key or path over 4096 bytes, a shape, offsets or sizes of
//                       more than 64 dimensions); a chunk that is not a torch.save archive
//   Error(corrupt)      chunks that overlap, leave part of a tensor uncovered or reach outside it; a
//                       chunk without a storage entry, or two chunks at one offset; a .distcp file shorter
//                       than an item it should hold (truncated); two items (chunks or objects) sharing bytes
//                       of a file (DCP writes them one after another; the error names the file and both); a
//                       decoded chunk whose dtype or shape differs from the metadata; CRC errors inside a
//                       chunk
//   Error(unsupported)  a storage entry with stream transforms (compression extensions, torch 2.6+); a
//                       dtype torch_archive.h does not read; rank-local metadata only (__<rank>.metadata,
//                       written without collectives, is not looked for); more than 4096 chunks of one
//                       tensor split along three or more dimensions (checking their tiling is quadratic;
//                       chunks split along one or two dimensions are checked in n log n, any number)
//   Error(out_of_memory) a region whose bytes cannot be allocated
// The reader is move-only; reading is thread-safe.
//
// DistCheckpointWriter writes the same layout: each chunk as torch.save(chunk) appended to
// __<rank>_0.distcp when it is added (memory holds one chunk), objects as their raw bytes, and at finish()
// the .metadata, after checking that every tensor's chunks tile its shape. The .distcp files and then
// .metadata appear atomically (core/paths.h), so a folder with .metadata is complete. The pickle names
// TensorProperties and MEM_FORMAT_ENCODING from torch.distributed._shard.sharded_tensor.metadata, a module
// that holds both names in every torch release with this format, so every torch version reads it; Metadata
// carries state_dict_metadata, planner_data=None and storage_data (later fields default when absent).
// Misuse is Error(invalid_argument) naming the tensor; an existing checkpoint without Options::overwrite is
// Error(conflict); disk failures Error(io). Not thread-safe.

#include "core/mapped_file.h"
#include "core/safetensors.h"
#include "interop/torch_archive.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mugv {

class AtomicFileWriter;

// One stored piece of a tensor: the box [offsets, offsets + sizes) of the global tensor, saved at
// [file_offset, file_offset + length_bytes) of `file` (relative to the checkpoint folder).
struct DistChunk {
  std::vector<int64_t> offsets, sizes;
  std::string file;
  uint64_t file_offset = 0;
  uint64_t length_bytes = 0;
};

struct DistTensor {
  std::string name;
  DType dtype = DType::unknown;
  std::vector<int64_t> shape;
  std::vector<DistChunk> chunks;  // in the metadata's order
};

// A bytes item (BytesStorageMetadata): Megatron's ShardedObjects (`<key>/shard_<offset>_<shape>`: extra
// state, RNG state), each a torch.save of a list of objects.
struct DistObject {
  std::string name;
  std::string file;
  uint64_t file_offset = 0;
  uint64_t length_bytes = 0;
};

class DistCheckpointReader {
 public:
  [[nodiscard]] static DistCheckpointReader open(const std::filesystem::path& dir);

  DistCheckpointReader(DistCheckpointReader&&) noexcept;
  DistCheckpointReader& operator=(DistCheckpointReader&&) noexcept;
  ~DistCheckpointReader();

  const std::filesystem::path& dir() const { return dir_; }
  // Metadata.version ("1.0.0" from torch 2.6 on); empty when the writer did not record one.
  const std::string& version() const { return version_; }
  // Keyed by name (sorted).
  const std::map<std::string, DistTensor>& tensors() const { return tensors_; }
  const std::map<std::string, DistObject>& objects() const { return objects_; }
  // nullptr when there is no tensor of that name.
  const DistTensor* find(const std::string& name) const;

  // The whole tensor. Throws Error(not_found) for an unknown name.
  [[nodiscard]] TensorData read(const std::string& name) const;
  // The box [offsets, offsets + sizes) of the tensor, decoding only the chunks that meet it. Throws
  // Error(invalid_argument) for a box outside the tensor.
  [[nodiscard]] TensorData read_region(const std::string& name, const std::vector<int64_t>& offsets,
                                       const std::vector<int64_t>& sizes) const;
  // A bytes item as stored. Throws Error(not_found) for an unknown name.
  [[nodiscard]] std::string read_object(const std::string& name) const;

 private:
  DistCheckpointReader() = default;
  const MappedFile& file(const std::string& relative) const;
  std::filesystem::path dir_;
  std::string version_;
  std::map<std::string, DistTensor> tensors_;
  std::map<std::string, DistObject> objects_;
  std::map<std::string, MappedFile> files_;
};

class DistCheckpointWriter {
 public:
  struct Options {
    bool overwrite = false;  // replace a checkpoint already in the folder (its .metadata goes first)
  };
  explicit DistCheckpointWriter(std::filesystem::path dir)
      : DistCheckpointWriter(std::move(dir), Options{}) {}
  DistCheckpointWriter(std::filesystem::path dir, Options options);
  ~DistCheckpointWriter();
  DistCheckpointWriter(const DistCheckpointWriter&) = delete;
  DistCheckpointWriter& operator=(const DistCheckpointWriter&) = delete;

  // The box [offsets, offsets + sizes) of tensor `name` (global shape `shape`), `data` holding the box's
  // elements contiguously; appended to __<rank>_0.distcp now. Every chunk of a name must agree on dtype and
  // shape; a box must lie inside the shape and not repeat an offset already added.
  void add_chunk(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& offsets, const std::vector<int64_t>& sizes, const void* data,
                 size_t bytes, int rank = 0);
  // A whole tensor as one chunk.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                  size_t bytes, int rank = 0);
  // A bytes item stored as given (for Megatron: save_torch_object(list of objects)).
  void add_object(const std::string& name, const std::string& bytes, int rank = 0);
  // Checks every tensor's chunks tile it (Error(invalid_argument) naming the tensor otherwise; the reader's
  // limit on chunks split along three or more dimensions applies, Error(unsupported)), commits the
  // .distcp files and writes .metadata. Nothing can be added afterwards.
  void finish();

  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Pending {
    DType dtype = DType::unknown;
    std::vector<int64_t> shape;
    std::vector<DistChunk> chunks;
  };
  AtomicFileWriter& stream(int rank, std::string* relative);
  void check_name(const std::string& name) const;
  std::filesystem::path dir_;
  std::map<int, std::unique_ptr<AtomicFileWriter>> files_;
  std::map<std::string, Pending> tensors_;
  std::vector<std::string> tensor_order_;
  std::map<std::string, DistObject> objects_;
  std::vector<std::string> object_order_;
  bool finished_ = false;
};

}  // namespace mugv
