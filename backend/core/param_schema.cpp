#include "core/param_schema.h"

#include "core/error.h"
#include "core/strings.h"

#include <string>

namespace mugv {

namespace {

nlohmann::json bound_json(const std::optional<double>& bound) {
  return bound ? nlohmann::json(*bound) : nlohmann::json(nullptr);
}

[[noreturn]] void refuse(const std::string& what, const std::string& problem) {
  throw Error(ErrorCode::invalid_argument, what, problem);
}

std::string text_field(const nlohmann::json& json, const char* name, const std::string& what) {
  const auto it = json.find(name);
  if (it == json.end() || it->is_null()) return {};
  if (!it->is_string()) refuse(what, cat("'", name, "' must be a string"));
  return it->get<std::string>();
}

std::optional<double> bound_field(const nlohmann::json& json, const char* name, const std::string& what) {
  const auto it = json.find(name);
  if (it == json.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) refuse(what, cat("'", name, "' must be a number or null"));
  return it->get<double>();
}

ParamType type_field(const nlohmann::json& json, const char* name, const std::string& what) {
  const std::string text = text_field(json, name, what);
  const auto type = param_type_from_string(text);
  if (!type || *type == ParamType::unknown) refuse(what, cat("unknown ", name, " '", text, "'"));
  return *type;
}

}  // namespace

nlohmann::json param_spec_to_json(const ParamSpec& spec) {
  return {{"key", spec.key},
          {"flag", spec.flag},
          {"type", to_string(spec.type)},
          {"default", spec.default_value},
          {"help", spec.help},
          {"group", spec.group},
          {"label", spec.label},
          {"min", bound_json(spec.min_value)},
          {"max", bound_json(spec.max_value)},
          {"choices", spec.choices},
          {"item_type", to_string(spec.item_type)}};
}

ParamSpec param_spec_from_json(const nlohmann::json& json) {
  if (!json.is_object()) refuse("param spec", "expected an object");
  ParamSpec spec;
  spec.key = text_field(json, "key", "param spec");
  if (spec.key.empty()) refuse("param spec", "'key' is missing");
  const std::string& what = spec.key;
  spec.flag = text_field(json, "flag", what);
  spec.type = type_field(json, "type", what);
  spec.default_value = json.value("default", nlohmann::json());
  spec.help = text_field(json, "help", what);
  spec.group = text_field(json, "group", what);
  spec.label = text_field(json, "label", what);
  spec.min_value = bound_field(json, "min", what);
  spec.max_value = bound_field(json, "max", what);
  if (spec.min_value && spec.max_value && *spec.min_value > *spec.max_value)
    refuse(what, cat("min ", nlohmann::json(*spec.min_value).dump(), " is above max ",
                     nlohmann::json(*spec.max_value).dump()));
  if (const auto choices = json.find("choices"); choices != json.end() && !choices->is_null()) {
    if (!choices->is_array()) refuse(what, "'choices' must be a list of strings");
    for (const auto& choice : *choices) {
      if (!choice.is_string()) refuse(what, "'choices' must be a list of strings");
      spec.choices.push_back(choice.get<std::string>());
    }
  }
  if (spec.type == ParamType::choice && spec.choices.empty()) refuse(what, "a choice without choices");
  if (json.contains("item_type")) spec.item_type = type_field(json, "item_type", what);
  return spec;
}

nlohmann::json param_registry_to_json(const ParamRegistry& registry) {
  nlohmann::json specs = nlohmann::json::array();
  for (const ParamSpec& spec : registry.specs()) specs.push_back(param_spec_to_json(spec));
  return specs;
}

}  // namespace mugv
