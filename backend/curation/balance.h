#pragma once
// Content tags from captions and a balanced, stratified selection of a dataset's kept clips.
//
// Tags: a vocabulary (presets/vocabularies/tags.toml, or any TOML file of that shape) has one table per
// category (subject, action, scene); each key is a tag and its value the words or phrases that mean it:
//   [subject]
//   dog = ["dog", "dogs", "puppy"]
// A caption is lower-cased and split into words; a phrase matches a run of whole words, so "cat" does
// not match "cathedral". Tags are stored as "category:tag" ("subject:dog"); tag_dataset replaces only
// tags of the vocabulary's categories, so tags set by hand in other categories stay.
//
// Balance: a clip's capped tags are those of the capped categories (all when none are named). Clips are
// visited best first (aesthetic, then sharpness, then a seeded hash of the id, so ties are broken the same
// way on every run with the same seed); a clip is accepted while every one of its capped tags is under the
// cap, otherwise it is rejected with reason "balance: subject:dog over cap N" (the first full tag).
// Clips an earlier balance rejected are reconsidered, so re-running with a larger cap brings them back.
// Not thread-safe with respect to the Catalog passed in.

#include "catalog/catalog.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

struct TagEntry {
  std::string tag;                                // "dog"
  std::vector<std::vector<std::string>> phrases;  // each a sequence of lower-case words
};

struct TagCategory {
  std::string name;  // "subject"
  std::vector<TagEntry> tags;
};

struct TagVocabulary {
  std::vector<TagCategory> categories;
};

// presets/curation/NAME.toml through the preset search path, or a .toml path (contains '/' or ends in
// .toml). Error(not_found), Error(format) as load_preset; Error(invalid_argument) for a value that is not
// a list of strings.
[[nodiscard]] TagVocabulary load_tag_vocabulary(std::string_view name_or_path = "tags");
[[nodiscard]] TagVocabulary tag_vocabulary_from_json(const nlohmann::json& values);

// "category:tag" for every tag whose phrase occurs in `caption`, sorted, each once; empty for none.
[[nodiscard]] std::vector<std::string> extract_tags(std::string_view caption,
                                                    const TagVocabulary& vocabulary);

struct TagReport {
  int64_t clips = 0;
  int64_t captioned = 0;  // clips with a current caption
  int64_t tagged = 0;     // clips that got at least one vocabulary tag
};

// Sets every clip's vocabulary tags from its current caption. Error(not_found) for an unknown dataset.
TagReport tag_dataset(Catalog& catalog, std::string_view dataset_name, const TagVocabulary& vocabulary);

struct BalanceOptions {
  int64_t cap_per_tag = 0;              // >= 1
  std::vector<std::string> categories;  // capped categories; empty: every category seen in the tags
  uint64_t seed = 0;
};

struct BalanceReport {
  int64_t candidates = 0;  // kept clips (and earlier balance rejections) considered
  int64_t kept = 0;
  int64_t rejected = 0;                                     // over a cap
  std::vector<std::pair<std::string, int64_t>> tag_counts;  // kept clips per capped tag, by tag
};

// Error(not_found) for an unknown dataset, Error(invalid_argument) for a cap below 1.
BalanceReport balance_dataset(Catalog& catalog, std::string_view dataset_name, const BalanceOptions& options);

}  // namespace mugv
