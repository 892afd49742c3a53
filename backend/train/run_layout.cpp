#include "train/run_layout.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/names.h"
#include "core/paths.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>

namespace mugv {

const char* to_string(RunLayoutKind kind) {
  switch (kind) {
    case RunLayoutKind::dit:
      return "dit";
    case RunLayoutKind::vae:
      return "vae";
    default:
      return "unknown";
  }
}

std::optional<RunLayoutKind> run_layout_kind_from_string(const std::string& name) {
  if (name == "dit") return RunLayoutKind::dit;
  if (name == "vae") return RunLayoutKind::vae;
  return std::nullopt;
}

RunPaths run_paths(const std::string& name) {
  bool valid =
      !name.empty() && name != "." && name != ".." && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      });
  if (!valid)
    throw Error(ErrorCode::invalid_argument, name, "a run name uses only letters, digits, '.', '_' and '-'");
  return RunPaths{mugv_home() / "runs" / name};
}

nlohmann::json to_json(const RunManifest& m) {
  return {{"name", m.name},       {"kind", to_string(m.kind)}, {"preset", m.preset},
          {"dataset", m.dataset}, {"vae_run", m.vae_run},      {"config", m.config}};
}

RunManifest run_manifest_from_json(const nlohmann::json& j, const std::string& subject) {
  RunManifest m;
  try {
    m.name = j.at("name").get<std::string>();
    auto kind = run_layout_kind_from_string(j.at("kind").get<std::string>());
    if (!kind) throw Error(ErrorCode::format, subject, "unknown run kind " + j.at("kind").dump());
    m.kind = *kind;
    m.preset = j.value("preset", "");
    m.dataset = j.value("dataset", "");
    m.vae_run = j.value("vae_run", "");
    m.config = j.value("config", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, subject, cat("malformed run manifest: ", e.what()));
  }
  return m;
}

void write_run_manifest(const RunPaths& paths, const RunManifest& manifest) {
  write_json_atomic(paths.manifest(), to_json(manifest));
}

RunManifest read_run_manifest(const RunPaths& paths) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.manifest(), ec)) {
    std::string known;
    for (const auto& n : list_run_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::not_found, paths.root.filename().string(),
                "no such run" + (known.empty() ? std::string() : "; known runs: " + known));
  }
  return run_manifest_from_json(read_json_file(paths.manifest()), paths.manifest().string());
}

std::vector<std::string> list_run_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(mugv_home() / "runs", ec))
    if (e.is_directory() && fs::exists(e.path() / "run.json")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string step_dir_name(int64_t step) {
  return cat("step-", step);
}

std::optional<int64_t> step_from_dir_name(const std::string& name) {
  if (!starts_with(name, "step-") || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

fs::path latent_cache_dir(const std::string& dataset, const std::string& vae_run) {
  check_path_component_name(dataset, "dataset");
  check_path_component_name(vae_run, "run");
  return mugv_home() / "datasets" / dataset / "cache" / vae_run;
}

fs::path latent_cache_entry(const fs::path& cache_dir, int64_t clip_id) {
  return cache_dir / cat("clip-", clip_id, ".safetensors");
}

bool is_latent_cache_entry(const fs::path& file) {
  const std::string name = file.filename().string();
  return starts_with(name, "clip-") && ends_with(name, ".safetensors");
}

std::map<std::string, int64_t> list_latent_caches(const std::string& dataset) {
  std::map<std::string, int64_t> caches;
  try {
    check_path_component_name(dataset, "dataset");
  } catch (const Error&) {
    return caches;  // encode refuses such a name, so it has no cache
  }
  std::error_code ec;
  for (const auto& folder : fs::directory_iterator(mugv_home() / "datasets" / dataset / "cache", ec)) {
    if (!folder.is_directory()) continue;
    int64_t entries = 0;
    std::error_code inner;
    for (const auto& e : fs::directory_iterator(folder.path(), inner))
      if (e.is_regular_file() && is_latent_cache_entry(e.path())) ++entries;
    caches[folder.path().filename().string()] = entries;
  }
  return caches;
}

}  // namespace mugv
