#include "command_specs.h"

#include "backend_link.h"
#include "core/error.h"
#include "core/param_schema.h"

#include <limits>

namespace mugv::studio {

namespace {

// Set on a field once a spec gave it its default, so a later refresh keeps what the user typed.
constexpr const char* kDefaultApplied = "mugv_spec_default_applied";

bool take_default_once(QWidget& field, const ParamSpec& spec) {
  if (spec.default_value.is_null() || field.property(kDefaultApplied).toBool()) return false;
  field.setProperty(kDefaultApplied, true);
  return true;
}

void apply_help(QWidget& field, const ParamSpec& spec) {
  if (field.toolTip().isEmpty() && !spec.help.empty()) field.setToolTip(QString::fromStdString(spec.help));
}

}  // namespace

CommandSpecs CommandSpecs::from_reply(const nlohmann::json& reply) {
  CommandSpecs specs;
  const nlohmann::json commands = reply.value("commands", nlohmann::json::array());
  if (!commands.is_array()) {
    specs.problems_.push_back("list_commands: 'commands' is not a list");
    return specs;
  }
  for (const auto& command : commands) {
    if (!command.is_object() || !command.contains("command") || !command["command"].is_array()) {
      specs.problems_.push_back("list_commands: a command without its words");
      continue;
    }
    std::vector<std::string> words;
    for (const auto& word : command["command"])
      if (word.is_string()) words.push_back(word.get<std::string>());
    std::vector<ParamSpec>& params = specs.by_command_[words];
    for (const auto& param : command.value("params", nlohmann::json::array())) {
      try {
        params.push_back(param_spec_from_json(param));
      } catch (const Error& e) {
        specs.problems_.push_back(e.what());
      }
    }
  }
  return specs;
}

const ParamSpec* CommandSpecs::find(const std::vector<std::string>& command, const std::string& flag) const {
  const auto it = by_command_.find(command);
  if (it == by_command_.end()) return nullptr;
  for (const ParamSpec& spec : it->second)
    if (spec.flag == flag) return &spec;
  return nullptr;
}

void fetch_command_specs(BackendLink& link, std::function<void(const CommandSpecs&)> on_specs) {
  link.call(protocol::MessageType::list_commands, nlohmann::json::object(),
            [on_specs = std::move(on_specs)](const nlohmann::json& reply) {
              on_specs(CommandSpecs::from_reply(reply));
            });
}

void apply_spec(QSpinBox& field, const ParamSpec& spec) {
  if (spec.type != ParamType::integer) return;
  constexpr double low = std::numeric_limits<int>::min(), high = std::numeric_limits<int>::max();
  field.setRange(static_cast<int>(spec.min_value ? std::max(*spec.min_value, low) : low),
                 static_cast<int>(spec.max_value ? std::min(*spec.max_value, high) : high));
  if (take_default_once(field, spec) && spec.default_value.is_number())
    field.setValue(spec.default_value.get<int>());
  apply_help(field, spec);
}

void apply_spec(QDoubleSpinBox& field, const ParamSpec& spec) {
  if (spec.type != ParamType::real && spec.type != ParamType::integer) return;
  // An unbounded side shows as ±1e9: a spin box sizes itself to its longest value, and no scale a person
  // types comes near it.
  constexpr double high = 1e9;
  field.setRange(spec.min_value ? *spec.min_value : -high, spec.max_value ? *spec.max_value : high);
  if (take_default_once(field, spec) && spec.default_value.is_number())
    field.setValue(spec.default_value.get<double>());
  apply_help(field, spec);
}

void apply_spec(QLineEdit& field, const ParamSpec& spec) {
  if (take_default_once(field, spec) && spec.default_value.is_string())
    field.setText(QString::fromStdString(spec.default_value.get<std::string>()));
  apply_help(field, spec);
}

void apply_spec(QComboBox& field, const ParamSpec& spec) {
  if (spec.type != ParamType::choice || spec.choices.empty()) return;
  const bool first = take_default_once(field, spec);
  const QString current = field.currentText();
  field.clear();
  for (const auto& choice : spec.choices) field.addItem(QString::fromStdString(choice));
  const QString fallback = spec.default_value.is_string()
                               ? QString::fromStdString(spec.default_value.get<std::string>())
                               : QString();
  const QString wanted = first || field.findText(current) < 0 ? fallback : current;
  if (const int index = field.findText(wanted); index >= 0) field.setCurrentIndex(index);
  apply_help(field, spec);
}

}  // namespace mugv::studio
