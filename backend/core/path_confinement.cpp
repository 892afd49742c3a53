#include "core/path_confinement.h"

#include "core/error.h"
#include "core/strings.h"

namespace mugv {
namespace fs = std::filesystem;

namespace {

fs::path resolve(const fs::path& path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  if (ec) return {};
  fs::path resolved = fs::weakly_canonical(absolute, ec);
  if (ec) return {};
  // weakly_canonical keeps a trailing separator ("/data/" -> "/data/"): drop it so comparison is by element.
  return resolved.has_filename() || resolved == resolved.root_path() ? resolved : resolved.parent_path();
}

bool is_within(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p)
    if (p == path.end() || *p != *r) return false;
  return true;
}

}  // namespace

PathConfinement::PathConfinement(std::vector<fs::path> roots, std::vector<fs::path> denied) {
  if (roots.empty()) throw Error(ErrorCode::internal, "path confinement", "no allowed roots");
  for (const auto& r : roots) {
    fs::path resolved = resolve(r);
    if (resolved.empty())
      throw Error(ErrorCode::invalid_argument, r.string(), "cannot resolve this allowed root");
    roots_.push_back(resolved);
  }
  for (const auto& d : denied)
    if (fs::path resolved = resolve(d); !resolved.empty()) denied_.push_back(resolved);
}

std::optional<fs::path> PathConfinement::resolve_inside(const fs::path& path) const {
  if (path.empty()) return std::nullopt;
  fs::path resolved = resolve(path);
  if (resolved.empty()) return std::nullopt;
  for (const auto& d : denied_)
    if (is_within(resolved, d)) return std::nullopt;
  for (const auto& root : roots_)
    if (is_within(resolved, root)) return resolved;
  return std::nullopt;
}

void PathConfinement::check(const std::string& what, const std::string& path) const {
  if (resolve_inside(path)) return;
  fs::path resolved = path.empty() ? fs::path() : resolve(path);
  for (const auto& d : denied_)
    if (!resolved.empty() && is_within(resolved, d))
      throw Error(ErrorCode::forbidden, cat(what, " ", path),
                  cat("inside ", d.string(), ", which no job may touch"));
  std::string shown =
      resolved.empty() || resolved == fs::path(path) ? "" : cat(" (resolves to ", resolved.string(), ")");
  throw Error(ErrorCode::forbidden, cat(what, " ", path.empty() ? std::string("''") : path),
              cat("outside the folders this server may use", shown, "; allowed: ", describe_roots(),
                  " (start the server with --allow-root DIR to allow another folder)"));
}

std::string PathConfinement::describe_roots() const {
  std::string s;
  for (const auto& r : roots_) s += (s.empty() ? "" : ", ") + r.string();
  return s;
}

nlohmann::json PathConfinement::to_json() const {
  nlohmann::json roots = nlohmann::json::array(), denied = nlohmann::json::array();
  for (const auto& r : roots_) roots.push_back(r.string());
  for (const auto& d : denied_) denied.push_back(d.string());
  return {{"roots", roots}, {"denied", denied}};
}

PathConfinement PathConfinement::from_json(const nlohmann::json& j) {
  try {
    std::vector<fs::path> roots, denied;
    for (const auto& r : j.at("roots")) roots.emplace_back(r.get<std::string>());
    for (const auto& d : j.value("denied", nlohmann::json::array()))
      denied.emplace_back(d.get<std::string>());
    return PathConfinement(std::move(roots), std::move(denied));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::invalid_argument, kJobRootsEnv, cat("malformed allowed roots: ", e.what()));
  }
}

namespace {
std::optional<PathConfinement>& job_confinement() {
  static std::optional<PathConfinement> confinement;
  return confinement;
}
}  // namespace

void set_job_confinement(std::optional<PathConfinement> confinement) {
  job_confinement() = std::move(confinement);
}

void check_job_path(const std::string& what, const fs::path& path) {
  if (const auto& confinement = job_confinement()) confinement->check(what, path.string());
}

}  // namespace mugv
