#pragma once
// Keeps the files a client names inside the folders the server may touch: $MUGV_HOME and the
// `mugv serve --allow-root DIR` folders. A client on a tcp:// endpoint is another machine's user; without
// this, "import /home/alice/.ssh" or "export --out /etc/cron.d/x" would run with the server's rights.
//
// A path is resolved before it is compared: made absolute against the server's working directory (where
// its workers run, so a relative path means the same file to both), then std::filesystem::weakly_canonical,
// which follows every symlink of the part that exists and folds "." and ".." in the rest. So "HOME/../etc"
// and "HOME/link-to-etc/passwd" are judged as /etc and /etc/passwd. Roots are resolved the same way once.
// Not covered: a symlink that appears inside a root after the check (the server's own jobs make none).
// Immutable after construction: thread-safe.
//
// Jobs: the server checks the paths a job names before queueing it, and gives its worker the same roots
// (to_json / from_json, in kJobRootsEnv); the worker installs them as the process's job confinement, and
// code that finds more files while it runs (an import's folder walk and manifest lines, which may be
// symlinks or name any file) checks each with check_job_path. Without an installed confinement (a
// terminal), check_job_path allows everything.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

class PathConfinement {
 public:
  // `roots` must not be empty; each is resolved as described above. Paths inside `denied` are refused even
  // inside a root (the server's keys: a job writing there could lock everyone out or let anyone in).
  explicit PathConfinement(std::vector<std::filesystem::path> roots,
                           std::vector<std::filesystem::path> denied = {});

  // The resolved path when it is inside a root (or is one) and not inside a denied folder, nullopt otherwise.
  std::optional<std::filesystem::path> resolve_inside(const std::filesystem::path& path) const;
  // Error(forbidden) naming `what` (e.g. "--out"), the path, what it resolves to and the allowed roots,
  // unless the path is inside a root. An empty path is never allowed.
  void check(const std::string& what, const std::string& path) const;

  const std::vector<std::filesystem::path>& roots() const { return roots_; }
  // {"roots": [...], "denied": [...]}; from_json throws Error(invalid_argument) for a malformed value.
  [[nodiscard]] nlohmann::json to_json() const;
  [[nodiscard]] static PathConfinement from_json(const nlohmann::json& j);
  // "/home/u/.local/share/mugv, /data" for messages.
  std::string describe_roots() const;

 private:
  std::vector<std::filesystem::path> roots_, denied_;
};

// One path a job would read or write, named as its command line names it ("--out", "argument 1").
struct JobPath {
  std::string what;
  std::string path;
};

// The environment variable a job's worker finds its confinement in (PathConfinement::to_json, dumped).
inline constexpr const char* kJobRootsEnv = "MUGV_JOB_ROOTS";
// Installs the confinement of the job this process runs (once, before the job starts; not thread-safe
// against concurrent check_job_path calls).
void set_job_confinement(std::optional<PathConfinement> confinement);
// Error(forbidden) as PathConfinement::check when a job confinement is installed and `path` is outside it.
void check_job_path(const std::string& what, const std::filesystem::path& path);

}  // namespace mugv
