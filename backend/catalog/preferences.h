#pragma once
// Preference labels for post-training (train/preference.h): which of two generations of one prompt is
// better (a pair, for Diffusion-DPO and KTO), or whether one generation is good or bad (a single label, for
// KTO). A pair is stored unlabelled first (the studio's labelling view and `mugv label` show the pending
// ones) and labelled later by a person or an automatic labeller; "undo" clears a label back to pending.
// Both generations of a pair must exist; deleting a generation deletes the labels that use it.
// Writes run in their own write transaction or join the caller's.

#include "catalog/catalog.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// pending: not labelled yet. Pairs take a, b or skip (no preference: the two are equally good or bad);
// single labels take good or bad.
enum class PreferenceChoice { pending = 0, a, b, skip, good, bad };

const char* to_string(PreferenceChoice choice);
std::optional<PreferenceChoice> preference_choice_from_string(std::string_view name);

struct Preference {
  int64_t id = 0;
  int64_t generation_a = 0;
  std::optional<int64_t> generation_b;  // none: a single label of generation_a
  PreferenceChoice choice = PreferenceChoice::pending;
  std::string labeller;  // who labelled it: "human", "auto:shapes", ... ("" while pending)
  int64_t created_at_ms = 0;
  int64_t labelled_at_ms = 0;  // 0 while pending
  bool is_pair() const { return generation_b.has_value(); }
  // The preferred and the other generation of a pair labelled a or b.
  std::optional<std::pair<int64_t, int64_t>> winner_loser() const;
};

// Stores an unlabelled pair of two different generations. Error(not_found) naming a missing generation,
// Error(invalid_argument) when a == b, Error(conflict) when the pair (either order) is already stored.
[[nodiscard]] Preference add_preference_pair(Catalog& catalog, int64_t generation_a, int64_t generation_b);
// Stores (or replaces) the single label of `generation`: good or bad. Error(invalid_argument) for another
// choice or an empty labeller, Error(not_found) for a missing generation.
Preference set_single_label(Catalog& catalog, int64_t generation, PreferenceChoice choice,
                            std::string_view labeller);
// Labels the pair or single label `id`: a, b or skip for a pair, good or bad for a single label; pending
// clears the label (undo). Error(not_found), Error(invalid_argument) for a choice of the other kind or an
// empty labeller with a non-pending choice.
void label_preference(Catalog& catalog, int64_t id, PreferenceChoice choice, std::string_view labeller);
[[nodiscard]] std::optional<Preference> get_preference(Catalog& catalog, int64_t id);

struct PreferenceFilter {
  std::optional<bool> pending;  // true: unlabelled only, false: labelled only
  std::optional<bool> pairs;    // true: pairs only, false: single labels only
  std::optional<std::string>
      labeller;       // exactly this labeller ("human"), or a prefix ending in ':' ("auto:")
  int64_t limit = 0;  // 0: all
};
// Matching labels by id (pending ones oldest first: the labelling order).
[[nodiscard]] std::vector<Preference> list_preferences(Catalog& catalog, const PreferenceFilter& filter);
// The most recently labelled one matching `filter` (its pending flag is ignored): what "undo" clears.
[[nodiscard]] std::optional<Preference> last_labelled(Catalog& catalog, const PreferenceFilter& filter);

struct PreferenceCounts {
  int64_t pending = 0, preferred = 0, skipped = 0, good = 0, bad = 0;
};
[[nodiscard]] PreferenceCounts count_preferences(Catalog& catalog);

}  // namespace mugv
