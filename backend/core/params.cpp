#include "core/params.h"

#include "core/paths.h"
#include "core/strings.h"
#include "core/utf8.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace mugv {
namespace {

constexpr std::array<std::pair<ParamType, const char*>, 9> kTypeNames{{
    {ParamType::unknown, "unknown"},
    {ParamType::boolean, "boolean"},
    {ParamType::integer, "integer"},
    {ParamType::real, "real"},
    {ParamType::text, "text"},
    {ParamType::path, "path"},
    {ParamType::choice, "choice"},
    {ParamType::size2d, "size2d"},
    {ParamType::list, "list"},
}};

constexpr std::array<std::pair<ParamSource, const char*>, 6> kSourceNames{{
    {ParamSource::unknown, "unknown"},
    {ParamSource::builtin_default, "builtin_default"},
    {ParamSource::preset, "preset"},
    {ParamSource::user_file, "user_file"},
    {ParamSource::environment, "environment"},
    {ParamSource::command_line, "command_line"},
}};

std::string format_number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", value);
  return buf;
}

// How a rejected input is quoted back: text as typed, JSON values in JSON spelling.
std::string quote_input(const nlohmann::json& value, ValueForm form) {
  if (form == ValueForm::text && value.is_string()) return "'" + value.get<std::string>() + "'";
  return value.dump();
}

std::optional<int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::optional<double> parse_real(const std::string& text) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front()))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<bool> parse_bool(const std::string& text) {
  std::string t = to_lower(text);
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  return std::nullopt;
}

std::string check_bounds(const ParamSpec& spec, double value) {
  if (spec.min_value && value < *spec.min_value)
    return cat("must be at least ", format_number(*spec.min_value), ", got ", format_number(value));
  if (spec.max_value && value > *spec.max_value)
    return cat("must be at most ", format_number(*spec.max_value), ", got ", format_number(value));
  return {};
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

ValueCheck fail(std::string problem) {
  return ValueCheck{nlohmann::json(), std::move(problem)};
}

// Values are stored and sent as JSON (run configs, job parameters, sample metadata), whose writer throws on
// bytes that are not UTF-8: a prompt typed in a Latin-1 terminal is refused here, naming the parameter,
// rather than failing when a long generation's metadata is written.
std::string not_utf8(const std::string& text) {
  return cat("is not UTF-8 text: '", valid_utf8(text), "' (invalid bytes shown as \xEF\xBF\xBD)");
}

ValueCheck check_scalar(const ParamSpec& spec, ParamType type, const nlohmann::json& value, ValueForm form) {
  const bool as_text = form == ValueForm::text && value.is_string();
  const std::string text = value.is_string() ? value.get<std::string>() : std::string();
  switch (type) {
    case ParamType::boolean: {
      if (value.is_boolean()) return {value, {}};
      if (as_text)
        if (auto b = parse_bool(text)) return {*b, {}};
      return fail("expected true or false, got " + quote_input(value, form));
    }
    case ParamType::integer: {
      std::optional<int64_t> v;
      if (as_text)
        v = parse_int(trim(text));
      else if (value.is_number_integer() &&
               !(value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(INT64_MAX)))
        v = value.get<int64_t>();
      if (!v) return fail("expected an integer, got " + quote_input(value, form));
      if (auto problem = check_bounds(spec, double(*v)); !problem.empty()) return fail(problem);
      return {*v, {}};
    }
    case ParamType::real: {
      std::optional<double> v;
      if (as_text)
        v = parse_real(trim(text));
      else if (value.is_number())
        v = value.get<double>();
      if (!v || !std::isfinite(*v)) return fail("expected a number, got " + quote_input(value, form));
      if (auto problem = check_bounds(spec, *v); !problem.empty()) return fail(problem);
      return {*v, {}};
    }
    case ParamType::text:
      if (!value.is_string()) return fail("expected text, got " + quote_input(value, form));
      if (!is_utf8(text)) return fail(not_utf8(text));
      return {value, {}};
    case ParamType::path:
      if (!value.is_string()) return fail("expected a path, got " + quote_input(value, form));
      if (text.empty()) return fail("expected a path, got an empty string");
      if (!is_utf8(text)) return fail(not_utf8(text));
      return {value, {}};
    case ParamType::choice:
      if (!value.is_string() ||
          std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end())
        return fail(cat("must be one of ", join(spec.choices, ", "), "; got ", quote_input(value, form)));
      return {value, {}};
    case ParamType::size2d: {
      std::optional<Size2D> size;
      if (value.is_string()) {
        size = parse_size2d(trim(text));
      } else if (form == ValueForm::json && value.is_array() && value.size() == 2 &&
                 value[0].is_number_integer() && value[1].is_number_integer() &&
                 value[0].get<int64_t>() > 0 && value[1].get<int64_t>() > 0) {
        size = Size2D{value[0].get<int64_t>(), value[1].get<int64_t>()};
      }
      if (!size) return fail("expected a size like 64x64 (width x height), got " + quote_input(value, form));
      for (int64_t dim : {size->width, size->height})
        if (auto problem = check_bounds(spec, double(dim)); !problem.empty())
          return fail("each dimension " + problem);
      return {to_string(*size), {}};
    }
    default:
      return fail(cat("parameter type ", to_string(type), " cannot hold a value"));
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "; did you mean X?" for the closest candidate, or empty when none is close.
std::string suggestion(std::string_view wrong, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = std::max<size_t>(2, wrong.size() / 3) + 1;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(wrong, c);
    if (d < best_distance) {
      best_distance = d;
      best = &c;
    }
  }
  return best ? "; did you mean " + *best + "?" : std::string();
}

std::string value_placeholder(const ParamSpec& spec) {
  if (!spec.value_name.empty()) return spec.value_name;
  switch (spec.type) {
    case ParamType::integer:
      return "N";
    case ParamType::real:
      return "X";
    case ParamType::path:
      return "PATH";
    case ParamType::choice:
      return "{" + join(spec.choices, "|") + "}";
    case ParamType::size2d:
      return "WxH";
    case ParamType::list:
      return "A,B,...";
    default:
      return "TEXT";
  }
}

std::string display_value(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::vector<std::string> items;
    for (const auto& item : value) items.push_back(display_value(item));
    return join(items, ",");
  }
  if (value.is_number_float()) return format_number(value.get<double>());
  return value.dump();
}

}  // namespace

