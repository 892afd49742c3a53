#include "core/zip_archive.h"

#include "core/error.h"
#include "core/strings.h"

#include <array>
#include <cstring>
#include <utility>

namespace mugv {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
// torch's padding field ("FB"); readers skip extra fields they do not know.
constexpr uint16_t kPaddingExtraId = 0x4246;
constexpr size_t kLocalHeaderBytes = 30;
constexpr size_t kCentralHeaderBytes = 46;
constexpr size_t kEndBytes = 22;
constexpr size_t kZip64EndBytes = 56;
constexpr size_t kZip64LocatorBytes = 20;
constexpr uint32_t kSaturated32 = 0xffffffff;
constexpr uint16_t kSaturated16 = 0xffff;
constexpr uint16_t kFlagEncrypted = 0x0001;
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint16_t kVersionDefault = 20;
constexpr uint16_t kVersionZip64 = 45;
constexpr uint16_t kMadeByUnix = 3 << 8;
constexpr uint16_t kDate1980 = (1 << 5) | 1;  // 1980-01-01: fixed, so equal inputs give equal files
constexpr uint32_t kRegularFile0644 = 0100644u << 16;

uint16_t rd16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t rd64(const uint8_t* p) {
  return uint64_t(rd32(p)) | uint64_t(rd32(p + 4)) << 32;
}

void put16(std::string& out, uint16_t v) {
  out += static_cast<char>(v & 0xff);
  out += static_cast<char>(v >> 8);
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v & 0xffff));
  put16(out, static_cast<uint16_t>(v >> 16));
}
void put64(std::string& out, uint64_t v) {
  put32(out, static_cast<uint32_t>(v & 0xffffffff));
  put32(out, static_cast<uint32_t>(v >> 32));
}

// Slicing-by-8: the CRC of a multi-gigabyte checkpoint written by ZipWriter should not be
// slower than the disk.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;
CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (size_t k = 1; k < 8; ++k)
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
}

}  // namespace

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const CrcTables t = make_crc_tables();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; bytes >= 8; bytes -= 8, p += 8) {
    uint32_t lo = c ^ rd32(p);
    uint32_t hi = rd32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; bytes > 0; --bytes, ++p) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return ~c;
}

bool looks_like_zip(const uint8_t* bytes, uint64_t size_bytes) {
  if (!bytes || size_bytes < 4) return false;
  uint32_t signature = rd32(bytes);
  return signature == kLocalHeaderSignature || signature == kEndSignature;
}

// ---- reader ----

