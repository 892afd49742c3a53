#pragma once
// Cluster profiles: named Slurm settings the server submits jobs with, one TOML file per cluster in
// $MUGV_HOME/clusters/<name>.toml:
//
//   partition = "gpu"            # empty or absent: the cluster's default
//   account = "vision"
//   time = "4:00:00"             # time limit per job
//   gpus_per_node = 8            # 0: no --gpus-per-node line
//   cpus_per_task = 16           # 0: Slurm's default
//   nodes = 1                    # defaults for a submission that does not say
//   tasks_per_node = 1
//   setup_lines = ["module load cuda/12.4", "source /opt/mugv/env.sh"]   # run before srun, as written
//   shared_dir = "/shared/mugv"  # where job folders (script, job file, events, Slurm logs) live; both the
//                                # server and the nodes must see it at this path. Default: $MUGV_HOME
//   ssh_host = "login1"          # optional: run sbatch / scontrol / scancel as `ssh login1 ...`
//   report = "files"             # how workers report: "files" (events.jsonl in the job folder, default)
//                                # or "tcp": files as well, and the rank-0 worker connects back to the
//                                # server for live previews and controls (remote_link.h, SERVICE.md)
//   server_endpoint = "tcp://login1:7555"  # with report = "tcp" (and only then): the server's tcp request
//                                # endpoint as the nodes reach it; the server must listen on that port
//
// The profile "default" is built in: the Slurm of the server's own machine (its sbatch, scontrol, scancel)
// with Slurm's defaults, job folders under $MUGV_HOME, reports through files. It is what the studio's "GPU
// cluster" runs use when no profile is chosen, and a default.toml in the folder replaces it.
//
// Every key is optional; an unknown key, a wrong type or a value Slurm would misread is an Error(format /
// invalid_argument) naming the file and the key, so a typo never silently falls back to a default.
// setup_lines are the profile owner's shell lines and are written into the script unchanged (they are as
// trusted as the server's own configuration; clients can only pick a profile by name, never write one).
// Pure functions over files; thread-safe.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv {

enum class ReportMode { unknown = 0, files, tcp };
const char* to_string(ReportMode mode);
std::optional<ReportMode> report_mode_from_string(std::string_view name);

struct ClusterProfile {
  std::string name;            // the file's stem
  std::filesystem::path file;  // where it was read from; empty for the built-in default
  bool builtin = false;        // the built-in default (no file)
  std::string partition, account, time;
  int gpus_per_node = 0;
  int cpus_per_task = 0;
  int nodes = 1;
  int tasks_per_node = 1;
  std::vector<std::string> setup_lines;
  std::filesystem::path shared_dir;  // absolute; $MUGV_HOME when the file does not say
  std::string ssh_host;              // empty: Slurm's commands run on this machine
  ReportMode report = ReportMode::files;
  std::string server_endpoint;  // report tcp: tcp://HOST:PORT as the nodes reach the server

  // What runs a Slurm command: {} locally, {"ssh", "-o", "BatchMode=yes", HOST} through ssh.
  std::vector<std::string> command_prefix() const;
  // The profile as the list_clusters reply carries it.
  nlohmann::json to_json() const;
};

// $MUGV_HOME/clusters
std::filesystem::path cluster_profiles_dir(const std::filesystem::path& home);

// Reads and checks one profile file. Throws Error(not_found) for a missing file, Error(format) for bad TOML
// and Error(invalid_argument) "FILE: key 'partition': ..." for a bad value.
[[nodiscard]] ClusterProfile load_cluster_profile(const std::filesystem::path& file,
                                                  const std::filesystem::path& home);

// The name of the built-in profile.
inline constexpr const char* kDefaultClusterName = "default";

// The built-in default profile of a server whose home is `home`.
[[nodiscard]] ClusterProfile builtin_cluster_profile(const std::filesystem::path& home);

// The profile called `name` in cluster_profiles_dir(home), or the built-in default for "default" without a
// file. Error(invalid_argument) for a name that is not a plain file stem, Error(not_found) naming the folder
// and the profiles there when there is none.
[[nodiscard]] ClusterProfile find_cluster_profile(const std::filesystem::path& home, const std::string& name);

// Every *.toml in the folder, by name, after the built-in default unless default.toml replaces it; a file
// that fails to load is listed in `problems` with its error (the other profiles stay usable). An absent
// folder is the built-in default alone and no problem.
struct ClusterProfileListing {
  std::vector<ClusterProfile> profiles;
  std::vector<std::pair<std::filesystem::path, std::string>> problems;
};
[[nodiscard]] ClusterProfileListing list_cluster_profiles(const std::filesystem::path& home);

}  // namespace mugv