const char* to_string(ParamType type) {
  for (const auto& [t, name] : kTypeNames)
    if (t == type) return name;
  return "unknown";
}

std::optional<ParamType> param_type_from_string(std::string_view name) {
  for (const auto& [t, n] : kTypeNames)
    if (name == n) return t;
  return std::nullopt;
}

const char* to_string(ParamSource source) {
  for (const auto& [s, name] : kSourceNames)
    if (s == source) return name;
  return "unknown";
}

std::optional<ParamSource> param_source_from_string(std::string_view name) {
  for (const auto& [s, n] : kSourceNames)
    if (name == n) return s;
  return std::nullopt;
}

std::optional<Size2D> parse_size2d(std::string_view text) {
  size_t x = text.find_first_of("xX");
  if (x == std::string_view::npos) return std::nullopt;
  auto w = parse_int(text.substr(0, x));
  auto h = parse_int(text.substr(x + 1));
  if (!w || !h || *w <= 0 || *h <= 0 || text[0] == '+' || text[x + 1] == '+') return std::nullopt;
  return Size2D{*w, *h};
}

std::string to_string(const Size2D& size) {
  return cat(size.width, "x", size.height);
}

ValueCheck check_param_value(const ParamSpec& spec, const nlohmann::json& value, ValueForm form) {
  if (spec.type != ParamType::list) return check_scalar(spec, spec.type, value, form);
  nlohmann::json items = nlohmann::json::array();
  if (form == ValueForm::text && value.is_string()) {
    std::string text = trim(value.get<std::string>());
    if (!text.empty())
      for (const std::string& part : split(text, ',')) items.push_back(trim(part));
  } else if (value.is_array()) {
    items = value;
  } else {
    return fail("expected a list, got " + quote_input(value, form));
  }
  const ValueForm item_form =
      form == ValueForm::text && value.is_string() ? ValueForm::text : ValueForm::json;
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < items.size(); ++i) {
    ValueCheck item = check_scalar(spec, spec.item_type, items[i], item_form);
    if (!item.problem.empty()) return fail(cat("item ", i + 1, ": ", item.problem));
    out.push_back(std::move(item.value));
  }
  return {out, {}};
}

std::string display_label(const ParamSpec& spec) {
  if (!spec.label.empty()) return spec.label;
  size_t dot = spec.key.rfind('.');
  return dot == std::string::npos ? spec.key : spec.key.substr(dot + 1);
}

// ---- ParamRegistry ----