ZipArchive ZipArchive::parse(const uint8_t* bytes, uint64_t size_bytes, std::string subject) {
  ZipArchive archive;
  archive.bytes_ = bytes;
  archive.size_bytes_ = size_bytes;
  archive.subject_ = std::move(subject);
  auto fail = [&](ErrorCode code, const std::string& message) {
    return Error(code, archive.subject_, message);
  };
  const bool zip_start = looks_like_zip(bytes, size_bytes);

  // The end record is the last 22 bytes plus a comment of up to 64 KiB; search backwards.
  uint64_t end = UINT64_MAX;
  if (size_bytes >= kEndBytes) {
    const uint64_t lowest = size_bytes - kEndBytes > 0xffff ? size_bytes - kEndBytes - 0xffff : 0;
    for (uint64_t pos = size_bytes - kEndBytes + 1; pos-- > lowest;) {
      if (rd32(bytes + pos) == kEndSignature && pos + kEndBytes + rd16(bytes + pos + 20) <= size_bytes) {
        end = pos;
        break;
      }
    }
  }
  if (end == UINT64_MAX) {
    if (zip_start)
      throw fail(ErrorCode::corrupt, cat("no zip end of central directory record in the ", size_bytes,
                                         "-byte file (truncated?)"));
    throw fail(ErrorCode::format, "not a zip archive");
  }
  const uint8_t* e = bytes + end;
  uint64_t count = rd16(e + 10);
  uint64_t directory_bytes = rd32(e + 12);
  uint64_t directory_offset = rd32(e + 16);
  uint64_t directory_limit = end;
  if (end >= kZip64LocatorBytes && rd32(e - kZip64LocatorBytes) == kZip64LocatorSignature) {
    const uint8_t* locator = e - kZip64LocatorBytes;
    uint64_t record = rd64(locator + 8);
    if (rd32(locator + 4) != 0 || rd32(locator + 16) > 1)
      throw fail(ErrorCode::unsupported, "multi-disk (split) zip archives are not supported");
    if (record > end - kZip64LocatorBytes || end - kZip64LocatorBytes - record < kZip64EndBytes)
      throw fail(ErrorCode::corrupt, cat("zip64 end of central directory record offset ", record,
                                         " is not before its locator at ", end - kZip64LocatorBytes));
    const uint8_t* r = bytes + record;
    if (rd32(r) != kZip64EndSignature)
      throw fail(ErrorCode::corrupt, cat("no zip64 end of central directory record at offset ", record));
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0)
      throw fail(ErrorCode::unsupported, "multi-disk (split) zip archives are not supported");
    count = rd64(r + 32);
    directory_bytes = rd64(r + 40);
    directory_offset = rd64(r + 48);
    directory_limit = record;
  } else if (rd16(e + 4) != 0 || rd16(e + 6) != 0) {
    throw fail(ErrorCode::unsupported, "multi-disk (split) zip archives are not supported");
  } else if (count == kSaturated16 || directory_bytes == kSaturated32 || directory_offset == kSaturated32) {
    throw fail(ErrorCode::corrupt, "the end record asks for zip64 values but there is no zip64 locator");
  }
  if (directory_offset > directory_limit || directory_bytes > directory_limit - directory_offset)
    throw fail(ErrorCode::corrupt,
               cat("central directory (", directory_bytes, " bytes at offset ", directory_offset,
                   ") extends past its end record at ", directory_limit, " (truncated or damaged file?)"));
  if (count > directory_bytes / kCentralHeaderBytes)
    throw fail(ErrorCode::corrupt,
               cat("central directory of ", directory_bytes, " bytes cannot hold ", count, " entries"));

  const uint8_t* p = bytes + directory_offset;
  const uint8_t* directory_end = p + directory_bytes;
  archive.entries_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (directory_end - p < static_cast<ptrdiff_t>(kCentralHeaderBytes))
      throw fail(ErrorCode::corrupt, cat("central directory ends inside entry ", i));
    if (rd32(p) != kCentralHeaderSignature)
      throw fail(ErrorCode::corrupt, cat("central directory entry ", i, " has no valid signature"));
    const size_t name_bytes = rd16(p + 28);
    const size_t extra_bytes = rd16(p + 30);
    const size_t comment_bytes = rd16(p + 32);
    if (static_cast<size_t>(directory_end - p) <
        kCentralHeaderBytes + name_bytes + extra_bytes + comment_bytes)
      throw fail(ErrorCode::corrupt, cat("central directory ends inside entry ", i));
    ZipEntry entry;
    entry.flags = rd16(p + 8);
    entry.method = rd16(p + 10);
    entry.crc32 = rd32(p + 16);
    entry.compressed_size_bytes = rd32(p + 20);
    entry.size_bytes = rd32(p + 24);
    entry.local_header_offset = rd32(p + 42);
    entry.name.assign(reinterpret_cast<const char*>(p + kCentralHeaderBytes), name_bytes);
    const std::string where = "entry '" + entry.name + "': ";
    if (rd16(p + 34) != 0 && rd16(p + 34) != kSaturated16)
      throw fail(ErrorCode::unsupported, where + "multi-disk (split) zip archives are not supported");

    // Zip64 extra field: 8-byte values for exactly the 32-bit fields that are saturated, in order.
    const uint8_t* x = p + kCentralHeaderBytes + name_bytes;
    const uint8_t* x_end = x + extra_bytes;
    while (x_end - x >= 4) {
      const uint16_t id = rd16(x);
      const size_t len = rd16(x + 2);
      const uint8_t* field = x + 4;
      if (static_cast<size_t>(x_end - field) < len)
        throw fail(ErrorCode::format, where + "extra field overruns");
      if (id == kZip64ExtraId) {
        const uint8_t* v = field;
        auto take = [&](uint64_t& value) {
          if (value != kSaturated32) return;
          if (field + len - v < 8) throw fail(ErrorCode::format, where + "zip64 extra field is too short");
          value = rd64(v);
          v += 8;
        };
        take(entry.size_bytes);
        take(entry.compressed_size_bytes);
        take(entry.local_header_offset);
      }
      x = field + len;
    }

    if (entry.method == 0 && entry.size_bytes != entry.compressed_size_bytes)
      throw fail(ErrorCode::format, cat(where, "stored entry has size ", entry.size_bytes,
                                        " but compressed size ", entry.compressed_size_bytes));
    const uint64_t lho = entry.local_header_offset;
    if (lho > size_bytes || size_bytes - lho < kLocalHeaderBytes)
      throw fail(ErrorCode::corrupt, cat(where, "local header at offset ", lho, " is beyond the end of the ",
                                         size_bytes, "-byte file (truncated?)"));
    const uint8_t* local = bytes + lho;
    if (rd32(local) != kLocalHeaderSignature)
      throw fail(ErrorCode::corrupt, cat(where, "no local header at offset ", lho));
    const uint64_t local_name_bytes = rd16(local + 26);
    if (local_name_bytes != name_bytes ||
        (lho + kLocalHeaderBytes + name_bytes <= size_bytes &&
         std::memcmp(local + kLocalHeaderBytes, entry.name.data(), name_bytes) != 0))
      throw fail(ErrorCode::corrupt, cat(where, "the local header at offset ", lho, " names another entry"));
    entry.data_offset = lho + kLocalHeaderBytes + local_name_bytes + rd16(local + 28);
    if (entry.data_offset > size_bytes || entry.compressed_size_bytes > size_bytes - entry.data_offset)
      throw fail(ErrorCode::corrupt,
                 cat(where, entry.compressed_size_bytes, " bytes at offset ", entry.data_offset,
                     " extend beyond the end of the ", size_bytes, "-byte file (truncated?)"));
    if (!archive.by_name_.emplace(entry.name, archive.entries_.size()).second)
      throw fail(ErrorCode::format, where + "appears twice in the central directory");
    archive.entries_.push_back(std::move(entry));
    p += kCentralHeaderBytes + name_bytes + extra_bytes + comment_bytes;
  }
  return archive;
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& entry) const {
  if (entry.flags & kFlagEncrypted)
    throw Error(ErrorCode::unsupported, subject_, "entry '" + entry.name + "' is encrypted");
  if (entry.method != 0)
    throw Error(ErrorCode::unsupported, subject_,
                cat("entry '", entry.name, "' is compressed (method ", entry.method,
                    "); only stored entries are read in place, as torch.save writes them"));
  return bytes_ + entry.data_offset;
}

