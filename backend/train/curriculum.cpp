#include "train/curriculum.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/presets.h"
#include "core/strings.h"

#include <algorithm>
#include <cmath>

namespace mugv {
namespace {

constexpr const char* kStageKeys[] = {"until",         "until_share",       "image_share",  "image_share_end",
                                      "latent_frames", "latent_frames_end", "p_first_frame"};

// Reads one stage's keys, naming the source, the stage and the key in every error.
class StageReader {
 public:
  StageReader(const nlohmann::json& stage, std::string where) : stage_(stage), where_(std::move(where)) {}

  std::optional<double> number(const char* key, double lo, double hi) const {
    const auto it = stage_.find(key);
    if (it == stage_.end()) return std::nullopt;
    if (!it->is_number()) fail(key, "expected a number");
    const double v = it->get<double>();
    if (!std::isfinite(v) || v < lo || v > hi) fail(key, cat(v, " is outside [", lo, ", ", hi, "]"));
    return v;
  }
  std::optional<int64_t> integer(const char* key, int64_t lo) const {
    const auto it = stage_.find(key);
    if (it == stage_.end()) return std::nullopt;
    if (!it->is_number_integer()) fail(key, "expected an integer");
    const int64_t v = it->get<int64_t>();
    if (v < lo) fail(key, cat(v, " is below ", lo));
    return v;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw Error(ErrorCode::invalid_argument, where_, cat("key '", key, "': ", why));
  }

 private:
  const nlohmann::json& stage_;
  std::string where_;
};

}  // namespace

Curriculum Curriculum::resolved(int64_t total_steps) const {
  Curriculum out = *this;
  int64_t previous = 0;
  for (size_t i = 0; i < out.stages.size(); ++i) {
    CurriculumStage& s = out.stages[i];
    if (s.until_share > 0) s.until = std::llround(s.until_share * double(total_steps));
    s.until_share = 0;
    if (s.until <= previous)
      throw Error(ErrorCode::invalid_argument, source,
                  cat("stage ", i + 1, " would end at step ", s.until, ", not after the stage before (",
                      previous, "); a run of ", total_steps, " steps is too short for it"));
    previous = s.until;
  }
  return out;
}

nlohmann::json Curriculum::to_json() const {
  nlohmann::json stages_json = nlohmann::json::array();
  for (const auto& s : stages) {
    nlohmann::json j = {{"image_share", s.image_share},
                        {"image_share_end", s.image_share_end},
                        {"latent_frames", s.latent_frames},
                        {"latent_frames_end", s.latent_frames_end}};
    if (s.p_first_frame) j["p_first_frame"] = *s.p_first_frame;
    if (s.until_share > 0)
      j["until_share"] = s.until_share;
    else
      j["until"] = s.until;
    stages_json.push_back(std::move(j));
  }
  return {{"source", source}, {"stage", stages_json}};
}

Curriculum curriculum_from_json(const nlohmann::json& preset, const std::string& source) {
  if (!preset.is_object()) throw Error(ErrorCode::invalid_argument, source, "a curriculum is a table");
  for (auto it = preset.begin(); it != preset.end(); ++it)
    if (it.key() != "stage" && it.key() != "description" && it.key() != "source")
      throw Error(ErrorCode::invalid_argument, source,
                  cat("unknown key '", it.key(), "' (known: description, [[stage]])"));
  const auto stages = preset.find("stage");
  if (stages == preset.end() || !stages->is_array() || stages->empty())
    throw Error(ErrorCode::invalid_argument, source, "no [[stage]]: a curriculum needs at least one stage");
  Curriculum c;
  c.source = source;
  int64_t previous = 0;
  double previous_share = 0;
  for (size_t i = 0; i < stages->size(); ++i) {
    const nlohmann::json& j = (*stages)[i];
    const std::string where = cat(source, ": stage ", i + 1);
    if (!j.is_object()) throw Error(ErrorCode::invalid_argument, where, "expected a table");
    for (auto it = j.begin(); it != j.end(); ++it)
      if (std::find(std::begin(kStageKeys), std::end(kStageKeys), it.key()) == std::end(kStageKeys))
        throw Error(ErrorCode::invalid_argument, where,
                    cat("unknown key '", it.key(),
                        "' (known: until, until_share, image_share, image_share_end, latent_frames, "
                        "latent_frames_end, p_first_frame)"));
    const StageReader r(j, where);
    CurriculumStage s;
    const auto until = r.integer("until", 1);
    const auto share = r.number("until_share", 0, 1);
    if (until.has_value() == share.has_value())
      r.fail("until", "give the stage's last step (until) or its share of the run's steps (until_share)");
    if (share && (*share <= previous_share || previous > 0))
      r.fail("until_share", cat(*share, " does not follow the previous stage's end"));
    if (until && (*until <= previous || previous_share > 0))
      r.fail("until", cat(*until, " does not follow the previous stage's end"));
    if (until) s.until = previous = *until;
    if (share) s.until_share = previous_share = *share;
    s.image_share = r.number("image_share", 0, 1).value_or(0);
    s.image_share_end = r.number("image_share_end", 0, 1).value_or(s.image_share);
    s.latent_frames = r.integer("latent_frames", 0).value_or(0);
    s.latent_frames_end = r.integer("latent_frames_end", 0).value_or(s.latent_frames);
    if ((s.latent_frames == 0) != (s.latent_frames_end == 0))
      r.fail("latent_frames_end", "whole clips (0) at one end of a stage need 0 at the other too");
    s.p_first_frame = r.number("p_first_frame", 0, 1);
    c.stages.push_back(s);
  }
  return c;
}

Curriculum load_curriculum(const std::string& name_or_file) {
  return curriculum_from_json(
      load_preset_or_file("curricula", name_or_file),
      names_preset_file(name_or_file) ? name_or_file : cat("curriculum '", name_or_file, "'"));
}

nlohmann::json CurriculumStep::to_json() const {
  nlohmann::json j = {{"stage", stage}, {"images", images}, {"latent_frames", latent_frames}};
  if (p_first_frame) j["p_first_frame"] = *p_first_frame;
  return j;
}

CurriculumStep curriculum_step(const Curriculum& curriculum, int64_t step, uint64_t seed) {
  CurriculumStep out;
  if (curriculum.empty()) return out;
  size_t k = 0;
  while (k + 1 < curriculum.stages.size() && step > curriculum.stages[k].until) ++k;
  const CurriculumStage& s = curriculum.stages[k];
  const int64_t first = k == 0 ? 1 : curriculum.stages[k - 1].until + 1;
  // Where the step stands in its stage, 0 at the first step and 1 at the last (and after it).
  const double progress =
      s.until > first ? std::clamp(double(step - first) / double(s.until - first), 0.0, 1.0) : 1.0;
  out.stage = static_cast<int>(k);
  const double share = s.image_share + (s.image_share_end - s.image_share) * progress;
  // A uniform draw in [0, 1) from the top 53 bits of the step's hash.
  const double draw =
      double(splitmix64(splitmix64(seed ^ 0x696d616765ull) ^ uint64_t(step)) >> 11) * 0x1.0p-53;
  out.images = draw < share;
  out.latent_frames = static_cast<int64_t>(
      std::llround(double(s.latent_frames) + double(s.latent_frames_end - s.latent_frames) * progress));
  out.p_first_frame = s.p_first_frame;
  return out;
}

}  // namespace mugv
