#include "model/release_files.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/weight_files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
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

namespace {

// The preset of a complete folder whose DiT configuration was already read from its checkpoint: the VAE's
// shapes and T5's config.json are read here, and the parts are checked against each other.
ModelPreset preset_of_parts(const ReleaseModelFiles& files, const DiTConfig& dit, MugvVAEConfig* vae_out) {
  require_complete(files);  // the parts read below are there
  const WeightFiles vae_files = WeightFiles::open(*files.vae);
  ModelPreset p;
  p.name = files.dir.filename().string();
  p.description = "released MUG-V model in " + files.dir.string();
  p.dit = dit;
  const MugvVAEConfig vae = mugv_vae_config_from_shapes(shapes_of(vae_files));
  const fs::path t5_config = *files.text_encoder / "config.json";
  p.text = t5_config_from_hf_json(read_json_file(t5_config), kReleaseTextTokens, t5_config.string());
  if (p.dit.text_dim != p.text.dim)
    throw Error(ErrorCode::invalid_argument, files.dit.string(),
                cat("y_embedder.y_proj.fc1.weight reads text of width ", p.dit.text_dim, "; ",
                    t5_config.string(), " has d_model ", p.text.dim));
  if (p.dit.in_channels != vae.latent_channels)
    throw Error(ErrorCode::invalid_argument, files.dit.string(),
                cat("x_embedder.proj.weight takes ", p.dit.in_channels, " latent channels; ",
                    files.vae->string(), " has ", vae.latent_channels));
  p.vae.latent_channels = static_cast<int>(vae.latent_channels);
  p.vae.compress_t = static_cast<int>(vae.temporal_factor());
  p.vae.compress_h = p.vae.compress_w = static_cast<int>(vae.spatial_factor());
  p.released_vae_parameters = mugv_vae_parameter_count(vae);
  if (vae_out) *vae_out = vae;
  return p;
}

}  // namespace

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
    model.problem = missing_parts(model.files);
    try {
      const WeightFiles dit = WeightFiles::open(model.files.dit);
      model.dit = dit_config_from_checkpoint(shapes_of(dit), kReleaseTextTokens, model.files.dit.string());
      model.dit_bytes = static_cast<int64_t>(dit.total_bytes());
    } catch (const Error& e) {
      model.dit_error = e.what();
    }
    if (model.problem.empty() && model.dit) {
      try {
        model.preset = preset_of_parts(model.files, *model.dit, nullptr);  // the DiT's header is read once
      } catch (const Error& e) {
        model.preset_error = e.what();
      }
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
                      {"latent_cache", release_latent_cache_name(m.files)},
                      {"dit", dit},
                      {"complete", m.preset.has_value()}};
  if (!m.problem.empty()) j["problem"] = m.problem;
  if (m.preset) j["preset"] = release_preset_json(*m.preset);
  if (!m.preset_error.empty()) j["preset_error"] = m.preset_error;
  return j;
}

std::string missing_parts(const ReleaseModelFiles& files) {
  std::string missing;
  auto lack = [&](const std::string& what) { missing += (missing.empty() ? "" : "; ") + what; };
  if (!files.vae) lack("no vae.pt or vae.safetensors");
  if (!files.text_encoder)
    lack("no T5 folder (a sub-folder whose config.json says model_type t5)");
  else if (!files.tokenizer)
    lack("no spiece.model in " + files.text_encoder->string());
  return missing;
}

void require_complete(const ReleaseModelFiles& files) {
  if (const std::string missing = missing_parts(files); !missing.empty())
    throw Error(ErrorCode::not_found, files.dir.string(), missing);
}

ModelPreset release_preset(const ReleaseModelFiles& files, MugvVAEConfig* vae_out) {
  const WeightFiles dit_files = WeightFiles::open(files.dit);
  return preset_of_parts(
      files, dit_config_from_checkpoint(shapes_of(dit_files), kReleaseTextTokens, files.dit.string()),
      vae_out);
}

nlohmann::json release_preset_json(const ModelPreset& p) {
  const DiTConfig& d = p.dit;
  const TextEncoderConfig& t = p.text;
  return {{"name", p.name},
          {"dit",
           {{"hidden", d.hidden},
            {"depth", d.depth},
            {"heads", d.heads},
            {"head_dim", d.head_dim},
            {"mlp_ratio", d.mlp_ratio},
            {"in_channels", d.in_channels},
            {"patch", {d.patch_t, d.patch_h, d.patch_w}},
            {"text_dim", d.text_dim},
            {"text_tokens", d.text_tokens},
            {"rope_theta", d.rope_theta},
            {"attention_multiplier", d.attention_multiplier},
            {"frequency_dim", d.frequency_dim},
            {"null_caption", d.null_caption}}},
          {"vae",
           {{"latent_channels", p.vae.latent_channels},
            {"compress", {p.vae.compress_t, p.vae.compress_h, p.vae.compress_w}},
            {"parameters", p.released_vae_parameters.value_or(0)}}},
          {"text",
           {{"kind", to_string(t.kind)},
            {"vocab_size", t.vocab_size},
            {"dim", t.dim},
            {"layers", t.layers},
            {"heads", t.heads},
            {"head_dim", t.head_dim},
            {"ff_dim", t.ff_dim},
            {"max_tokens", t.max_tokens}}}};
}

