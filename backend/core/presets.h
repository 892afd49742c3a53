#pragma once
// Preset files: TOML under <preset dir>/<kind>/<name>.toml, kinds such as "models", "train", "curation",
// "curricula", "vocabularies" (presets/README.md). Directories are searched in core/paths.h preset_dirs()
// order ($MUGV_PRESETS, the user's dir, the installed dir, the source tree); the first file found for a name
// wins, so a user preset overrides a built-in one of the same name.
//
// A loaded preset is returned as NESTED JSON mirroring the TOML tables ([train] lr = 1e-5 ->
// {"train": {"lr": 1e-5}}); apply_preset_layer (core/params.h) flattens it to dotted keys.
// `inherits = "other"` at the top level names a preset of the same kind whose values are the
// base: tables merge key by key, the child's values win, arrays are replaced whole. Chains are
// followed to any depth; a cycle is an error. The "inherits" key itself is removed from the
// result; "description" is kept (free text for lists and tooltips).
//
// Kind and preset names are [A-Za-z0-9_.-], not starting with '.'; anything else is
// Error(invalid_argument). All functions read the file system on every call (no cache) and are
// thread-safe as long as nobody writes the same files concurrently.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class PresetLocation { unknown = 0, user, builtin };
const char* to_string(PresetLocation location);
std::optional<PresetLocation> preset_location_from_string(std::string_view name);

struct PresetRef {
  std::string kind;
  std::string name;  // file stem
  std::filesystem::path path;
  PresetLocation location = PresetLocation::unknown;
};

// Presets of `kind` across all preset dirs, sorted by name (natural_less: mugv-4b before mugv-10b), one entry
// per name (the winning file). Empty when there are none (an unknown kind is simply empty).
[[nodiscard]] std::vector<PresetRef> list_presets(std::string_view kind);
// The file that `kind`/`name` resolves to; nullopt when there is none.
[[nodiscard]] std::optional<PresetRef> find_preset(std::string_view kind, std::string_view name);

// A preset as listings show it (`mugv presets`, the server's list_presets, the studio's pickers): its file,
// its description and its resolved values, or why it cannot be loaded. A listing goes on past a broken file.
struct PresetListing {
  PresetRef ref;
  std::string description;  // the preset's "description"; empty when it has none
  nlohmann::json values;    // what load_preset returns; null when `problem` is set
  std::string problem;      // the load error in words ("file: invalid TOML at line ..."); empty when it loads
};
// Every preset of `kind` sorted by name, or with an empty kind every preset of every kind (kinds sorted).
[[nodiscard]] std::vector<PresetListing> describe_presets(std::string_view kind = {});
// {"kind", "name", "location", "path", "description", "values"}; a broken preset has "problem" instead of
// "values".
[[nodiscard]] nlohmann::json to_json(const PresetListing& listing);

// Loads and resolves inheritance. Throws Error(not_found) listing the available presets of the
// kind, Error(format) for TOML syntax errors ("file: invalid TOML at line L, column C: ..."),
// Error(invalid_argument) for an `inherits` that is not a string or that forms a cycle.
[[nodiscard]] nlohmann::json load_preset(std::string_view kind, std::string_view name);
// Same, for a file given by path (e.g. --config my.toml); `inherits` resolves among presets of
// `kind` (pass an empty kind to forbid inherits). In a server's job the file must lie inside the server's
// roots (core/path_confinement.h check_job_path): Error(forbidden) otherwise.
[[nodiscard]] nlohmann::json load_preset_file(const std::filesystem::path& path, std::string_view kind);

// A training preset's top-level `trainer`: "dit" or "vae" when the preset is for that trainer only (mugv
// train or mugv train-vae), empty when either may use it (each takes the settings it has). Throws
// Error(format) naming `subject` for any other value.
[[nodiscard]] std::string preset_trainer(const nlohmann::json& values, const std::string& subject);

// A value naming a preset file rather than a preset: it has a folder part or ends in .toml.
[[nodiscard]] bool names_preset_file(std::string_view name_or_file);
// load_preset_file for such a value, load_preset for a preset name.
[[nodiscard]] nlohmann::json load_preset_or_file(std::string_view kind, std::string_view name_or_file);

// Writes `values` (nested, or with dotted keys) as TOML to user_preset_dir()/<kind>/<name>.toml
// atomically and returns the path. Throws Error(invalid_argument) for bad names or values TOML
// cannot hold (null), Error(io) when the file cannot be written.
std::filesystem::path save_user_preset(std::string_view kind, std::string_view name,
                                       const nlohmann::json& values);

// Deep merge used by `inherits`: objects merge recursively, anything else in `over` replaces.
[[nodiscard]] nlohmann::json merge_presets(const nlohmann::json& base, const nlohmann::json& over);

}  // namespace mugv
