#pragma once
// Clips: a time range of a source inside a dataset, with the curation scores of MUG-V's pipeline
// (sharpness, motion, aesthetic, artifacts, perceptual hash), a keep/reject decision with its reason,
// and tags. A score that has not been computed is nullopt (stored as NULL), never 0.
// Writes run in their own write transaction or join the caller's; add_clips stores a whole batch in
// one transaction (all or nothing).

#include "catalog/catalog.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class ClipDecision { unknown = 0, keep, reject };

const char* to_string(ClipDecision decision);
std::optional<ClipDecision> clip_decision_from_string(std::string_view name);

// Bits of ClipScores::artifact_flags, one per kind of artifact the MUG-V artifact stage flags.
namespace artifact_flag {
constexpr uint32_t overlay = 1u << 0;       // text, logos, watermarks
constexpr uint32_t border = 1u << 1;        // black bars, picture-in-picture frames
constexpr uint32_t effect = 1u << 2;        // transitions, filters, special effects
constexpr uint32_t speed_change = 1u << 3;  // slow motion, time-lapse
constexpr uint32_t shake = 1u << 4;         // camera shake
}  // namespace artifact_flag

struct ClipScores {
  std::optional<double> sharpness;                  // variance of the Laplacian of luma
  std::optional<double> motion;                     // mean optical-flow magnitude, pixels
  std::optional<double> aesthetic;                  // LAION-style predictor, about 1..10
  std::optional<double> artifact_score;             // 0 clean .. 1 certainly flawed
  uint32_t artifact_flags = 0;                      // artifact_flag bits
  std::optional<uint64_t> phash;                    // 64-bit perceptual hash of a key frame
  nlohmann::json extra = nlohmann::json::object();  // further named scores
};

struct Clip {
  int64_t id = 0;
  int64_t dataset_id = 0;
  int64_t source_id = 0;
  double start_s = 0;
  double end_s = 0;
  int64_t start_frame = 0;
  int64_t end_frame = 0;  // exclusive
  double fps = 0;
  int width = 0;
  int height = 0;
  ClipScores scores;
  ClipDecision decision = ClipDecision::unknown;
  std::string reason;             // why it was kept or rejected, e.g. "sharpness<200"
  std::vector<std::string> tags;  // sorted, unique
  int64_t created_at_ms = 0;
};

struct ScoreRange {
  std::optional<double> min;  // inclusive
  std::optional<double> max;  // inclusive
  bool active() const { return min.has_value() || max.has_value(); }
};

// Which clips to list or count. Unset members do not filter; a score range excludes clips whose score
// is not computed yet. Results are ordered by clip id.
struct ClipFilter {
  std::optional<int64_t> dataset_id;
  std::optional<int64_t> source_id;
  std::optional<ClipDecision> decision;
  std::optional<std::string> reason;  // contained in the reason, case-insensitively ("sharpness<200")
  std::optional<std::string> tag;
  ScoreRange sharpness;
  ScoreRange motion;
  ScoreRange aesthetic;
  ScoreRange artifact_score;
  int64_t limit = 0;  // 0: no limit
  int64_t offset = 0;
};

// A filter written as text, for --clip-filter and the studio: comma-separated terms, all of which must hold:
//   decision=keep|reject|unknown   tag=NAME   reason~TEXT
//   SCORE>=X  SCORE<=X  (SCORE: sharpness, motion, aesthetic, artifact)
// e.g. "decision=keep,aesthetic>=5,tag=hq". An empty text is the empty filter. Throws Error(usage) naming
// `subject` and the term that is not understood.
[[nodiscard]] ClipFilter parse_clip_filter(std::string_view text, std::string_view subject = "--clip-filter");

// Stores the clips (ids and created_at_ms assigned) in one transaction and returns their ids in
// order. Error(not_found) naming the clip when its dataset or source does not exist,
// Error(invalid_argument) when a range is reversed; nothing is stored then.
[[nodiscard]] std::vector<int64_t> add_clips(Catalog& catalog, const std::vector<Clip>& clips);
[[nodiscard]] std::optional<Clip> get_clip(Catalog& catalog, int64_t id);
// Replaces all score columns of the clip. Error(not_found).
void update_clip_scores(Catalog& catalog, int64_t clip_id, const ClipScores& scores);
void set_clip_decision(Catalog& catalog, int64_t clip_id, ClipDecision decision, std::string_view reason);
// Replaces the clip's tags. Error(not_found); Error(invalid_argument) for an empty tag.
void set_clip_tags(Catalog& catalog, int64_t clip_id, const std::vector<std::string>& tags);
void add_clip_tag(Catalog& catalog, int64_t clip_id, std::string_view tag);
// Returns false when the clip did not have the tag.
bool remove_clip_tag(Catalog& catalog, int64_t clip_id, std::string_view tag);

[[nodiscard]] std::vector<Clip> list_clips(Catalog& catalog, const ClipFilter& filter);
// Number of clips matching the filter (limit and offset ignored).
[[nodiscard]] int64_t count_clips(Catalog& catalog, const ClipFilter& filter);

struct DecisionCount {
  ClipDecision decision = ClipDecision::unknown;
  std::string reason;
  int64_t clips = 0;
};
// Clip counts per (decision, reason) in a dataset, ordered by decision then reason; the curation
// report ("rejected: 120 sharpness<200, 40 motion>20").
[[nodiscard]] std::vector<DecisionCount> count_clips_by_decision(Catalog& catalog, int64_t dataset_id);

// Returns false when no such clip existed. Its captions and tags go with it.
bool delete_clip(Catalog& catalog, int64_t id);

}  // namespace mugv
