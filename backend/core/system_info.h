#pragma once
// Facts about this process and machine for `mugv doctor`: the shared libraries mapped into the process, free
// disk space, programs on PATH. Linux (/proc, statvfs); each says "cannot tell" (empty, nullopt) rather
// than guessing. Thread-safe.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

// The shared objects mapped into this process (/proc/self/maps), each once, in the order first mapped. A
// library reached through a symlink (Debian's alternatives for libblas.so.3) appears as the file it
// resolves to.
[[nodiscard]] std::vector<fs::path> mapped_libraries();

// Bytes an unprivileged user can still write on the file system holding `path` (statvfs f_bavail).
[[nodiscard]] std::optional<int64_t> free_disk_bytes(const fs::path& path);

// The first executable `name` in the folders of PATH; nullopt when none.
[[nodiscard]] std::optional<fs::path> find_program(const std::string& name);

}  // namespace mugv
