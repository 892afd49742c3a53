#pragma once
// A whole file mapped read-only (mmap PROT_READ, MAP_PRIVATE), for weight files that are read in
// place rather than copied: checkpoints of tens of gigabytes are paged in on demand by the kernel.
//
// Pages of a file mapping that have been touched count in the process's resident memory until
// the mapping goes away. A loader that copies weights tensor by tensor calls release_mapped_pages()
// on each tensor's bytes once copied, so resident memory stays near one tensor's size instead of
// growing to the whole file. Released pages are not lost: touching them again re-reads them from
// the file (usually from the page cache).
//
// MappedFile is move-only; pointers into data() stay valid while it lives. Reading and releasing
// are thread-safe. open() throws Error(not_found) for a missing file and Error(io) when the file
// cannot be opened, is not a regular file, or cannot be mapped, naming the path.

#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace mugv {

class MappedFile {
 public:
  [[nodiscard]] static MappedFile open(const std::filesystem::path& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::filesystem::path& path() const { return path_; }
  // nullptr for an empty file (which cannot be mapped).
  const uint8_t* data() const { return static_cast<const uint8_t*>(mapping_); }
  uint64_t size_bytes() const { return size_bytes_; }

 private:
  MappedFile() = default;
  void unmap() noexcept;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  uint64_t size_bytes_ = 0;
};

// Drops the resident pages that lie wholly inside [data, data + bytes) (madvise MADV_DONTNEED);
// the partial pages at either end are kept because a neighbouring tensor may be using them.
// Only for read-only private file mappings such as MappedFile's and SafetensorsFile's, where
// dropping a page cannot lose data. A no-op for ranges shorter than a page; never fails.
void release_mapped_pages(const void* data, size_t bytes) noexcept;

}  // namespace mugv