void ZipArchive::verify_crc(const ZipEntry& entry) const {
  uint32_t actual = crc32(data(entry), entry.size_bytes);
  if (actual != entry.crc32)
    throw Error(ErrorCode::corrupt, subject_,
                cat("entry '", entry.name, "' fails its CRC-32 check (damaged file?)"));
}

// ---- writer ----

ZipWriter::ZipWriter(std::filesystem::path path, Options options) : options_(options), out_(std::move(path)) {
  const uint32_t a = options_.alignment_bytes;
  if (a == 0 || (a & (a - 1)) != 0 || a > 4096)
    throw Error(ErrorCode::invalid_argument, out_.path().string(),
                cat("zip alignment ", a, " is not a power of two up to 4096"));
}

void ZipWriter::add(const std::string& name, const void* data, size_t bytes) {
  const std::string subject = out_.path().string();
  if (finished_) throw Error(ErrorCode::internal, subject, "entry '" + name + "' added after finish()");
  if (name.empty() || name.size() > 0xffff)
    throw Error(ErrorCode::invalid_argument, subject, cat("zip entry name of ", name.size(), " bytes"));
  if (names_.count(name))
    throw Error(ErrorCode::invalid_argument, subject, "zip entry '" + name + "' added twice");

  const uint32_t crc = crc32(data, bytes);
  const uint64_t offset = out_.bytes_written();
  const bool zip64 = options_.force_zip64 || bytes >= kSaturated32;
  const uint64_t fixed = kLocalHeaderBytes + name.size() + (zip64 ? 20 : 0) + 4;
  const uint32_t padding = static_cast<uint32_t>(
      (options_.alignment_bytes - (offset + fixed) % options_.alignment_bytes) % options_.alignment_bytes);
  std::string header;
  put32(header, kLocalHeaderSignature);
  put16(header, zip64 ? kVersionZip64 : kVersionDefault);
  put16(header, kFlagUtf8);
  put16(header, 0);  // stored
  put16(header, 0);  // time
  put16(header, kDate1980);
  put32(header, crc);
  put32(header, zip64 ? kSaturated32 : static_cast<uint32_t>(bytes));
  put32(header, zip64 ? kSaturated32 : static_cast<uint32_t>(bytes));
  put16(header, static_cast<uint16_t>(name.size()));
  put16(header, static_cast<uint16_t>((zip64 ? 20 : 0) + 4 + padding));
  header += name;
  if (zip64) {
    // In a local header the zip64 field holds both sizes (APPNOTE 4.5.3).
    put16(header, kZip64ExtraId);
    put16(header, 16);
    put64(header, bytes);
    put64(header, bytes);
  }
  put16(header, kPaddingExtraId);
  put16(header, static_cast<uint16_t>(padding));
  header.append(padding, 'Z');
  out_.write(header.data(), header.size());
  if (bytes) out_.write(data, bytes);
  names_.emplace(name, written_.size());
  written_.push_back(Written{name, offset, bytes, crc});
}

