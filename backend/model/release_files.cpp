#include "model/release_files.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/weight_files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <system_error>

namespace mugv {
namespace {

namespace fs = std::filesystem;

// The first of `names` that exists in `dir`.
std::optional<fs::path> first_existing(const fs::path& dir, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    std::error_code ec;
    if (fs::exists(dir / name, ec)) return dir / name;
  }
  return std::nullopt;
}

std::optional<fs::path> weights_named(const fs::path& dir, const std::string& stem) {
  return first_existing(dir, {stem + ".safetensors", stem + ".safetensors.index.json", stem + ".pt",
                              stem + ".pth", stem + ".bin", stem});
}

bool is_t5_folder(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  if (!in) return false;
  try {
    const auto config = nlohmann::json::parse(in);
    const std::string type = config.value("model_type", std::string());
    return type == "t5" || type == "umt5";
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

std::optional<fs::path> find_t5_folder(const fs::path& dir) {
  for (const char* name : {"t5", "text_encoder", "t5-v1_1-xxl"})
    if (is_t5_folder(dir / name)) return dir / name;
  std::vector<fs::path> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory() && is_t5_folder(entry.path())) found.push_back(entry.path());
  if (found.size() == 1) return found[0];
  return std::nullopt;
}

int64_t bytes_under(const fs::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) total += static_cast<int64_t>(it->file_size(size_ec));
  }
  return total;
}

}  // namespace

ReleaseModelFiles find_release_model(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(ErrorCode::not_found, dir.string(),
                "not a folder; a model folder holds dit.pt, vae.pt and a T5 folder");
  ReleaseModelFiles files;
  files.dir = dir;
  auto dit = weights_named(dir, "dit");
  if (!dit)
    throw Error(
        ErrorCode::not_found, dir.string(),
        "no DiT weights: expected dit.safetensors, dit.safetensors.index.json, dit.pt, dit.pth, dit.bin or a "
        "dit/ folder");
  files.dit = *dit;
  files.vae = weights_named(dir, "vae");
  files.text_encoder = find_t5_folder(dir);
  if (files.text_encoder && fs::exists(*files.text_encoder / "spiece.model", ec))
    files.tokenizer = *files.text_encoder / "spiece.model";
  files.bytes = bytes_under(dir);
  return files;
}

fs::path models_dir() {
  return mugv_home() / "models";
}

std::vector<InstalledModel> list_installed_models(const fs::path& root) {
  std::vector<InstalledModel> models;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return models;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (!entry.is_directory()) continue;
    InstalledModel model;
    model.name = entry.path().filename().string();
    try {
      model.files = find_release_model(entry.path());
    } catch (const Error&) {
      continue;  // not a model folder
    }
    std::vector<std::string> missing;
    if (!model.files.vae) missing.push_back("no vae.pt or vae.safetensors");
    if (!model.files.text_encoder)
      missing.push_back("no T5 folder (config.json with model_type t5)");
    else if (!model.files.tokenizer)
      missing.push_back("no spiece.model in the T5 folder");
    for (const auto& m : missing) model.problem += (model.problem.empty() ? "" : "; ") + m;
    try {
      const WeightFiles dit = WeightFiles::open(model.files.dit);
      model.dit = dit_config_from_checkpoint(shapes_of(dit), kReleaseTextTokens, model.files.dit.string());
      model.dit_bytes = static_cast<int64_t>(dit.total_bytes());
    } catch (const Error& e) {
      model.dit_error = e.what();
    }
    models.push_back(std::move(model));
  }
  std::sort(models.begin(), models.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return models;
}

nlohmann::json to_json(const InstalledModel& m) {
  nlohmann::json dit;
  if (m.dit) {
    dit = {{"parameters", dit_parameter_count(*m.dit)},
           {"hidden", m.dit->hidden},
           {"depth", m.dit->depth},
           {"heads", m.dit->heads},
           {"latent_channels", m.dit->in_channels},
           {"text_dim", m.dit->text_dim},
           {"bytes", m.dit_bytes}};
  } else {
    dit = {{"error", m.dit_error}};
  }
  nlohmann::json j = {{"name", m.name},
                      {"path", m.files.dir.string()},
                      {"bytes", m.files.bytes},
                      {"dit", dit},
                      {"complete", m.problem.empty() && m.dit.has_value()}};
  if (!m.problem.empty()) j["problem"] = m.problem;
  return j;
}

std::string release_latent_cache_name(const ReleaseModelFiles& files) {
  std::string name = "release-";
  for (char c : files.dir.filename().string())
    name += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_';
  return name;
}

ReleaseModelFiles resolve_release_model(const std::string& name_or_dir) {
  const fs::path given(name_or_dir);
  std::error_code ec;
  if (fs::is_directory(given, ec)) return find_release_model(fs::absolute(given));
  // A bare name (which a command line may have made absolute against the working folder) names an installed
  // model.
  const fs::path installed = models_dir() / given.filename();
  if (given.has_filename() && fs::is_directory(installed, ec)) return find_release_model(installed);
  throw Error(ErrorCode::not_found, name_or_dir,
              "no such model folder, and no installed model of that name in " + models_dir().string() +
                  " (mugv model list)");
}

}  // namespace mugv
