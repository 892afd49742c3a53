#pragma once
// Keep/reject decisions from stored clip scores and a set of thresholds (a curation preset).
//
// decide() is pure and cheap (no I/O, no allocation beyond the reason text), so changing a threshold and
// re-deciding a whole catalog from its stored scores takes seconds. Thresholds come from
// presets/curation/<name>.toml (see mugv.toml for every key); missing keys keep the defaults below, which
// are MUG-V's (docs/MUGV.md §1).

#include "curation/scene_detect.h"
#include "curation/scores.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace mugv {

struct CurationThresholds {
  double min_len_s = 2.0;  // clip length
  double max_len_s = 10.0;
  double sharpness_min = 200;
  double sharpness_max = 2000;
  double motion_min = 1;
  double motion_max = 20;
  double aesthetic_min = 4.5;
  ArtifactFlags reject_flags = ArtifactFlags::letterbox | ArtifactFlags::pillarbox |
                               ArtifactFlags::text_overlay | ArtifactFlags::frozen_frames |
                               ArtifactFlags::speed_change | ArtifactFlags::camera_shake;
};

// A curation preset: how to cut shots and which clips to keep.
struct CurationPreset {
  std::string name;
  std::string description;
  SceneDetectOptions scene;
  ScoreOptions scores;
  CurationThresholds thresholds;
  // aesthetic.model: a learned predictor file (aesthetic_model.h), relative to the working directory;
  // empty: the heuristic score.
  std::string aesthetic_model;
};

// Reads a preset from its nested JSON form (what core/presets.h load_preset returns). Unknown keys are
// ignored; a key of the wrong type or an unknown artifact name is Error(invalid_argument) naming the key.
[[nodiscard]] CurationPreset curation_preset_from_json(const nlohmann::json& values, std::string name = {});
// presets/curation/<name>.toml through the preset search path (user presets override built-in ones).
[[nodiscard]] CurationPreset load_curation_preset(std::string_view name);
// A preset file given by path (e.g. --thresholds my.toml).
[[nodiscard]] CurationPreset load_curation_preset_file(const std::filesystem::path& path);

enum class Verdict { unknown = 0, keep, reject };

const char* to_string(Verdict verdict);
std::optional<Verdict> verdict_from_string(std::string_view name);

struct Decision {
  Verdict verdict = Verdict::unknown;
  // Empty when kept; otherwise every failed rule, most basic first, joined by ", ":
  // "too_short<2", "too_long>10", "sharpness<200", "sharpness>2000", "motion<1", "motion>20",
  // "aesthetic<4.5", then artifact names ("letterbox", "text_overlay", ...).
  std::string reason;
};

[[nodiscard]] Decision decide(const ClipAnalysis& clip, const CurationThresholds& thresholds);

}  // namespace mugv
