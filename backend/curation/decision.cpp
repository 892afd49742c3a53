#include "curation/decision.h"

#include "core/error.h"
#include "core/presets.h"

#include <sstream>

namespace mugv {

const char* to_string(Verdict verdict) {
  switch (verdict) {
    case Verdict::keep:
      return "keep";
    case Verdict::reject:
      return "reject";
    case Verdict::unknown:
      break;
  }
  return "unknown";
}

std::optional<Verdict> verdict_from_string(std::string_view name) {
  for (Verdict v : {Verdict::unknown, Verdict::keep, Verdict::reject}) {
    if (name == to_string(v)) return v;
  }
  return std::nullopt;
}

namespace {

// Shortest text that reads back as the same number: 200, 4.5, 0.25.
std::string number(double value) {
  std::ostringstream out;
  out.precision(10);
  out << value;
  return out.str();
}

const nlohmann::json* table(const nlohmann::json& values, const char* name) {
  auto it = values.find(name);
  if (it == values.end()) return nullptr;
  if (!it->is_object()) throw Error(ErrorCode::invalid_argument, name, "must be a table");
  return &*it;
}

void read(const nlohmann::json* t, const char* section, const char* key, double& out) {
  if (!t) return;
  auto it = t->find(key);
  if (it == t->end()) return;
  if (!it->is_number()) {
    throw Error(ErrorCode::invalid_argument, std::string(section) + "." + key, "must be a number");
  }
  out = it->get<double>();
}

void read(const nlohmann::json* t, const char* section, const char* key, int& out) {
  double value = out;
  read(t, section, key, value);
  out = static_cast<int>(value);
}

}  // namespace

CurationPreset curation_preset_from_json(const nlohmann::json& values, std::string name) {
  CurationPreset preset;
  preset.name = std::move(name);
  if (!values.is_object())
    throw Error(ErrorCode::invalid_argument, preset.name, "a curation preset must be a table");
  if (auto it = values.find("description"); it != values.end() && it->is_string()) preset.description = *it;

  CurationThresholds& t = preset.thresholds;
  const nlohmann::json* clip = table(values, "clip");
  read(clip, "clip", "min_len_s", t.min_len_s);
  read(clip, "clip", "max_len_s", t.max_len_s);
  const nlohmann::json* sharpness = table(values, "sharpness");
  read(sharpness, "sharpness", "min", t.sharpness_min);
  read(sharpness, "sharpness", "max", t.sharpness_max);
  const nlohmann::json* motion = table(values, "motion");
  read(motion, "motion", "min", t.motion_min);
  read(motion, "motion", "max", t.motion_max);
  read(table(values, "aesthetic"), "aesthetic", "min", t.aesthetic_min);
  if (const nlohmann::json* aesthetic = table(values, "aesthetic")) {
    if (auto it = aesthetic->find("model"); it != aesthetic->end()) {
      if (!it->is_string())
        throw Error(ErrorCode::invalid_argument, "aesthetic.model", "must be a file path");
      preset.aesthetic_model = it->get<std::string>();
    }
  }

  if (const nlohmann::json* artifacts = table(values, "artifacts")) {
    if (auto it = artifacts->find("reject"); it != artifacts->end()) {
      if (!it->is_array())
        throw Error(ErrorCode::invalid_argument, "artifacts.reject", "must be a list of names");
      t.reject_flags = ArtifactFlags::none;
      for (const auto& item : *it) {
        const auto flag =
            item.is_string() ? artifact_flags_from_string(item.get<std::string>()) : std::nullopt;
        if (!flag) {
          std::string known;
          for (ArtifactFlags f : all_artifact_flags())
            known += std::string(known.empty() ? "" : ", ") + to_string(f);
          throw Error(ErrorCode::invalid_argument, "artifacts.reject",
                      "unknown artifact " + item.dump() + " (known: " + known + ")");
        }
        t.reject_flags |= *flag;
      }
    }
    ScoreOptions& s = preset.scores;
    read(artifacts, "artifacts", "border_min_fraction", s.border_min_fraction);
    read(artifacts, "artifacts", "overlay_min_fraction", s.overlay_min_fraction);
    read(artifacts, "artifacts", "frozen_min_ratio", s.frozen_min_ratio);
    read(artifacts, "artifacts", "speed_change_min_ratio", s.speed_change_min_ratio);
    read(artifacts, "artifacts", "shake_min_px", s.shake_min_px);
  }

  if (const nlohmann::json* scene = table(values, "scene")) {
    SceneDetectOptions& o = preset.scene;
    read(scene, "scene", "adaptive_ratio", o.adaptive_ratio);
    read(scene, "scene", "min_content_diff", o.min_content_diff);
    read(scene, "scene", "min_structure_diff", o.min_structure_diff);
    read(scene, "scene", "adaptive_window_frames", o.adaptive_window_frames);
    read(scene, "scene", "fade_black_luma", o.fade_black_luma);
    read(scene, "scene", "fade_white_luma", o.fade_white_luma);
    read(scene, "scene", "dissolve_half_window_frames", o.dissolve_half_window_frames);
    read(scene, "scene", "dissolve_min_change", o.dissolve_min_change);
    read(scene, "scene", "dissolve_max_nonlinearity", o.dissolve_max_nonlinearity);
    read(scene, "scene", "dissolve_min_colour_change", o.dissolve_min_colour_change);
    read(scene, "scene", "min_scene_len_s", o.min_scene_len_s);
  }
  if (t.sharpness_min > t.sharpness_max || t.motion_min > t.motion_max ||
      (t.max_len_s > 0 && t.min_len_s > t.max_len_s)) {
    throw Error(ErrorCode::invalid_argument, preset.name.empty() ? "curation preset" : preset.name,
                "a minimum is larger than its maximum");
  }
  return preset;
}

CurationPreset load_curation_preset(std::string_view name) {
  return curation_preset_from_json(load_preset("curation", name), std::string(name));
}

CurationPreset load_curation_preset_file(const std::filesystem::path& path) {
  return curation_preset_from_json(load_preset_file(path, "curation"), path.stem().string());
}

Decision decide(const ClipAnalysis& clip, const CurationThresholds& t) {
  std::string reason;
  auto fail = [&](const std::string& why) {
    if (!reason.empty()) reason += ", ";
    reason += why;
  };
  const double length_s = clip.end_s - clip.start_s;
  // Frame times carry rounding; a clip a microsecond short of the limit is not too short.
  if (length_s + 1e-6 < t.min_len_s) fail("too_short<" + number(t.min_len_s));
  if (t.max_len_s > 0 && length_s > t.max_len_s + 1e-6) fail("too_long>" + number(t.max_len_s));
  if (clip.sharpness < t.sharpness_min) fail("sharpness<" + number(t.sharpness_min));
  if (clip.sharpness > t.sharpness_max) fail("sharpness>" + number(t.sharpness_max));
  if (clip.motion < t.motion_min) fail("motion<" + number(t.motion_min));
  if (clip.motion > t.motion_max) fail("motion>" + number(t.motion_max));
  if (clip.aesthetic < t.aesthetic_min) fail("aesthetic<" + number(t.aesthetic_min));
  for (ArtifactFlags flag : all_artifact_flags()) {
    if (has_any(clip.flags, flag) && has_any(t.reject_flags, flag)) fail(to_string(flag));
  }
  return {reason.empty() ? Verdict::keep : Verdict::reject, reason};
}

}  // namespace mugv
