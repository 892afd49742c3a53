#include "service/cluster_profiles.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "service/remote_link.h"

#include <algorithm>
#include <set>

namespace mugv {

namespace fs = std::filesystem;

namespace {

bool plain(char c, std::string_view extra) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || extra.find(c) != std::string_view::npos;
}

// Reads one profile's keys with errors that name the file and the key.
class ProfileReader {
 public:
  ProfileReader(const fs::path& file, nlohmann::json document) : file_(file), doc_(std::move(document)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw Error(ErrorCode::invalid_argument, file_.string(), cat("key '", key, "': ", problem));
  }

  const nlohmann::json* find(const std::string& key) {
    seen_.insert(key);
    auto it = doc_.find(key);
    return it == doc_.end() ? nullptr : &*it;
  }

  // Text restricted to what an #SBATCH directive takes safely (`extra` adds characters, e.g. ':' for time).
  std::string directive(const std::string& key, std::string_view extra) {
    const nlohmann::json* v = find(key);
    if (!v) return {};
    if (!v->is_string()) fail(key, "expected a string");
    const std::string s = v->get<std::string>();
    for (char c : s)
      if (!plain(c, extra))
        fail(key, cat("'", s, "' holds '", std::string(1, c), "', which Slurm directives cannot take"));
    return s;
  }

  int count(const std::string& key, int fallback, int min) {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number_integer()) fail(key, "expected an integer");
    const int64_t n = v->get<int64_t>();
    if (n < min || n > 100000) fail(key, cat(n, " is out of range (", min, "..100000)"));
    return static_cast<int>(n);
  }

  std::vector<std::string> lines(const std::string& key) {
    const nlohmann::json* v = find(key);
    if (!v) return {};
    if (!v->is_array()) fail(key, "expected a list of strings, e.g. [\"module load cuda\"]");
    std::vector<std::string> out;
    for (const auto& item : *v) {
      if (!item.is_string()) fail(key, "expected a list of strings");
      const std::string line = item.get<std::string>();
      // One entry is one script line: a newline would smuggle in lines nobody reads in the profile.
      if (line.find('\n') != std::string::npos || line.find('\r') != std::string::npos)
        fail(key, "an entry holds a line break; write one line per entry");
      out.push_back(line);
    }
    return out;
  }

  std::string text(const std::string& key) {
    const nlohmann::json* v = find(key);
    if (!v) return {};
    if (!v->is_string()) fail(key, "expected a string");
    return v->get<std::string>();
  }

  void refuse_unknown_keys() const {
    for (auto it = doc_.begin(); it != doc_.end(); ++it)
      if (!seen_.count(it.key()))
        fail(it.key(),
             "unknown key (known: name, partition, account, time, gpus_per_node, cpus_per_task, nodes, "
             "tasks_per_node, setup_lines, shared_dir, ssh_host, report, server_endpoint)");
  }

 private:
  fs::path file_;
  nlohmann::json doc_;
  std::set<std::string> seen_;
};

void check_name(const std::string& name, const std::string& subject) {
  if (name.empty() || name.size() > 100 || name[0] == '.' ||
      !std::all_of(name.begin(), name.end(), [](char c) { return plain(c, ""); }))
    throw Error(ErrorCode::invalid_argument, subject,
                cat("'", name, "' is not a cluster profile name (letters, digits, '-', '_', '.')"));
}

}  // namespace

const char* to_string(ReportMode mode) {
  switch (mode) {
    case ReportMode::files:
      return "files";
    case ReportMode::tcp:
      return "tcp";
    default:
      return "unknown";
  }
}

std::optional<ReportMode> report_mode_from_string(std::string_view name) {
  if (name == "files") return ReportMode::files;
  if (name == "tcp") return ReportMode::tcp;
  return std::nullopt;
}

std::vector<std::string> ClusterProfile::command_prefix() const {
  // BatchMode: a server has nobody to type a password; ssh must fail at once instead of waiting.
  if (ssh_host.empty()) return {};
  return {"ssh", "-o", "BatchMode=yes", ssh_host};
}

nlohmann::json ClusterProfile::to_json() const {
  return {{"name", name},
          {"file", file.string()},
          {"builtin", builtin},
          {"partition", partition},
          {"account", account},
          {"time", time},
          {"gpus_per_node", gpus_per_node},
          {"cpus_per_task", cpus_per_task},
          {"nodes", nodes},
          {"tasks_per_node", tasks_per_node},
          {"setup_lines", setup_lines},
          {"shared_dir", shared_dir.string()},
          {"ssh_host", ssh_host},
          {"report", to_string(report)},
          {"server_endpoint", server_endpoint}};
}

