#include "core/paths.h"

#include "core/error.h"
#include "core/strings.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mugv {
namespace {

std::optional<fs::path> env_path(const char* name) {
  const char* value = std::getenv(name);
  if (value && *value) return fs::path(value);
  return std::nullopt;
}

fs::path user_home() {
  if (auto home = env_path("HOME")) return *home;
  return fs::temp_directory_path();
}

}  // namespace

fs::path mugv_home() {
  if (auto home = env_path("MUGV_HOME")) return *home;
  if (auto xdg = env_path("XDG_DATA_HOME")) return *xdg / "mugv";
  return user_home() / ".local" / "share" / "mugv";
}

fs::path catalog_path() {
  return mugv_home() / "catalog.sqlite";
}

fs::path runtime_dir() {
  if (auto xdg = env_path("XDG_RUNTIME_DIR")) return *xdg / "mugv";
  return fs::temp_directory_path() / cat("mugv-", ::getuid());
}

fs::path executable_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe;
}

fs::path user_preset_dir() {
  return mugv_home() / "presets";
}

std::vector<fs::path> preset_dirs() {
  std::vector<fs::path> dirs;
  // $MUGV_PRESETS replaces the built-in presets (installed or source tree) rather than adding to them.
  if (auto env = env_path("MUGV_PRESETS")) {
    dirs.push_back(*env);
    dirs.push_back(user_preset_dir());
    return dirs;
  }
  dirs.push_back(user_preset_dir());
  fs::path exe = executable_path();
  if (!exe.empty()) {
    fs::path installed = exe.parent_path().parent_path() / "share" / "mugv" / "presets";
    if (fs::is_directory(installed)) dirs.push_back(installed);
  }
#ifdef MUGV_SOURCE_PRESETS_DIR
  dirs.push_back(MUGV_SOURCE_PRESETS_DIR);
#endif
  return dirs;
}

void ensure_private_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorCode::io, dir.string(), "cannot create directory: " + ec.message());
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(ErrorCode::io, dir.string(), "not a directory");
  if (st.st_uid != ::getuid())
    throw Error(ErrorCode::io, dir.string(), "owned by another user; refusing to use it for private files");
  if (::chmod(dir.c_str(), 0700) != 0)
    throw Error(ErrorCode::io, dir.string(), std::string("cannot set mode 0700: ") + std::strerror(errno));
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  temp_path_ = (dir / ("." + path_.filename().string() + ".tmp-XXXXXX")).string();
  fd_ = ::mkstemp(temp_path_.data());
  if (fd_ < 0) {
    int err = errno;
    temp_path_.clear();
    throw Error(ErrorCode::io, path_.string(), std::string("cannot create: ") + std::strerror(err));
  }
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(other.fd_),
      bytes_written_(other.bytes_written_) {
  other.fd_ = -1;
  other.temp_path_.clear();
}

AtomicFileWriter::~AtomicFileWriter() {
  discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

void AtomicFileWriter::write(const void* bytes, size_t size) {
  if (fd_ < 0) throw Error(ErrorCode::internal, path_.string(), "write after commit or failure");
  const char* p = static_cast<const char*>(bytes);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      discard();
      throw Error(ErrorCode::io, path_.string(), std::string("write failed: ") + std::strerror(err));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  bytes_written_ += size;
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw Error(ErrorCode::internal, path_.string(), "commit after commit or failure");
  ::fchmod(fd_, 0644);
  int err = ::fsync(fd_) != 0 ? errno : 0;
  if (::close(fd_) != 0 && err == 0) err = errno;
  fd_ = -1;
  if (err != 0) {
    discard();
    throw Error(ErrorCode::io, path_.string(), std::string("fsync failed: ") + std::strerror(err));
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    discard();
    throw Error(ErrorCode::io, path_.string(), std::string("rename failed: ") + std::strerror(err));
  }
  temp_path_.clear();
  // Persist the rename itself.
  fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const fs::path& path, const void* bytes, size_t size) {
  AtomicFileWriter writer(path);
  writer.write(bytes, size);
  writer.commit();
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(ErrorCode::io, path.string(), "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path, ec)) throw Error(ErrorCode::not_found, path.string(), "no such file");
    throw Error(ErrorCode::io, path.string(), "cannot open for reading (permissions?)");
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace mugv
