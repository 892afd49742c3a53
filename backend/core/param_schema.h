#pragma once
// The parameter registry as JSON, for clients that build forms from it (the studio's Generate page and
// new-run dialog ask the server, which knows the commands, rather than keeping their own limits and
// defaults).
//
// One spec reads:
//   {"key": "generate.cfg", "flag": "--cfg", "type": "real", "default": 4.0, "help": "...", "group":
//   "generate",
//    "label": "cfg", "min": 0, "max": null, "choices": [], "item_type": "text"}
// "min"/"max" are null when unbounded, "default" is null when the parameter has no default. `env`,
// `value_name` and `names_under_home` are not carried: they concern the server's own command line and files.

#include "core/params.h"

#include <nlohmann/json.hpp>

namespace mugv {

[[nodiscard]] nlohmann::json param_spec_to_json(const ParamSpec& spec);

// Throws Error(invalid_argument) naming the spec's key (or "param spec") and the problem: a missing key or
// type, an unknown type, fields of the wrong JSON type, min above max, a choice without choices.
[[nodiscard]] ParamSpec param_spec_from_json(const nlohmann::json& json);

// Every spec of the registry in registration order.
[[nodiscard]] nlohmann::json param_registry_to_json(const ParamRegistry& registry);

}  // namespace mugv
