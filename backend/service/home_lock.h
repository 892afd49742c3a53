#pragma once
// One server per home: two servers on one $MUGV_HOME would run the same queue twice. HomeLock holds an flock
// on HOME/server.lock for its life; the kernel drops the lock when the process dies, so a crashed server
// never blocks the next one. The file names the holder (its pid, then one endpoint per line) so that a client
// can find and reuse the running server (server_running_for) and a second server can say who is there. Not
// thread-safe.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct HomeServer {
  long pid = 0;
  std::vector<std::string> endpoints;  // what it listens on, as given to it
};

class HomeLock {
 public:
  // Throws Error(conflict) naming the home, the running server's pid and endpoints when another server (in
  // this or another process) holds the home; Error(io) when the lock file cannot be opened.
  HomeLock(const std::filesystem::path& home, const std::vector<std::string>& endpoints);
  ~HomeLock();
  HomeLock(const HomeLock&) = delete;
  HomeLock& operator=(const HomeLock&) = delete;

 private:
  int fd_ = -1;
};

// The server holding `home` now, or nullopt when none does (no lock file, or its lock is free).
[[nodiscard]] std::optional<HomeServer> server_running_for(const std::filesystem::path& home);

}  // namespace mugv
