#pragma once
// The subset of the zip format (PKWARE APPNOTE.TXT 6.3.x: 4.3 layout, 4.4 fields, 4.5.3 zip64
// extra field) that torch.save uses for its checkpoints: entries stored uncompressed, read in
// place from a mapping, archives larger than 4 GiB through zip64 records.
//
// ZipArchive indexes an archive held in memory (usually a MappedFile) from its central directory
// and reads each entry's LOCAL header for the data offset, because the local extra field (torch
// pads it so data starts 64-byte aligned) differs in length from the central one. The bytes
// passed to parse() must outlive the ZipArchive. Reading is thread-safe. CRCs are not checked on
// parse (that would read every byte of a 20 GB checkpoint); verify_crc() checks one entry on
// request. Errors name `subject` (the file): Error(format) for something that is no zip or a
// malformed directory, Error(corrupt) for a directory or entry that points past the end of the
// file (truncation), Error(unsupported) for compressed, encrypted or multi-disk archives.
//
// ZipWriter streams an archive to disk: each entry's bytes are written when added, the central
// directory at finish(). Entries are stored (method 0) with correct CRC-32 values; each entry's
// data starts at a multiple of the alignment (padding in the local extra field, as torch does, so
// a reader may map tensors in place). Zip64 fields are written for entries and directories that
// need them, or everywhere with force_zip64 (to test the zip64 paths without writing 4 GiB). The
// file appears atomically at finish() (core/paths.h AtomicFileWriter); destroying an unfinished
// writer leaves nothing behind. Failures throw Error(io) naming the path. Not thread-safe.

#include "core/paths.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// The CRC-32 of zip (ISO-HDLC polynomial 0xEDB88320); pass a previous result as `crc` to continue.
[[nodiscard]] uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

// True when `bytes` starts like a zip archive (a local file header, or the end record of an
// empty archive).
[[nodiscard]] bool looks_like_zip(const uint8_t* bytes, uint64_t size_bytes);

struct ZipEntry {
  std::string name;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the entry's data within the archive
  uint64_t size_bytes = 0;   // uncompressed
  uint64_t compressed_size_bytes = 0;
  uint16_t method = 0;  // 0 = stored
  uint16_t flags = 0;
  uint32_t crc32 = 0;
};

class ZipArchive {
 public:
  [[nodiscard]] static ZipArchive parse(const uint8_t* bytes, uint64_t size_bytes, std::string subject);

  // In central directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when there is no entry of that name.
  const ZipEntry* find(std::string_view name) const;
  // The entry's bytes in place. Throws Error(unsupported) for a compressed or encrypted entry.
  const uint8_t* data(const ZipEntry& entry) const;
  // Throws Error(corrupt) naming the entry when its bytes do not match the CRC-32 recorded.
  void verify_crc(const ZipEntry& entry) const;
  const std::string& subject() const { return subject_; }

 private:
  const uint8_t* bytes_ = nullptr;
  uint64_t size_bytes_ = 0;
  std::string subject_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t, std::less<>> by_name_;
};

class ZipWriter {
 public:
  struct Options {
    uint32_t alignment_bytes = 64;  // a power of two, at most 4096
    bool force_zip64 = false;
  };
  explicit ZipWriter(std::filesystem::path path) : ZipWriter(std::move(path), Options{}) {}
  ZipWriter(std::filesystem::path path, Options options);

  // Writes the entry now. Throws Error(invalid_argument) for an empty, over-long or repeated name.
  void add(const std::string& name, const void* data, size_t bytes);
  // Writes the central directory and moves the file into place. Nothing can be added afterwards.
  void finish();
  const std::filesystem::path& path() const { return out_.path(); }
  uint64_t bytes_written() const { return out_.bytes_written(); }

 private:
  struct Written {
    std::string name;
    uint64_t local_header_offset;
    uint64_t size_bytes;
    uint32_t crc32;
  };
  Options options_;
  AtomicFileWriter out_;
  std::vector<Written> written_;
  std::map<std::string, size_t> names_;
  bool finished_ = false;
};

}  // namespace mugv
