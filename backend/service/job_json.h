#pragma once
// JSON forms of catalog records as they travel in replies and events (and as `mugv --json` prints them).

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/jobs.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace mugv {

// A job carries "depends_on" (the jobs it runs after), and while it is queued "waiting_on" (those of them
// that have not succeeded yet) and "blocked_by" (those of them that ended failed, interrupted or cancelled
// and wait for a retry); both are empty lists otherwise (catalog/jobs.h).
nlohmann::json to_json(const Job& job);
nlohmann::json to_json(const JobEvent& event);
nlohmann::json to_json(const Clip& clip, const std::optional<Caption>& caption);

// The run a training job (a job JSON: "kind" "train") writes: the `run` parameter among the `values` of its
// params (keyed "<group>.run", as parse_command_arguments gives them); "" for a job of another kind (a
// generate job's run is the model it reads, not one it writes) or without one.
std::string training_run(const nlohmann::json& job);

}  // namespace mugv
