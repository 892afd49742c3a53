#pragma once
// The parameter registry: one declarative ParamSpec per parameter drives the command line, the
// environment, preset files, help text and (later) the studio's forms, so they never drift apart.
//
//   ParamRegistry registry;                       // built once at start-up, then read-only
//   ParamSpec lr;
//   lr.key = "train.lr"; lr.flag = "--lr"; lr.env = "MUGV_LR"; lr.type = ParamType::real;
//   lr.default_value = 1e-5; lr.help = "Peak learning rate"; lr.min_value = 0.0; lr.group = "training";
//   registry.add(lr);
//   ParamLayers layers;
//   layers.preset = load_preset("train", "tiny");  layers.preset_origin = "presets/train/tiny.toml";
//   layers.command_line = parse_command_line(registry, args);   // Error(usage) on bad flags
//   ParamValues values = resolve(registry, layers);
//   double lr = values.get_real("train.lr");
//   values.source_of("train.lr");   // ParamSource::command_line: where the value came from
//
// Cascade, lowest first: builtin_default < preset < user_file < environment < command_line.
//
// Canonical value forms (what ParamValues stores and to_json() returns):
//   boolean  JSON bool            integer  JSON integer        real     JSON number
//   text, path, choice  JSON string (a choice is one of `choices`)
//   size2d   JSON string "WxH", width first ("1280x720"); files may also give [W, H]
//   list     JSON array of items of `item_type`; on the command line and in the environment
//            items are separated by commas ("--gpus 0,1,2")
// min_value/max_value bound integer and real values, each size2d dimension, and each list item.
// A null default_value means "no default": the parameter is unset until a layer gives it.
//
// Thread safety: a registry is not synchronised; fill it once, then share it read-only.
// ParamValues keeps a pointer to its registry, which must outlive it.

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mugv {

enum class ParamType { unknown = 0, boolean, integer, real, text, path, choice, size2d, list };
const char* to_string(ParamType type);
std::optional<ParamType> param_type_from_string(std::string_view name);

// Where a resolved value came from, lowest precedence first.
enum class ParamSource { unknown = 0, builtin_default, preset, user_file, environment, command_line };
const char* to_string(ParamSource source);
std::optional<ParamSource> param_source_from_string(std::string_view name);

struct ParamSpec {
  std::string key;   // dotted preset key, e.g. "train.lr"; unique
  std::string flag;  // "--lr"; unique; empty = not settable on the command line
  std::string env;   // "MUGV_LR"; empty = not read from the environment
  ParamType type = ParamType::unknown;
  nlohmann::json default_value;      // canonical form (see above); null = no default
  std::string help;                  // one sentence; the tooltip of the form field
  std::vector<std::string> choices;  // allowed values of a choice (or of choice list items)
  std::optional<double> min_value;
  std::optional<double> max_value;
  std::string group;                      // help section and form page, e.g. "training"
  std::string label;                      // form label; empty = derived from the key ("train.lr" -> "lr")
  std::string value_name;                 // placeholder in help, e.g. "RATE"; empty = derived from the type
  ParamType item_type = ParamType::text;  // element type of a list
  // A path parameter whose bare names (no '/', not an existing path) mean a folder under $MUGV_HOME/<this>,
  // e.g. "models" for `--model MUG-V-10B`; empty = plain paths only. See resolve_path_value().
  std::string names_under_home;
};

// The path a path parameter's value means: a bare name under $MUGV_HOME/<spec.names_under_home> when the spec
// has one and the value is neither a path with a folder part nor an existing file or folder; the value as it
// is otherwise. The CLI and the server's path check both use it, so they judge the same file.
[[nodiscard]] std::string resolve_path_value(const ParamSpec& spec, const std::string& value);

struct Size2D {
  int64_t width = 0;
  int64_t height = 0;
  bool operator==(const Size2D& o) const { return width == o.width && height == o.height; }
};

// "64x64" -> {64, 64}; nullopt unless both parts are positive integers.
std::optional<Size2D> parse_size2d(std::string_view text);
std::string to_string(const Size2D& size);

class ParamRegistry {
 public:
  // Throws Error(internal) for a malformed spec (it is a programming error): empty or duplicate
  // key/flag/env, flag not starting with "--", unknown type, a choice without choices, a default
  // that does not satisfy the spec's own type and bounds.
  const ParamSpec& add(ParamSpec spec);

  // nullptr when absent. Pointers stay valid for the registry's lifetime.
  const ParamSpec* find_by_key(std::string_view key) const;
  const ParamSpec* find_by_flag(std::string_view flag) const;  // with or without a "=value" tail
  // Registration order; stable.
  const std::deque<ParamSpec>& specs() const { return specs_; }
  // Groups in order of first appearance.
  std::vector<std::string> groups() const;
  // Help for the command line: one section per group, one line (or more) per flag, with
  // value placeholder, help, default, choices, range and env var.
  std::string help_text() const;

 private:
  std::deque<ParamSpec> specs_;
  std::unordered_map<std::string, size_t> by_key_;
  std::unordered_map<std::string, size_t> by_flag_;
  std::unordered_map<std::string, size_t> by_env_;
};

// Checks `value` against `spec` and returns it in canonical form, or the problem in words
// ("expected a number, got 'abc'", "must be at most 1, got 2"). Strings (from the command line
// or environment) are parsed when `from_text` is text; JSON values (from files) must have the
// matching JSON type, except that integers are accepted for real parameters.
enum class ValueForm { unknown = 0, text, json };
struct ValueCheck {
  nlohmann::json value;  // canonical; meaningful only when problem is empty
  std::string problem;
};
[[nodiscard]] ValueCheck check_param_value(const ParamSpec& spec, const nlohmann::json& value,
                                           ValueForm form);

// Display label of a form field: spec.label, else the last segment of the key.
std::string display_label(const ParamSpec& spec);

class ParamValues {
 public:
  struct Entry {
    nlohmann::json value;
    ParamSource source = ParamSource::unknown;
    std::string origin;  // the file, env var or flag that set it; empty for builtin defaults
  };

  explicit ParamValues(const ParamRegistry& registry);

  // Sets a canonical or file-form value. Throws Error(internal) for a key not registered and
  // Error(invalid_argument) with subject `origin` (or the key) for a value the spec rejects.
  void set(std::string_view key, const nlohmann::json& value, ParamSource source, std::string origin = {});
  // Removes the value (the parameter becomes unset). Throws Error(internal) for a key not registered.
  void unset(std::string_view key);

  // Each throws Error(internal) when the key is not registered; has() is false when unset.
  [[nodiscard]] bool has(std::string_view key) const;
  [[nodiscard]] const Entry* entry(std::string_view key) const;     // nullptr when unset
  [[nodiscard]] ParamSource source_of(std::string_view key) const;  // unknown when unset

  // Typed getters. Throw Error(internal) for a key not registered or a getter that does not
  // match the parameter's type, and Error(invalid_argument) naming the flag when unset.
  [[nodiscard]] const nlohmann::json& get(std::string_view key) const;
  [[nodiscard]] bool get_bool(std::string_view key) const;
  [[nodiscard]] int64_t get_int(std::string_view key) const;
  [[nodiscard]] double get_real(std::string_view key) const;
  [[nodiscard]] std::string get_text(std::string_view key) const;  // text, path and choice
  [[nodiscard]] Size2D get_size2d(std::string_view key) const;
  [[nodiscard]] std::vector<std::string> get_text_list(std::string_view key) const;
  [[nodiscard]] std::vector<int64_t> get_int_list(std::string_view key) const;
  [[nodiscard]] std::vector<double> get_real_list(std::string_view key) const;

  // Set values as a nested object ({"train": {"lr": 1e-5}}), suitable for save_user_preset or
  // a run's resolved config.
  [[nodiscard]] nlohmann::json to_json() const;
  // One line per set value: "train.lr = 1e-05  (command_line: --lr)", sorted by key.
  [[nodiscard]] std::string explain() const;
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const ParamRegistry& registry() const { return *registry_; }

 private:
  const ParamSpec& spec_or_throw(std::string_view key) const;
  const nlohmann::json& value_or_throw(const ParamSpec& spec) const;
  const ParamRegistry* registry_;
  std::map<std::string, Entry> entries_;
};

// A parsed command line: values in argument order (later ones win) and the positional arguments.
struct CommandLine {
  struct Item {
    std::string key;
    std::string flag;  // as written, without "=value"
    nlohmann::json value;
  };
  std::vector<Item> values;
  std::vector<std::string> positional;
};

// Parses `--flag value`, `--flag=value`, boolean `--flag` / `--no-flag` / `--flag=false`, and
// "--" (everything after it is positional). Any other argument is positional. Throws
// Error(usage) with the flag as subject for unknown flags (suggesting the nearest one), missing
// values and values the spec rejects ("--lr: expected a number, got 'abc'").
[[nodiscard]] CommandLine parse_command_line(const ParamRegistry& registry,
                                             const std::vector<std::string>& args);
[[nodiscard]] CommandLine parse_command_line(const ParamRegistry& registry, int argc,
                                             const char* const* argv);

// Looks up an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Applies every value of a preset-shaped JSON object (nested tables or dotted keys, as
// load_preset returns) as one layer. The top-level keys "description" and "trainer" are preset metadata
// (core/presets.h) and are skipped. Throws Error(invalid_argument) with subject `origin` naming the key for
// unknown keys and rejected values.
void apply_preset_layer(ParamValues& values, const nlohmann::json& preset, ParamSource source,
                        const std::string& origin = {});
// For a preset that several commands share, each taking the keys it declares (training presets: mugv train
// and mugv train-vae): throws Error(invalid_argument) with subject `origin` for a key that none of
// `registries` declares (a typo such as train.learning_rate, with the nearest key suggested), so that no
// setting is silently ignored. Metadata keys as above.
void check_preset_keys(const nlohmann::json& preset, const std::vector<const ParamRegistry*>& registries,
                       const std::string& origin);
// Applies every registered env var that is set. Error(invalid_argument) naming the variable.
void apply_environment(ParamValues& values, const EnvLookup& env);
void apply_command_line(ParamValues& values, const CommandLine& command_line);

// Arguments ("--flag=VALUE") that give again the values `values` took from the command line, for the keys
// `include` accepts (all when empty): how a command re-runs itself elsewhere (srun in an sbatch script).
[[nodiscard]] std::vector<std::string> command_line_arguments(
    const ParamValues& values, const std::function<bool(const ParamSpec&)>& include = {});

struct ParamLayers {
  nlohmann::json preset;      // null or empty object = no preset
  std::string preset_origin;  // the preset's file, for messages and ParamValues::Entry::origin
  nlohmann::json user;        // the user's config file
  std::string user_origin;
  EnvLookup environment;  // empty = do not read the environment
  CommandLine command_line;
};

// builtin defaults < preset < user file < environment < command line.
[[nodiscard]] ParamValues resolve(const ParamRegistry& registry, const ParamLayers& layers);

}  // namespace mugv
