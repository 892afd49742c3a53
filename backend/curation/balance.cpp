#include "curation/balance.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/presets.h"
#include "core/strings.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace mugv {
namespace {

constexpr const char* kBalancePrefix = "balance: ";

std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c >= 0x80) {
      current += static_cast<char>(std::tolower(c));
    } else if (!current.empty()) {
      words.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

bool contains_phrase(const std::vector<std::string>& words, const std::vector<std::string>& phrase) {
  if (phrase.empty() || phrase.size() > words.size()) return false;
  for (size_t i = 0; i + phrase.size() <= words.size(); ++i)
    if (std::equal(phrase.begin(), phrase.end(), words.begin() + static_cast<std::ptrdiff_t>(i))) return true;
  return false;
}

std::string category_of(const std::string& tag) {
  const size_t colon = tag.find(':');
  return colon == std::string::npos ? std::string() : tag.substr(0, colon);
}

int64_t dataset_id_or_throw(Catalog& catalog, std::string_view name) {
  auto d = find_dataset(catalog, name);
  if (!d) throw Error(ErrorCode::not_found, std::string(name), "no such dataset");
  return d->id;
}

}  // namespace

TagVocabulary tag_vocabulary_from_json(const nlohmann::json& values) {
  TagVocabulary vocabulary;
  for (auto cat_it = values.begin(); cat_it != values.end(); ++cat_it) {
    if (!cat_it->is_object()) continue;  // "description" and other top-level text
    TagCategory category;
    category.name = to_lower(cat_it.key());
    for (auto it = cat_it->begin(); it != cat_it->end(); ++it) {
      TagEntry entry;
      entry.tag = to_lower(it.key());
      const std::string key = cat_it.key() + "." + it.key();
      if (!it->is_array())
        throw Error(ErrorCode::invalid_argument, key, "must be a list of words or phrases");
      for (const auto& phrase : *it) {
        if (!phrase.is_string())
          throw Error(ErrorCode::invalid_argument, key, "must be a list of words or phrases");
        auto words = words_of(phrase.get<std::string>());
        if (!words.empty()) entry.phrases.push_back(std::move(words));
      }
      if (entry.phrases.empty()) entry.phrases.push_back(words_of(entry.tag));
      category.tags.push_back(std::move(entry));
    }
    vocabulary.categories.push_back(std::move(category));
  }
  return vocabulary;
}

TagVocabulary load_tag_vocabulary(std::string_view name_or_path) {
  return tag_vocabulary_from_json(load_preset_or_file("vocabularies", name_or_path));
}

std::vector<std::string> extract_tags(std::string_view caption, const TagVocabulary& vocabulary) {
  const auto words = words_of(caption);
  std::set<std::string> tags;
  for (const TagCategory& category : vocabulary.categories)
    for (const TagEntry& entry : category.tags)
      for (const auto& phrase : entry.phrases)
        if (contains_phrase(words, phrase)) {
          tags.insert(category.name + ":" + entry.tag);
          break;
        }
  return {tags.begin(), tags.end()};
}

TagReport tag_dataset(Catalog& catalog, std::string_view dataset_name, const TagVocabulary& vocabulary) {
  ClipFilter filter;
  filter.dataset_id = dataset_id_or_throw(catalog, dataset_name);
  std::set<std::string> managed;
  for (const TagCategory& c : vocabulary.categories) managed.insert(c.name);
  TagReport report;
  Transaction tx(catalog, TransactionMode::write);
  for (const Clip& clip : list_clips(catalog, filter)) {
    ++report.clips;
    std::vector<std::string> tags;
    for (const auto& tag : clip.tags)
      if (!managed.count(category_of(tag))) tags.push_back(tag);
    if (auto caption = current_caption(catalog, clip.id)) {
      ++report.captioned;
      const auto found = extract_tags(caption->text, vocabulary);
      if (!found.empty()) ++report.tagged;
      tags.insert(tags.end(), found.begin(), found.end());
    }
    std::sort(tags.begin(), tags.end());
    tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
    if (tags != clip.tags) set_clip_tags(catalog, clip.id, tags);
  }
  tx.commit();
  return report;
}

BalanceReport balance_dataset(Catalog& catalog, std::string_view dataset_name,
                              const BalanceOptions& options) {
  if (options.cap_per_tag < 1)
    throw Error(ErrorCode::invalid_argument, "--cap",
                cat("the cap must be at least 1, got ", options.cap_per_tag));
  ClipFilter filter;
  filter.dataset_id = dataset_id_or_throw(catalog, dataset_name);
  const std::set<std::string> capped_categories(options.categories.begin(), options.categories.end());
  Transaction tx(catalog, TransactionMode::write);
  std::vector<Clip> candidates;
  for (Clip& clip : list_clips(catalog, filter)) {
    const bool earlier = clip.decision == ClipDecision::reject && starts_with(clip.reason, kBalancePrefix);
    if (clip.decision == ClipDecision::keep || earlier) candidates.push_back(std::move(clip));
  }
  std::sort(candidates.begin(), candidates.end(), [&](const Clip& a, const Clip& b) {
    const double aa = a.scores.aesthetic.value_or(0), ba = b.scores.aesthetic.value_or(0);
    if (aa != ba) return aa > ba;
    const double as = a.scores.sharpness.value_or(0), bs = b.scores.sharpness.value_or(0);
    if (as != bs) return as > bs;
    const uint64_t ha = splitmix64(options.seed ^ splitmix64(static_cast<uint64_t>(a.id)));
    const uint64_t hb = splitmix64(options.seed ^ splitmix64(static_cast<uint64_t>(b.id)));
    if (ha != hb) return ha < hb;
    return a.id < b.id;
  });
  BalanceReport report;
  report.candidates = static_cast<int64_t>(candidates.size());
  std::map<std::string, int64_t> counts;
  for (const Clip& clip : candidates) {
    std::vector<std::string> capped;
    for (const auto& tag : clip.tags) {
      const std::string category = category_of(tag);
      if (category.empty()) continue;
      if (capped_categories.empty() || capped_categories.count(category)) capped.push_back(tag);
    }
    std::string full;
    for (const auto& tag : capped)
      if (counts[tag] >= options.cap_per_tag) {
        full = tag;
        break;
      }
    if (full.empty()) {
      for (const auto& tag : capped) ++counts[tag];
      ++report.kept;
      if (clip.decision != ClipDecision::keep) set_clip_decision(catalog, clip.id, ClipDecision::keep, "");
    } else {
      ++report.rejected;
      const std::string reason = cat(kBalancePrefix, full, " over cap ", options.cap_per_tag);
      if (clip.decision != ClipDecision::reject || clip.reason != reason)
        set_clip_decision(catalog, clip.id, ClipDecision::reject, reason);
    }
  }
  tx.commit();
  report.tag_counts.assign(counts.begin(), counts.end());
  return report;
}

}  // namespace mugv
