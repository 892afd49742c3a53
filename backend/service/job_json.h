#pragma once
// JSON forms of catalog records as they travel in replies and events (and as `mugv --json` prints them).

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/jobs.h"

#include <nlohmann/json.hpp>

#include <optional>

namespace mugv {

nlohmann::json to_json(const Job& job);
nlohmann::json to_json(const JobEvent& event);
nlohmann::json to_json(const Clip& clip, const std::optional<Caption>& caption);

}  // namespace mugv
