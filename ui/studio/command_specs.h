#pragma once
// The job commands' parameters as the server describes them (`list_commands`, core/param_schema.h), and how a
// form field takes a parameter's bounds, default and help from them. The studio keeps no limit or default of
// its own for a field that a command parameter backs: a server's `mugv` and the studio's forms cannot drift.

#include "core/params.h"

#include <nlohmann/json.hpp>

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QLineEdit>
#include <QSpinBox>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace mugv::studio {

class BackendLink;

class CommandSpecs {
 public:
  // Reads a list_commands reply. A command or spec that does not parse is left out and named in problems().
  static CommandSpecs from_reply(const nlohmann::json& reply);

  // The parameter of `command` (its words, e.g. {"generate"}) with that flag; nullptr when the server has no
  // such command or parameter (an older server, or one built without LibTorch).
  [[nodiscard]] const ParamSpec* find(const std::vector<std::string>& command, const std::string& flag) const;
  [[nodiscard]] bool empty() const { return by_command_.empty(); }
  [[nodiscard]] const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::map<std::vector<std::string>, std::vector<ParamSpec>> by_command_;
  std::vector<std::string> problems_;
};

// Asks the server for its commands and calls `on_specs` with them on the UI thread (not on failure).
void fetch_command_specs(BackendLink& link, std::function<void(const CommandSpecs&)> on_specs);

// The field takes the spec's bounds (an unbounded side: the widget type's limit) and, the first time a spec
// is applied to it, the spec's default as its value; later calls keep what the user set. The tooltip is the
// field's own when it has one (it may say more), else the spec's help. A spec of another type is ignored.
void apply_spec(QSpinBox& field, const ParamSpec& spec);
void apply_spec(QDoubleSpinBox& field, const ParamSpec& spec);
// Text and size fields take the default only (the first time).
void apply_spec(QLineEdit& field, const ParamSpec& spec);
// A choice's values become the items (the current one kept when still offered, else the default).
void apply_spec(QComboBox& field, const ParamSpec& spec);

}  // namespace mugv::studio
