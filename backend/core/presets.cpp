#include "core/presets.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/path_confinement.h"
#include "core/paths.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace mugv {
namespace {

namespace fs = std::filesystem;

void check_name(std::string_view what, std::string_view name) {
  bool ok = !name.empty() && name.front() != '.' && name.size() <= 128;
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  if (!ok)
    throw Error(ErrorCode::invalid_argument, std::string(name),
                cat("not a valid preset ", what, " name (use letters, digits, '_', '-', '.')"));
}

std::string available_list(std::string_view kind) {
  std::vector<PresetRef> presets = list_presets(kind);
  if (presets.empty()) return cat("no ", kind, " presets are installed");
  std::string names;
  for (const PresetRef& p : presets) names += (names.empty() ? "" : ", ") + p.name;
  return "available: " + names;
}

nlohmann::json load_chain(const fs::path& path, std::string_view kind, std::vector<std::string>& chain) {
  nlohmann::json document = read_toml_file(path);
  auto inherits = document.find("inherits");
  if (inherits == document.end()) return document;
  if (!inherits->is_string())
    throw Error(ErrorCode::invalid_argument, path.string(), "'inherits' must be the name of another preset");
  std::string parent_name = inherits->get<std::string>();
  document.erase(inherits);
  if (kind.empty())
    throw Error(ErrorCode::invalid_argument, path.string(),
                "'inherits' is not allowed here (no preset kind)");
  check_name("preset", parent_name);
  if (std::find(chain.begin(), chain.end(), parent_name) != chain.end()) {
    std::string cycle;
    for (const std::string& n : chain) cycle += n + " -> ";
    throw Error(ErrorCode::invalid_argument, path.string(),
                "'inherits' forms a cycle: " + cycle + parent_name);
  }
  std::optional<PresetRef> parent = find_preset(kind, parent_name);
  if (!parent)
    throw Error(ErrorCode::not_found, path.string(),
                cat("inherits unknown ", kind, " preset '", parent_name, "'; ", available_list(kind)));
  chain.push_back(parent_name);
  nlohmann::json base = load_chain(parent->path, kind, chain);
  return merge_presets(base, document);
}

}  // namespace

const char* to_string(PresetLocation location) {
  switch (location) {
    case PresetLocation::user:
      return "user";
    case PresetLocation::builtin:
      return "builtin";
    default:
      return "unknown";
  }
}

std::optional<PresetLocation> preset_location_from_string(std::string_view name) {
  for (PresetLocation l : {PresetLocation::unknown, PresetLocation::user, PresetLocation::builtin})
    if (name == to_string(l)) return l;
  return std::nullopt;
}

std::vector<PresetRef> list_presets(std::string_view kind) {
  check_name("kind", kind);
  const fs::path user_dir = user_preset_dir();
  std::map<std::string, PresetRef, bool (*)(std::string_view, std::string_view)> found(natural_less);
  for (const fs::path& dir : preset_dirs()) {
    std::error_code ec;
    fs::directory_iterator it(dir / std::string(kind), ec);
    if (ec) continue;
    for (const fs::directory_entry& entry : it) {
      const fs::path& p = entry.path();
      if (p.extension() != ".toml" || p.stem().string().empty() || p.stem().string().front() == '.') continue;
      if (!entry.is_regular_file(ec)) continue;
      std::string name = p.stem().string();
      if (found.count(name)) continue;
      PresetLocation location = dir == user_dir ? PresetLocation::user : PresetLocation::builtin;
      found.emplace(name, PresetRef{std::string(kind), name, p, location});
    }
  }
  std::vector<PresetRef> out;
  for (auto& [name, ref] : found) out.push_back(std::move(ref));
  return out;
}

std::optional<PresetRef> find_preset(std::string_view kind, std::string_view name) {
  check_name("kind", kind);
  check_name("preset", name);
  const fs::path user_dir = user_preset_dir();
  for (const fs::path& dir : preset_dirs()) {
    fs::path candidate = dir / std::string(kind) / (std::string(name) + ".toml");
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec))
      return PresetRef{std::string(kind), std::string(name), candidate,
                       dir == user_dir ? PresetLocation::user : PresetLocation::builtin};
  }
  return std::nullopt;
}