const ParamSpec& ParamRegistry::add(ParamSpec spec) {
  const std::string subject = spec.key.empty() ? spec.flag : spec.key;
  auto bad = [&](const std::string& problem) {
    return Error(ErrorCode::internal, subject, "bad parameter spec: " + problem);
  };
  if (spec.key.empty()) throw bad("empty key");
  for (const std::string& part : split(spec.key, '.'))
    if (part.empty()) throw bad("key has an empty segment");
  if (by_key_.count(spec.key)) throw bad("key registered twice");
  for (const ParamSpec& other : specs_)
    if (starts_with(other.key, spec.key + ".") || starts_with(spec.key, other.key + "."))
      throw bad("key clashes with " + other.key + " (a key cannot be both a value and a table)");
  if (!spec.flag.empty()) {
    if (!starts_with(spec.flag, "--") || spec.flag.size() < 3 || spec.flag.find('=') != std::string::npos)
      throw bad("flag must look like --name");
    if (by_flag_.count(spec.flag)) throw bad("flag " + spec.flag + " registered twice");
  }
  if (!spec.env.empty() && by_env_.count(spec.env)) throw bad("env var " + spec.env + " registered twice");
  if (spec.type == ParamType::unknown) throw bad("unknown type");
  if (spec.type == ParamType::list &&
      (spec.item_type == ParamType::list || spec.item_type == ParamType::unknown))
    throw bad("list items must be a scalar type");
  const bool uses_choices =
      spec.type == ParamType::choice || (spec.type == ParamType::list && spec.item_type == ParamType::choice);
  if (uses_choices && spec.choices.empty()) throw bad("a choice needs choices");
  if (!spec.default_value.is_null()) {
    ValueCheck check = check_param_value(spec, spec.default_value, ValueForm::json);
    if (!check.problem.empty()) throw bad("default value " + check.problem);
    spec.default_value = std::move(check.value);
  }
  size_t index = specs_.size();
  specs_.push_back(std::move(spec));
  const ParamSpec& added = specs_.back();
  by_key_.emplace(added.key, index);
  if (!added.flag.empty()) by_flag_.emplace(added.flag, index);
  if (!added.env.empty()) by_env_.emplace(added.env, index);
  return added;
}

const ParamSpec* ParamRegistry::find_by_key(std::string_view key) const {
  auto it = by_key_.find(std::string(key));
  return it == by_key_.end() ? nullptr : &specs_[it->second];
}

const ParamSpec* ParamRegistry::find_by_flag(std::string_view flag) const {
  auto it = by_flag_.find(std::string(flag.substr(0, flag.find('='))));
  return it == by_flag_.end() ? nullptr : &specs_[it->second];
}

std::vector<std::string> ParamRegistry::groups() const {
  std::vector<std::string> out;
  for (const ParamSpec& spec : specs_)
    if (std::find(out.begin(), out.end(), spec.group) == out.end()) out.push_back(spec.group);
  return out;
}

std::string ParamRegistry::help_text() const {
  constexpr size_t kHelpColumn = 30;
  std::ostringstream out;
  bool first_section = true;
  for (const std::string& group : groups()) {
    std::vector<const ParamSpec*> members;
    for (const ParamSpec& spec : specs_)
      if (spec.group == group && !spec.flag.empty()) members.push_back(&spec);
    if (members.empty()) continue;
    if (!first_section) out << "\n";
    first_section = false;
    out << (group.empty() ? std::string("options") : group) << ":\n";
    for (const ParamSpec* spec : members) {
      std::string left = "  " + spec->flag;
      if (spec->type == ParamType::boolean)
        left += ", --no-" + spec->flag.substr(2);
      else
        left += " " + value_placeholder(*spec);
      std::vector<std::string> details;
      if (!spec->default_value.is_null()) details.push_back("default: " + display_value(spec->default_value));
      if (spec->min_value && spec->max_value)
        details.push_back(
            cat("range: ", format_number(*spec->min_value), "..", format_number(*spec->max_value)));
      else if (spec->min_value)
        details.push_back("min: " + format_number(*spec->min_value));
      else if (spec->max_value)
        details.push_back("max: " + format_number(*spec->max_value));
      if (spec->type == ParamType::list && spec->item_type == ParamType::choice)
        details.push_back("items: " + join(spec->choices, ", "));
      if (!spec->env.empty()) details.push_back("env: " + spec->env);
      std::string right = spec->help;
      if (!details.empty()) right += (right.empty() ? "(" : " (") + join(details, "; ") + ")";
      if (left.size() + 2 > kHelpColumn)
        out << left << "\n" << std::string(kHelpColumn, ' ') << right << "\n";
      else
        out << left << std::string(kHelpColumn - left.size(), ' ') << right << "\n";
    }
  }
  return out.str();
}