ModelPreset release_preset_from_json(const nlohmann::json& j, const std::string& subject) {
  auto fail = [&](const std::string& key, const std::string& why) -> Error {
    return Error(ErrorCode::format, subject, cat(key, ": ", why));
  };
  auto table = [&](const char* key) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(key) || !j[key].is_object())
      throw fail(key, "missing or not an object");
    return j[key];
  };
  auto number = [&](const nlohmann::json& t, const std::string& table_name, const char* key) {
    if (!t.contains(key) || !t[key].is_number())
      throw fail(table_name + "." + key, "missing or not a number");
    return t[key].get<double>();
  };
  auto integer = [&](const nlohmann::json& t, const std::string& table_name, const char* key) {
    if (!t.contains(key) || !t[key].is_number_integer())
      throw fail(table_name + "." + key, "missing or not an integer");
    return t[key].get<int>();
  };
  auto triple = [&](const nlohmann::json& t, const std::string& table_name, const char* key) {
    if (!t.contains(key) || !t[key].is_array() || t[key].size() != 3 || !t[key][0].is_number_integer() ||
        !t[key][1].is_number_integer() || !t[key][2].is_number_integer())
      throw fail(table_name + "." + key, "missing or not three integers");
    return std::array<int, 3>{t[key][0].get<int>(), t[key][1].get<int>(), t[key][2].get<int>()};
  };
  ModelPreset p;
  p.name =
      j.is_object() && j.contains("name") && j["name"].is_string() ? j["name"].get<std::string>() : subject;
  const auto& dit = table("dit");
  DiTConfig& d = p.dit;
  d.hidden = integer(dit, "dit", "hidden");
  d.depth = integer(dit, "dit", "depth");
  d.heads = integer(dit, "dit", "heads");
  d.head_dim = integer(dit, "dit", "head_dim");
  d.mlp_ratio = integer(dit, "dit", "mlp_ratio");
  d.in_channels = integer(dit, "dit", "in_channels");
  const auto patch = triple(dit, "dit", "patch");
  d.patch_t = patch[0];
  d.patch_h = patch[1];
  d.patch_w = patch[2];
  d.text_dim = integer(dit, "dit", "text_dim");
  d.text_tokens = integer(dit, "dit", "text_tokens");
  d.rope_theta = number(dit, "dit", "rope_theta");
  d.attention_multiplier = number(dit, "dit", "attention_multiplier");
  d.frequency_dim = integer(dit, "dit", "frequency_dim");
  if (!dit.contains("null_caption") || !dit["null_caption"].is_boolean())
    throw fail("dit.null_caption", "missing or not true/false");
  d.null_caption = dit["null_caption"].get<bool>();
  validate(d, subject);
  const auto& vae = table("vae");
  p.vae.latent_channels = integer(vae, "vae", "latent_channels");
  const auto compress = triple(vae, "vae", "compress");
  p.vae.compress_t = compress[0];
  p.vae.compress_h = compress[1];
  p.vae.compress_w = compress[2];
  if (!vae.contains("parameters") || !vae["parameters"].is_number_integer() ||
      vae["parameters"].get<int64_t>() < 0)
    throw fail("vae.parameters", "missing or not a count");
  p.released_vae_parameters = vae["parameters"].get<int64_t>();
  const auto& text = table("text");
  const auto kind = text.contains("kind") && text["kind"].is_string()
                        ? text_encoder_kind_from_string(text["kind"].get<std::string>())
                        : std::nullopt;
  if (!kind) throw fail("text.kind", "missing or not small_transformer or t5");
  TextEncoderConfig& t = p.text;
  t.kind = *kind;
  t.vocab_size = integer(text, "text", "vocab_size");
  t.dim = integer(text, "text", "dim");
  t.layers = integer(text, "text", "layers");
  t.heads = integer(text, "text", "heads");
  t.head_dim = integer(text, "text", "head_dim");
  t.ff_dim = integer(text, "text", "ff_dim");
  t.max_tokens = integer(text, "text", "max_tokens");
  return p;
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
