#include "service/home_lock.h"

#include "core/error.h"
#include "core/strings.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace mugv {

namespace {

std::filesystem::path lock_path(const std::filesystem::path& home) {
  return home / "server.lock";
}

// The holder as written by HomeLock: the pid on the first line, then one endpoint per line.
HomeServer read_holder(int fd) {
  std::string text;
  char buffer[512];
  for (ssize_t n, at = 0; (n = ::pread(fd, buffer, sizeof buffer, at)) > 0; at += n)
    text.append(buffer, static_cast<size_t>(n));
  HomeServer holder;
  const auto lines = split(text, '\n');
  if (!lines.empty()) holder.pid = std::strtol(lines.front().c_str(), nullptr, 10);
  for (size_t i = 1; i < lines.size(); ++i)
    if (!trim(lines[i]).empty()) holder.endpoints.push_back(trim(lines[i]));
  return holder;
}

std::string describe(const HomeServer& holder) {
  std::string text = holder.pid > 0 ? cat("pid ", holder.pid) : std::string("pid unknown");
  if (!holder.endpoints.empty()) text += ", serving on";
  for (const auto& endpoint : holder.endpoints) text += " " + endpoint;
  return text;
}

}  // namespace

HomeLock::HomeLock(const std::filesystem::path& home, const std::vector<std::string>& endpoints) {
  std::error_code ec;
  std::filesystem::create_directories(home, ec);
  const std::filesystem::path path = lock_path(home);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(ErrorCode::io, path.string(), cat("cannot open the server lock: ", std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const HomeServer holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    throw Error(
        ErrorCode::conflict, home.string(),
        cat("a server already runs for this home (", describe(holder),
            "); connect to it (mugv --server ENDPOINT, mugv-studio --server ENDPOINT) or stop it first"));
  }
  std::string text = cat(::getpid(), "\n");
  for (const auto& endpoint : endpoints) text += endpoint + "\n";
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, text.data(), text.size(), 0);
}

HomeLock::~HomeLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

std::optional<HomeServer> server_running_for(const std::filesystem::path& home) {
  const int fd = ::open(lock_path(home).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<HomeServer> holder;
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0)
    ::flock(fd, LOCK_UN);  // free: nobody serves this home
  else
    holder = read_holder(fd);
  ::close(fd);
  return holder;
}

}  // namespace mugv