// ---- ParamValues ----

ParamValues::ParamValues(const ParamRegistry& registry) : registry_(&registry) {}

const ParamSpec& ParamValues::spec_or_throw(std::string_view key) const {
  const ParamSpec* spec = registry_->find_by_key(key);
  if (!spec) throw Error(ErrorCode::internal, std::string(key), "parameter is not registered");
  return *spec;
}

const nlohmann::json& ParamValues::value_or_throw(const ParamSpec& spec) const {
  auto it = entries_.find(spec.key);
  if (it == entries_.end())
    throw Error(ErrorCode::invalid_argument, spec.flag.empty() ? spec.key : spec.flag,
                "required, but no value was given" +
                    (spec.flag.empty() ? std::string() : " (pass " + spec.flag + ")"));
  return it->second.value;
}

void ParamValues::set(std::string_view key, const nlohmann::json& value, ParamSource source,
                      std::string origin) {
  const ParamSpec& spec = spec_or_throw(key);
  ValueCheck check = check_param_value(spec, value, ValueForm::json);
  if (!check.problem.empty())
    throw Error(ErrorCode::invalid_argument, origin.empty() ? spec.key : origin,
                spec.key + ": " + check.problem);
  entries_[spec.key] = Entry{std::move(check.value), source, std::move(origin)};
}

void ParamValues::unset(std::string_view key) {
  entries_.erase(spec_or_throw(key).key);
}

bool ParamValues::has(std::string_view key) const {
  return entries_.count(spec_or_throw(key).key) != 0;
}

const ParamValues::Entry* ParamValues::entry(std::string_view key) const {
  auto it = entries_.find(spec_or_throw(key).key);
  return it == entries_.end() ? nullptr : &it->second;
}

ParamSource ParamValues::source_of(std::string_view key) const {
  const Entry* e = entry(key);
  return e ? e->source : ParamSource::unknown;
}

const nlohmann::json& ParamValues::get(std::string_view key) const {
  return value_or_throw(spec_or_throw(key));
}

namespace {
void require_type(const ParamSpec& spec, std::initializer_list<ParamType> types, const char* getter) {
  for (ParamType t : types)
    if (spec.type == t) return;
  throw Error(ErrorCode::internal, spec.key,
              cat(getter, " called on a parameter of type ", to_string(spec.type)));
}
void require_list_of(const ParamSpec& spec, std::initializer_list<ParamType> types, const char* getter) {
  require_type(spec, {ParamType::list}, getter);
  for (ParamType t : types)
    if (spec.item_type == t) return;
  throw Error(ErrorCode::internal, spec.key, cat(getter, " called on a list of ", to_string(spec.item_type)));
}
}  // namespace

bool ParamValues::get_bool(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_type(spec, {ParamType::boolean}, "get_bool");
  return value_or_throw(spec).get<bool>();
}

int64_t ParamValues::get_int(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_type(spec, {ParamType::integer}, "get_int");
  return value_or_throw(spec).get<int64_t>();
}

double ParamValues::get_real(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_type(spec, {ParamType::real}, "get_real");
  return value_or_throw(spec).get<double>();
}

std::string ParamValues::get_text(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_type(spec, {ParamType::text, ParamType::path, ParamType::choice}, "get_text");
  return value_or_throw(spec).get<std::string>();
}

Size2D ParamValues::get_size2d(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_type(spec, {ParamType::size2d}, "get_size2d");
  auto size = parse_size2d(value_or_throw(spec).get<std::string>());
  if (!size) throw Error(ErrorCode::internal, spec.key, "stored size is not canonical");
  return *size;
}

std::vector<std::string> ParamValues::get_text_list(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_list_of(spec, {ParamType::text, ParamType::path, ParamType::choice, ParamType::size2d},
                  "get_text_list");
  return value_or_throw(spec).get<std::vector<std::string>>();
}

std::vector<int64_t> ParamValues::get_int_list(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_list_of(spec, {ParamType::integer}, "get_int_list");
  return value_or_throw(spec).get<std::vector<int64_t>>();
}

