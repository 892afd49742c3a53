#pragma once
// Near-duplicate removal among a dataset's kept clips by perceptual hash (scores.h: one 64-bit pHash per
// keyframe at the clip's start, middle and end).
//
// Two clips are near duplicates when their hashes are within max_distance bits: on every keyframe
// (HashMatch::all_keyframes) or on average over the three (HashMatch::mean). Clips are visited best first
// (aesthetic, then sharpness, then id); a clip near an already accepted one is rejected with reason
// "duplicate of clip N" (N the accepted one), so each group keeps its best clip.
//
// Candidates come from multi-index hashing: each hash is cut into 4 blocks of 16 bits indexed in hash
// tables, and a query probes every block value within floor(max_distance / 4) bits of its own (pigeonhole:
// two hashes within d bits agree within floor(d/4) bits on at least one block). Work grows with the clips
// times the probes (a few hundred for d = 10), not with the square of the clips.
//
// dedup_dataset re-examines kept clips and clips an earlier dedup rejected, so it is idempotent and a new
// max_distance can bring duplicates back. Not thread-safe with respect to the Catalog passed in.

#include "catalog/catalog.h"

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace mugv {

enum class HashMatch { unknown = 0, all_keyframes, mean };

const char* to_string(HashMatch match);
std::optional<HashMatch> hash_match_from_string(std::string_view name);

struct DedupOptions {
  int max_distance = 10;  // bits of 64, 0..20
  HashMatch match = HashMatch::all_keyframes;
};

struct HashedClip {
  int64_t id = 0;
  std::array<uint64_t, 3> phash{};
  double aesthetic = 0;
  double sharpness = 0;
};

struct DuplicateOf {
  int64_t clip_id = 0;
  int64_t kept_id = 0;
};

// The duplicates among `clips` and the clip each duplicates, in the order found. Error(invalid_argument)
// for a distance outside 0..20 or an unknown match.
[[nodiscard]] std::vector<DuplicateOf> find_duplicates(std::vector<HashedClip> clips,
                                                       const DedupOptions& options);

struct DedupReport {
  int64_t clips_checked = 0;  // kept clips with hashes
  int64_t duplicates = 0;     // rejected as duplicates after this run
  int64_t restored = 0;       // earlier duplicates kept again
};

// Error(not_found) for an unknown dataset.
DedupReport dedup_dataset(Catalog& catalog, std::string_view dataset_name, const DedupOptions& options);

}  // namespace mugv