void ZipWriter::finish() {
  if (finished_) throw Error(ErrorCode::internal, out_.path().string(), "finish() called twice");
  const bool force = options_.force_zip64;
  const uint64_t directory_offset = out_.bytes_written();
  bool any_zip64 = force;
  std::string directory;
  for (const Written& w : written_) {
    const bool size64 = force || w.size_bytes >= kSaturated32;
    const bool offset64 = force || w.local_header_offset >= kSaturated32;
    any_zip64 = any_zip64 || size64 || offset64;
    std::string extra;
    if (size64 || offset64) {
      put16(extra, kZip64ExtraId);
      put16(extra, static_cast<uint16_t>(8 * ((size64 ? 2 : 0) + (offset64 ? 1 : 0))));
      if (size64) {
        put64(extra, w.size_bytes);
        put64(extra, w.size_bytes);
      }
      if (offset64) put64(extra, w.local_header_offset);
    }
    put32(directory, kCentralHeaderSignature);
    put16(directory, kMadeByUnix | kVersionZip64);
    put16(directory, size64 || offset64 ? kVersionZip64 : kVersionDefault);
    put16(directory, kFlagUtf8);
    put16(directory, 0);
    put16(directory, 0);
    put16(directory, kDate1980);
    put32(directory, w.crc32);
    put32(directory, size64 ? kSaturated32 : static_cast<uint32_t>(w.size_bytes));
    put32(directory, size64 ? kSaturated32 : static_cast<uint32_t>(w.size_bytes));
    put16(directory, static_cast<uint16_t>(w.name.size()));
    put16(directory, static_cast<uint16_t>(extra.size()));
    put16(directory, 0);  // comment
    put16(directory, 0);  // disk
    put16(directory, 0);  // internal attributes
    put32(directory, kRegularFile0644);
    put32(directory, offset64 ? kSaturated32 : static_cast<uint32_t>(w.local_header_offset));
    directory += w.name;
    directory += extra;
  }
  const uint64_t directory_bytes = directory.size();
  const uint64_t count = written_.size();
  const bool count64 = force || count >= kSaturated16;
  const bool directory64 = force || directory_bytes >= kSaturated32 || directory_offset >= kSaturated32;
  if (any_zip64 || count64 || directory64) {
    const uint64_t record = directory_offset + directory_bytes;
    put32(directory, kZip64EndSignature);
    put64(directory, kZip64EndBytes - 12);  // size of the rest of the record
    put16(directory, kMadeByUnix | kVersionZip64);
    put16(directory, kVersionZip64);
    put32(directory, 0);
    put32(directory, 0);
    put64(directory, count);
    put64(directory, count);
    put64(directory, directory_bytes);
    put64(directory, directory_offset);
    put32(directory, kZip64LocatorSignature);
    put32(directory, 0);
    put64(directory, record);
    put32(directory, 1);
  }
  put32(directory, kEndSignature);
  put16(directory, 0);
  put16(directory, 0);
  put16(directory, count64 ? kSaturated16 : static_cast<uint16_t>(count));
  put16(directory, count64 ? kSaturated16 : static_cast<uint16_t>(count));
  put32(directory, directory64 ? kSaturated32 : static_cast<uint32_t>(directory_bytes));
  put32(directory, directory64 ? kSaturated32 : static_cast<uint32_t>(directory_offset));
  put16(directory, 0);
  out_.write(directory.data(), directory.size());
  out_.commit();
  finished_ = true;
}

}  // namespace mugv
