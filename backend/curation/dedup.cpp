#include "curation/dedup.h"

#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/error.h"
#include "core/strings.h"
#include "curation/pipeline.h"
#include "curation/scores.h"

#include <algorithm>
#include <unordered_map>

namespace mugv {
namespace {

constexpr int kBlocks = 4;
constexpr int kBlockBits = 16;
constexpr const char* kDuplicatePrefix = "duplicate of clip ";

uint16_t block_of(uint64_t hash, int b) {
  return static_cast<uint16_t>(hash >> (b * kBlockBits));
}

// Every 16-bit value within `radius` bits of `value`.
void neighbours(uint16_t value, int radius, int first_bit, std::vector<uint16_t>& out) {
  out.push_back(value);
  if (radius == 0) return;
  for (int bit = first_bit; bit < kBlockBits; ++bit)
    neighbours(static_cast<uint16_t>(value ^ (1u << bit)), radius - 1, bit + 1, out);
}

class MultiIndex {
 public:
  void add(uint64_t hash, size_t item) {
    for (int b = 0; b < kBlocks; ++b) tables_[b][block_of(hash, b)].push_back(item);
  }
  // Items sharing a block within `radius` bits with `hash`; may repeat an item.
  template <typename Fn>
  void candidates(uint64_t hash, int radius, std::vector<uint16_t>& scratch, Fn&& fn) const {
    for (int b = 0; b < kBlocks; ++b) {
      scratch.clear();
      neighbours(block_of(hash, b), radius, 0, scratch);
      for (uint16_t v : scratch) {
        auto it = tables_[b].find(v);
        if (it == tables_[b].end()) continue;
        for (size_t item : it->second) fn(item);
      }
    }
  }

 private:
  std::unordered_map<uint16_t, std::vector<size_t>> tables_[kBlocks];
};

bool near(const HashedClip& a, const HashedClip& b, const DedupOptions& o) {
  int sum = 0;
  for (int k = 0; k < 3; ++k) {
    const int d = hamming_distance(a.phash[k], b.phash[k]);
    if (o.match == HashMatch::all_keyframes && d > o.max_distance) return false;
    sum += d;
  }
  return o.match == HashMatch::all_keyframes || sum <= 3 * o.max_distance;
}

}  // namespace

const char* to_string(HashMatch match) {
  switch (match) {
    case HashMatch::all_keyframes:
      return "all";
    case HashMatch::mean:
      return "mean";
    case HashMatch::unknown:
      break;
  }
  return "unknown";
}

std::optional<HashMatch> hash_match_from_string(std::string_view name) {
  for (HashMatch m : {HashMatch::unknown, HashMatch::all_keyframes, HashMatch::mean})
    if (name == to_string(m)) return m;
  return std::nullopt;
}

std::vector<DuplicateOf> find_duplicates(std::vector<HashedClip> clips, const DedupOptions& options) {
  if (options.max_distance < 0 || options.max_distance > 20)
    throw Error(ErrorCode::invalid_argument, "--max-distance",
                cat(options.max_distance, " is outside 0..20 bits"));
  if (options.match == HashMatch::unknown)
    throw Error(ErrorCode::invalid_argument, "--match", "must be all or mean");
  std::sort(clips.begin(), clips.end(), [](const HashedClip& a, const HashedClip& b) {
    if (a.aesthetic != b.aesthetic) return a.aesthetic > b.aesthetic;
    if (a.sharpness != b.sharpness) return a.sharpness > b.sharpness;
    return a.id < b.id;
  });
  // all_keyframes: the middle hashes are within d, so indexing those finds every pair. mean: the three
  // distances sum to at most 3d, so at least one keyframe position is within d; index all three.
  const int positions = options.match == HashMatch::all_keyframes ? 1 : 3;
  const int first_position = options.match == HashMatch::all_keyframes ? 1 : 0;
  const int radius = options.max_distance / kBlocks;
  std::vector<MultiIndex> index(3);
  std::vector<size_t> accepted_of;  // position in `clips` of each accepted clip
  std::vector<DuplicateOf> duplicates;
  std::vector<uint16_t> scratch;
  for (size_t i = 0; i < clips.size(); ++i) {
    const HashedClip& clip = clips[i];
    std::optional<size_t> best;  // the earliest accepted (best scored) near clip
    for (int k = first_position; k < first_position + positions; ++k) {
      index[k].candidates(clip.phash[k], radius, scratch, [&](size_t item) {
        if ((!best || item < *best) && near(clip, clips[item], options)) best = item;
      });
    }
    if (best) {
      duplicates.push_back({clip.id, clips[*best].id});
      continue;
    }
    for (int k = first_position; k < first_position + positions; ++k) index[k].add(clip.phash[k], i);
  }
  return duplicates;
}

DedupReport dedup_dataset(Catalog& catalog, std::string_view dataset_name, const DedupOptions& options) {
  auto dataset = find_dataset(catalog, dataset_name);
  if (!dataset) throw Error(ErrorCode::not_found, std::string(dataset_name), "no such dataset");
  ClipFilter filter;
  filter.dataset_id = dataset->id;
  Transaction tx(catalog, TransactionMode::write);
  std::vector<HashedClip> hashed;
  std::unordered_map<int64_t, bool> was_duplicate;
  for (const Clip& clip : list_clips(catalog, filter)) {
    const bool earlier_duplicate =
        clip.decision == ClipDecision::reject && starts_with(clip.reason, kDuplicatePrefix);
    if (clip.decision != ClipDecision::keep && !earlier_duplicate) continue;
    const auto analysis = clip_analysis_from_scores(clip);
    if (!analysis && !clip.scores.phash) continue;
    HashedClip h;
    h.id = clip.id;
    h.phash = analysis ? analysis->phash
                       : std::array<uint64_t, 3>{*clip.scores.phash, *clip.scores.phash, *clip.scores.phash};
    h.aesthetic = clip.scores.aesthetic.value_or(0);
    h.sharpness = clip.scores.sharpness.value_or(0);
    hashed.push_back(h);
    was_duplicate[clip.id] = earlier_duplicate;
  }
  DedupReport report;
  report.clips_checked = static_cast<int64_t>(hashed.size());
  std::unordered_map<int64_t, int64_t> duplicate_of;
  for (const DuplicateOf& d : find_duplicates(hashed, options)) duplicate_of[d.clip_id] = d.kept_id;
  for (const HashedClip& h : hashed) {
    auto it = duplicate_of.find(h.id);
    if (it != duplicate_of.end()) {
      set_clip_decision(catalog, h.id, ClipDecision::reject, cat(kDuplicatePrefix, it->second));
      ++report.duplicates;
    } else if (was_duplicate[h.id]) {
      set_clip_decision(catalog, h.id, ClipDecision::keep, "");
      ++report.restored;
    }
  }
  tx.commit();
  return report;
}

}  // namespace mugv
