#pragma once
// JSON forms of catalog records as they travel in replies and events (and as `mugv --json` prints them).

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/jobs.h"

#include <nlohmann/json.hpp>

#include <optional>

namespace mugv {

// A job carries "depends_on" (the jobs it runs after), and while it is queued "waiting_on" (those of them
// that have not succeeded yet) and "blocked_by" (those of them that ended failed, interrupted or cancelled
// and wait for a retry); both are empty lists otherwise (catalog/jobs.h).
nlohmann::json to_json(const Job& job);
nlohmann::json to_json(const JobEvent& event);
nlohmann::json to_json(const Clip& clip, const std::optional<Caption>& caption);

}  // namespace mugv
