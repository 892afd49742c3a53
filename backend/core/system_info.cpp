#include "core/system_info.h"

#include "core/strings.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace mugv {

std::vector<fs::path> mapped_libraries() {
  std::vector<fs::path> libraries;
  std::ifstream maps("/proc/self/maps");
  // "start-end perms offset dev inode   /path": the path is the text from the first '/'.
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const fs::path file = line.substr(slash);
    if (file.filename().string().find(".so") == std::string::npos) continue;
    if (std::find(libraries.begin(), libraries.end(), file) == libraries.end()) libraries.push_back(file);
  }
  return libraries;
}

std::optional<int64_t> free_disk_bytes(const fs::path& path) {
  struct statvfs s {};
  if (statvfs(path.c_str(), &s) != 0) return std::nullopt;
  return static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
}

std::optional<fs::path> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path || name.empty() || name.find('/') != std::string::npos) return std::nullopt;
  for (const std::string& dir : split(path, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

}  // namespace mugv