namespace {

// The kinds that have a folder in some preset dir, sorted (a folder with a name no kind can have is skipped).
std::vector<std::string> preset_kinds() {
  std::set<std::string> kinds;
  for (const fs::path& dir : preset_dirs()) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      try {
        check_name("kind", name);
      } catch (const Error&) {
        continue;
      }
      if (it->is_directory(ec)) kinds.insert(name);
    }
  }
  return {kinds.begin(), kinds.end()};
}

PresetListing describe(const PresetRef& ref) {
  PresetListing listing{ref, {}, nullptr, {}};
  try {
    listing.values = load_preset(ref.kind, ref.name);
    if (auto d = listing.values.find("description"); d != listing.values.end() && d->is_string())
      listing.description = d->get<std::string>();
    if (ref.kind == "train") (void)preset_trainer(listing.values, ref.path.string());  // a bad mark: unusable
  } catch (const Error& e) {
    listing.values = nullptr;
    listing.problem = e.what();
  }
  return listing;
}

}  // namespace

std::vector<PresetListing> describe_presets(std::string_view kind) {
  std::vector<PresetListing> out;
  const std::vector<std::string> kinds =
      kind.empty() ? preset_kinds() : std::vector<std::string>{std::string(kind)};
  for (const std::string& k : kinds)
    for (const PresetRef& ref : list_presets(k)) out.push_back(describe(ref));
  return out;
}

nlohmann::json to_json(const PresetListing& listing) {
  nlohmann::json j = {{"kind", listing.ref.kind},
                      {"name", listing.ref.name},
                      {"location", to_string(listing.ref.location)},
                      {"path", listing.ref.path.string()},
                      {"description", listing.description}};
  if (listing.problem.empty())
    j["values"] = listing.values;
  else
    j["problem"] = listing.problem;
  return j;
}

nlohmann::json load_preset(std::string_view kind, std::string_view name) {
  std::optional<PresetRef> ref = find_preset(kind, name);
  if (!ref)
    throw Error(ErrorCode::not_found, cat(kind, "/", name),
                cat("unknown ", kind, " preset; ", available_list(kind)));
  std::vector<std::string> chain{std::string(name)};
  return load_chain(ref->path, kind, chain);
}

nlohmann::json load_preset_file(const fs::path& path, std::string_view kind) {
  check_job_path("preset file", path);  // a server's job may only read files inside the server's roots
  std::vector<std::string> chain;
  if (!kind.empty()) check_name("kind", kind);
  return load_chain(path, kind, chain);
}

std::string preset_trainer(const nlohmann::json& values, const std::string& subject) {
  const auto it = values.is_object() ? values.find("trainer") : values.end();
  if (!values.is_object() || it == values.end()) return {};
  if (!it->is_string() || (*it != "dit" && *it != "vae"))
    throw Error(ErrorCode::format, subject, "trainer is " + it->dump() + "; it must be \"dit\" or \"vae\"");
  return it->get<std::string>();
}

bool names_preset_file(std::string_view name_or_file) {
  return ends_with(name_or_file, ".toml") || name_or_file.find('/') != std::string_view::npos;
}

nlohmann::json load_preset_or_file(std::string_view kind, std::string_view name_or_file) {
  return names_preset_file(name_or_file) ? load_preset_file(fs::path(std::string(name_or_file)), kind)
                                         : load_preset(kind, name_or_file);
}

fs::path save_user_preset(std::string_view kind, std::string_view name, const nlohmann::json& values) {
  check_name("kind", kind);
  check_name("preset", name);
  fs::path path = user_preset_dir() / std::string(kind) / (std::string(name) + ".toml");
  std::string text;
  try {
    text = to_toml_text(values);
  } catch (const Error& e) {
    throw Error(ErrorCode::invalid_argument, path.string(), e.what());
  }
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) throw Error(ErrorCode::io, path.parent_path().string(), "cannot create directory: " + ec.message());
  write_text_atomic(path, text);
  return path;
}

nlohmann::json merge_presets(const nlohmann::json& base, const nlohmann::json& over) {
  if (!base.is_object() || !over.is_object()) return over;
  nlohmann::json out = base;
  for (const auto& [key, value] : over.items()) {
    auto it = out.find(key);
    out[key] = it == out.end() ? value : merge_presets(*it, value);
  }
  return out;
}

}  // namespace mugv