std::vector<double> ParamValues::get_real_list(std::string_view key) const {
  const ParamSpec& spec = spec_or_throw(key);
  require_list_of(spec, {ParamType::real}, "get_real_list");
  return value_or_throw(spec).get<std::vector<double>>();
}

nlohmann::json ParamValues::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, entry] : entries_) {
    nlohmann::json* node = &out;
    for (const std::string& part : split(key, '.')) node = &(*node)[part];
    *node = entry.value;
  }
  return out;
}

std::string ParamValues::explain() const {
  std::ostringstream out;
  for (const auto& [key, entry] : entries_) {
    out << key << " = " << display_value(entry.value) << "  (" << to_string(entry.source);
    if (!entry.origin.empty()) out << ": " << entry.origin;
    out << ")\n";
  }
  return out.str();
}

// ---- command line and layers ----

CommandLine parse_command_line(const ParamRegistry& registry, const std::vector<std::string>& args) {
  CommandLine result;
  auto all_flags = [&] {
    std::vector<std::string> flags;
    for (const ParamSpec& spec : registry.specs()) {
      if (spec.flag.empty()) continue;
      flags.push_back(spec.flag);
      if (spec.type == ParamType::boolean) flags.push_back("--no-" + spec.flag.substr(2));
    }
    return flags;
  };
  auto is_flag = [&](const std::string& arg) {
    if (!starts_with(arg, "--") || arg.size() < 3) return false;
    if (registry.find_by_flag(arg)) return true;
    const ParamSpec* negated =
        starts_with(arg, "--no-") ? registry.find_by_flag("--" + arg.substr(5)) : nullptr;
    return negated && negated->type == ParamType::boolean;
  };

  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || !starts_with(arg, "--") || arg == "--") {
      if (arg == "--" && !only_positional)
        only_positional = true;
      else
        result.positional.push_back(arg);
      continue;
    }
    size_t eq = arg.find('=');
    std::string flag = arg.substr(0, eq);
    std::optional<std::string> inline_value;
    if (eq != std::string::npos) inline_value = arg.substr(eq + 1);

    const ParamSpec* spec = registry.find_by_flag(flag);
    bool negated = false;
    if (!spec && starts_with(flag, "--no-")) {
      const ParamSpec* positive = registry.find_by_flag("--" + flag.substr(5));
      if (positive && positive->type == ParamType::boolean) {
        spec = positive;
        negated = true;
      }
    }
    if (!spec) throw Error(ErrorCode::usage, flag, "unknown option" + suggestion(flag, all_flags()));

    nlohmann::json raw;
    if (negated) {
      if (inline_value) throw Error(ErrorCode::usage, flag, "takes no value");
      raw = false;
    } else if (spec->type == ParamType::boolean) {
      raw = inline_value ? nlohmann::json(*inline_value) : nlohmann::json(true);
    } else if (inline_value) {
      raw = *inline_value;
    } else if (i + 1 < args.size() && !is_flag(args[i + 1])) {
      raw = args[++i];
    } else {
      throw Error(ErrorCode::usage, flag, cat("expects a value (", value_placeholder(*spec), ")"));
    }
    ValueCheck check = check_param_value(*spec, raw, ValueForm::text);
    if (!check.problem.empty()) throw Error(ErrorCode::usage, flag, check.problem);
    // A list flag given again adds to the list ("--set a=1 --set b=2" is "--set a=1,b=2").
    if (spec->type == ParamType::list) {
      auto previous = std::find_if(result.values.begin(), result.values.end(),
                                   [&](const CommandLine::Item& item) { return item.key == spec->key; });
      if (previous != result.values.end() && previous->value.is_array() && check.value.is_array()) {
        for (auto& item : check.value) previous->value.push_back(std::move(item));
        continue;
      }
    }
    result.values.push_back(CommandLine::Item{spec->key, flag, std::move(check.value)});
  }
  return result;
}

