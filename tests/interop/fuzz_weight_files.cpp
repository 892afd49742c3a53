// libFuzzer target: the readers of weight files people download (safetensors, torch.save zip checkpoints and
// their pickles, torch.save archives inside distributed checkpoints) must never crash, hang, read out of
// bounds or throw anything but mugv::Error on any bytes. A reader that accepts a file must hand out views
// that lie inside it: every accepted tensor's bytes are read here, so ASan sees a view that does not.
//
// Input: one selector byte (which reader, modulo the count below), then the file's bytes. The file readers
// take a path: the bytes go to a memfd opened through /proc/self/fd, so nothing touches the disk. A
// distributed checkpoint is a folder: its input is a 16-bit little-endian length, that many bytes of
// .metadata, and the rest as __0_0.distcp, written to a folder in /dev/shm (or the temporary folder).
#include "core/error.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/torch_pickle.h"
#include "core/zip_archive.h"
#include "interop/dist_checkpoint.h"
#include "interop/pickle.h"
#include "interop/torch_archive.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

enum Reader : uint8_t {
  safetensors = 0,
  torch_checkpoint,
  torch_pickle,
  pickle,
  torch_archive,
  zip,
  dist_checkpoint,
  count
};

// Sums every byte so the compiler cannot drop the reads.
volatile uint64_t g_sink = 0;
void touch(const uint8_t* data, size_t bytes) {
  uint64_t sum = 0;
  for (size_t i = 0; i < bytes; ++i) sum += data[i];
  g_sink = g_sink + sum;
}

// The bytes as a file: a memfd that lives until the returned descriptor is closed.
int memory_file(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz-weights", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) std::abort();
    written += size_t(n);
  }
  return fd;
}

template <class File>
void read_every_tensor(const File& file) {
  for (const std::string& name : file.names()) {
    const mugv::TensorView& view = file.at(name);
    if (view.size_bytes != 0 && view.data == nullptr) std::abort();
    touch(view.data, view.size_bytes);
  }
}

void read_file(Reader reader, const uint8_t* data, size_t size) {
  const int fd = memory_file(data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    if (reader == safetensors) {
      auto file = mugv::SafetensorsFile::open(path);
      read_every_tensor(file);
      for (const auto& [key, value] : file.metadata())
        touch(reinterpret_cast<const uint8_t*>(value.data()), value.size());
    } else {
      read_every_tensor(mugv::TorchCheckpoint::open(path));
    }
  } catch (const mugv::Error&) {
  }
  close(fd);
}

void read_archive(const uint8_t* data, size_t size) {
  const auto archive = mugv::TorchArchive::parse(data, size, "fuzz.pt");
  try {
    const auto tensors = archive.tensor_dict();
    for (const auto& [name, tensor] : tensors)
      if (tensor.bytes.size() != size_t(tensor.numel()) * mugv::dtype_size_bytes(tensor.dtype)) std::abort();
  } catch (const mugv::Error&) {
  }
  try {
    const auto tensor = archive.single_tensor();
    if (tensor.bytes.size() != size_t(tensor.numel()) * mugv::dtype_size_bytes(tensor.dtype)) std::abort();
  } catch (const mugv::Error&) {
  }
}

void read_zip(const uint8_t* data, size_t size) {
  const auto zip = mugv::ZipArchive::parse(data, size, "fuzz.zip");
  for (const auto& entry : zip.entries()) {
    try {
      zip.verify_crc(entry);
      touch(zip.data(entry), size_t(entry.size_bytes));
    } catch (const mugv::Error&) {
    }
  }
}

// One folder per process, rewritten for every input and removed at exit.
struct ScratchFolder {
  std::filesystem::path path;
  ScratchFolder() {
    const std::filesystem::path shm = "/dev/shm";
    path = (std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path()) /
           ("mugv-fuzz-dcp-" + std::to_string(getpid()));
    std::filesystem::create_directories(path);
  }
  ~ScratchFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!out) std::abort();
}

void read_dist_checkpoint(const uint8_t* data, size_t size) {
  static ScratchFolder folder;
  if (size < 2) return;
  const size_t metadata_bytes = std::min(size - 2, size_t(data[0]) | size_t(data[1]) << 8);
  write_file(folder.path / ".metadata", data + 2, metadata_bytes);
  write_file(folder.path / "__0_0.distcp", data + 2 + metadata_bytes, size - 2 - metadata_bytes);
  const auto reader = mugv::DistCheckpointReader::open(folder.path);
  for (const auto& [name, tensor] : reader.tensors()) {
    try {
      const auto read = reader.read(name);
      if (read.bytes.size() != size_t(read.numel()) * mugv::dtype_size_bytes(read.dtype)) std::abort();
    } catch (const mugv::Error&) {
    }
  }
  for (const auto& [name, object] : reader.objects()) {
    try {
      (void)reader.read_object(name);
    } catch (const mugv::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto reader = Reader(data[0] % Reader::count);
  ++data;
  --size;
  try {
    switch (reader) {
      case safetensors:
      case torch_checkpoint:
        read_file(reader, data, size);
        break;
      case torch_pickle:
        (void)mugv::parse_torch_pickle(data, size, "fuzz.pt");
        break;
      case pickle:
        (void)mugv::parse_pickle(data, size, "fuzz.pkl");
        break;
      case torch_archive:
        read_archive(data, size);
        break;
      case zip:
        read_zip(data, size);
        break;
      case dist_checkpoint:
        read_dist_checkpoint(data, size);
        break;
      default:
        std::abort();
    }
  } catch (const mugv::Error&) {
    // The contract: malformed input is an Error naming the file; anything else escaping is a bug.
  }
  return 0;
}