fs::path cluster_profiles_dir(const fs::path& home) {
  return home / "clusters";
}

ClusterProfile load_cluster_profile(const fs::path& file, const fs::path& home) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    throw Error(ErrorCode::not_found, file.string(), "no such cluster profile file");
  ProfileReader r(file, read_toml_file(file));
  ClusterProfile p;
  p.file = file;
  p.name = file.stem().string();
  if (const std::string named = r.text("name"); !named.empty() && named != p.name)
    r.fail("name", cat("'", named, "' differs from the file name '", p.name,
                       "'; the file name is the profile's name"));
  p.partition = r.directive("partition", ",");
  p.account = r.directive("account", "");
  p.time = r.directive("time", ":");
  p.gpus_per_node = r.count("gpus_per_node", 0, 0);
  p.cpus_per_task = r.count("cpus_per_task", 0, 0);
  p.nodes = r.count("nodes", 1, 1);
  p.tasks_per_node = r.count("tasks_per_node", 1, 1);
  p.setup_lines = r.lines("setup_lines");
  const std::string shared = r.text("shared_dir");
  p.shared_dir = shared.empty() ? fs::absolute(home) : fs::path(shared);
  if (!p.shared_dir.is_absolute())
    r.fail("shared_dir", cat("'", shared, "' must be an absolute path (the nodes see it too)"));
  // sbatch reads --output / --chdir up to the first space.
  if (p.shared_dir.string().find_first_of(" \t\n") != std::string::npos)
    r.fail("shared_dir", cat("'", p.shared_dir.string(), "' must not contain spaces"));
  p.ssh_host = r.text("ssh_host");
  // The host is one ssh argument: a leading '-' would be read as an option.
  if (!p.ssh_host.empty() && (p.ssh_host[0] == '-' || !std::all_of(p.ssh_host.begin(), p.ssh_host.end(),
                                                                   [](char c) { return plain(c, "@:"); })))
    r.fail("ssh_host",
           cat("'", p.ssh_host, "' is not a host name (user@host.example, letters, digits, '-', '.')"));
  if (const std::string report = r.text("report"); !report.empty()) {
    auto mode = report_mode_from_string(report);
    if (!mode) r.fail("report", cat("'", report, "' is not one of files, tcp"));
    p.report = *mode;
  }
  p.server_endpoint = r.text("server_endpoint");
  if (p.report == ReportMode::tcp && p.server_endpoint.empty())
    r.fail(
        "server_endpoint",
        "report = \"tcp\" needs the server's tcp endpoint as the nodes reach it, e.g. \"tcp://login1:7555\"");
  if (p.report != ReportMode::tcp && !p.server_endpoint.empty())
    r.fail("server_endpoint", "only used with report = \"tcp\"");
  if (!p.server_endpoint.empty()) {
    try {
      check_tcp_endpoint(p.server_endpoint, "server_endpoint");
    } catch (const Error& e) {
      r.fail("server_endpoint", e.message());
    }
  }
  r.refuse_unknown_keys();
  return p;
}

ClusterProfile builtin_cluster_profile(const fs::path& home) {
  ClusterProfile p;
  p.name = kDefaultClusterName;
  p.builtin = true;
  p.shared_dir = fs::absolute(home);
  return p;
}

ClusterProfile find_cluster_profile(const fs::path& home, const std::string& name) {
  check_name(name, "cluster");
  const fs::path dir = cluster_profiles_dir(home);
  const fs::path file = dir / (name + ".toml");
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    if (name == kDefaultClusterName) return builtin_cluster_profile(home);
    std::string known;
    for (const auto& p : list_cluster_profiles(home).profiles) known += (known.empty() ? "" : ", ") + p.name;
    throw Error(ErrorCode::not_found, cat("cluster '", name, "'"),
                cat("no profile ", file.string(),
                    known.empty() ? " (there are none yet)" : cat(" (profiles: ", known, ")")));
  }
  return load_cluster_profile(file, home);
}

ClusterProfileListing list_cluster_profiles(const fs::path& home) {
  ClusterProfileListing out;
  const fs::path dir = cluster_profiles_dir(home);
  std::error_code ec;
  if (!fs::is_regular_file(dir / cat(kDefaultClusterName, ".toml"), ec))
    out.profiles.push_back(builtin_cluster_profile(home));
  if (!fs::is_directory(dir, ec)) return out;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".toml") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    try {
      out.profiles.push_back(load_cluster_profile(f, home));
    } catch (const Error& e) {
      out.problems.emplace_back(f, e.what());
    }
  }
  return out;
}

}  // namespace mugv