CommandLine parse_command_line(const ParamRegistry& registry, int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_command_line(registry, args);
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

namespace {

bool is_preset_metadata(const std::string& prefix, const std::string& name) {
  return prefix.empty() && (name == "description" || name == "trainer");
}

[[noreturn]] void unknown_preset_key(const std::string& key,
                                     const std::vector<const ParamRegistry*>& registries,
                                     const std::string& origin) {
  std::vector<std::string> keys;
  for (const ParamRegistry* registry : registries)
    for (const ParamSpec& spec : registry->specs()) keys.push_back(spec.key);
  throw Error(ErrorCode::invalid_argument, origin.empty() ? std::string("preset") : origin,
              "unknown key '" + key + "'" + suggestion(key, keys));
}

void apply_node(ParamValues& values, const nlohmann::json& node, const std::string& prefix,
                ParamSource source, const std::string& origin) {
  for (const auto& [name, value] : node.items()) {
    if (is_preset_metadata(prefix, name)) continue;
    std::string key = prefix.empty() ? name : prefix + "." + name;
    if (values.registry().find_by_key(key)) {
      values.set(key, value, source, origin);
    } else if (value.is_object()) {
      apply_node(values, value, key, source, origin);
    } else {
      unknown_preset_key(key, {&values.registry()}, origin);
    }
  }
}

void check_node(const nlohmann::json& node, const std::string& prefix,
                const std::vector<const ParamRegistry*>& registries, const std::string& origin) {
  for (const auto& [name, value] : node.items()) {
    if (is_preset_metadata(prefix, name)) continue;
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const bool declared = std::any_of(registries.begin(), registries.end(),
                                      [&](const ParamRegistry* r) { return r->find_by_key(key) != nullptr; });
    if (declared) continue;
    if (!value.is_object()) unknown_preset_key(key, registries, origin);
    check_node(value, key, registries, origin);
  }
}

}  // namespace

void apply_preset_layer(ParamValues& values, const nlohmann::json& preset, ParamSource source,
                        const std::string& origin) {
  if (preset.is_null()) return;
  if (!preset.is_object())
    throw Error(ErrorCode::invalid_argument, origin.empty() ? std::string("preset") : origin,
                "expected a table of settings");
  apply_node(values, preset, {}, source, origin);
}

void check_preset_keys(const nlohmann::json& preset, const std::vector<const ParamRegistry*>& registries,
                       const std::string& origin) {
  if (preset.is_object()) check_node(preset, {}, registries, origin);
}

void apply_environment(ParamValues& values, const EnvLookup& env) {
  if (!env) return;
  for (const ParamSpec& spec : values.registry().specs()) {
    if (spec.env.empty()) continue;
    std::optional<std::string> text = env(spec.env);
    if (!text) continue;
    ValueCheck check = check_param_value(spec, *text, ValueForm::text);
    if (!check.problem.empty()) throw Error(ErrorCode::invalid_argument, spec.env, check.problem);
    values.set(spec.key, check.value, ParamSource::environment, spec.env);
  }
}

void apply_command_line(ParamValues& values, const CommandLine& command_line) {
  for (const CommandLine::Item& item : command_line.values)
    values.set(item.key, item.value, ParamSource::command_line, item.flag);
}

ParamValues resolve(const ParamRegistry& registry, const ParamLayers& layers) {
  ParamValues values(registry);
  for (const ParamSpec& spec : registry.specs())
    if (!spec.default_value.is_null()) values.set(spec.key, spec.default_value, ParamSource::builtin_default);
  apply_preset_layer(values, layers.preset, ParamSource::preset, layers.preset_origin);
  apply_preset_layer(values, layers.user, ParamSource::user_file, layers.user_origin);
  apply_environment(values, layers.environment);
  apply_command_line(values, layers.command_line);
  return values;
}

std::vector<std::string> command_line_arguments(const ParamValues& values,
                                                const std::function<bool(const ParamSpec&)>& include) {
  std::vector<std::string> args;
  for (const ParamSpec& spec : values.registry().specs()) {
    if (spec.flag.empty() || values.source_of(spec.key) != ParamSource::command_line) continue;
    if (include && !include(spec)) continue;
    const nlohmann::json& v = values.get(spec.key);
    std::string text;
    if (v.is_string()) {
      text = v.get<std::string>();
    } else if (v.is_boolean()) {
      text = v.get<bool>() ? "true" : "false";
    } else if (v.is_array()) {
      for (const auto& item : v)
        text += (text.empty() ? "" : ",") + (item.is_string() ? item.get<std::string>() : item.dump());
    } else {
      text = v.dump();
    }
    args.push_back(spec.flag + "=" + text);
  }
  return args;
}

std::string resolve_path_value(const ParamSpec& spec, const std::string& value) {
  if (spec.names_under_home.empty() || value.empty() || value.find('/') != std::string::npos) return value;
  std::error_code ec;
  if (std::filesystem::exists(value, ec)) return value;
  return (mugv_home() / spec.names_under_home / value).string();
}

}  // namespace mugv
