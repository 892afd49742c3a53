#pragma once
// Where MUG-V keeps things on disk. All functions are pure lookups except ensure_private_dir.
//   home      $MUGV_HOME, else $XDG_DATA_HOME/mugv, else ~/.local/share/mugv
//   runtime   $XDG_RUNTIME_DIR/mugv, else /tmp/mugv-<uid>  (ipc sockets; created 0700)
//   presets   $MUGV_PRESETS (replacing the built-ins), else <prefix>/share/mugv/presets next to the binary,
//             else the source tree's presets/ (developer builds)

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

fs::path mugv_home();
fs::path catalog_path();  // home/catalog.sqlite
fs::path runtime_dir();
std::vector<fs::path> preset_dirs();  // search order: first match wins
fs::path user_preset_dir();           // home/presets: user overrides, searched before the built-ins
fs::path executable_path();

// Creates `dir` (and parents) and sets mode 0700; throws Error(io) naming dir when it cannot,
// or when an existing dir is owned by someone else.
void ensure_private_dir(const fs::path& dir);

// Streams a file into place atomically: bytes go to a hidden temporary file in the target's
// directory; commit() fsyncs it, renames it over `path` and fsyncs the directory. Until commit()
// succeeds the old file (if any) is untouched; destroying an uncommitted writer deletes the
// temporary. Move-only; not thread-safe. Every failure throws Error(io) naming `path`.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(fs::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* bytes, size_t size);
  void commit();
  const fs::path& path() const { return path_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  void discard() noexcept;
  fs::path path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t bytes_written_ = 0;
};

// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
// Readers see either the old file or the new one, never a partial write.
void write_file_atomic(const fs::path& path, const void* bytes, size_t size);
void write_text_atomic(const fs::path& path, const std::string& text);
std::string read_text_file(const fs::path& path);

}  // namespace mugv
