#include "catalog/preferences.h"

#include "catalog/detail.h"

#include <algorithm>

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<PreferenceChoice, 6> kChoiceNames{{{PreferenceChoice::pending, ""},
                                                       {PreferenceChoice::a, "a"},
                                                       {PreferenceChoice::b, "b"},
                                                       {PreferenceChoice::skip, "skip"},
                                                       {PreferenceChoice::good, "good"},
                                                       {PreferenceChoice::bad, "bad"}}};

constexpr const char* kColumns =
    "SELECT id, generation_a, generation_b, choice, labeller, created_at_ms, labelled_at_ms FROM "
    "preferences ";

Preference read_preference(const sqlite::Statement& s) {
  Preference p;
  p.id = s.int64(0);
  p.generation_a = s.int64(1);
  p.generation_b = s.optional_int64(2);
  p.choice = enum_column(s, 3, kChoiceNames);
  p.labeller = s.text(4);
  p.created_at_ms = s.int64(5);
  p.labelled_at_ms = s.int64(6);
  return p;
}

void require_generation(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare("SELECT 1 FROM generations WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) throw_not_found(catalog, cat("generation ", id));
}

bool pair_choice(PreferenceChoice c) {
  return c == PreferenceChoice::a || c == PreferenceChoice::b || c == PreferenceChoice::skip;
}
bool single_choice(PreferenceChoice c) {
  return c == PreferenceChoice::good || c == PreferenceChoice::bad;
}

// The WHERE clause of a filter (the pending flag only when `with_pending`), its text bound as ?1.
std::string where_clause(const PreferenceFilter& filter, bool with_pending) {
  std::vector<std::string> terms;
  if (with_pending && filter.pending) terms.push_back(*filter.pending ? "choice = ''" : "choice <> ''");
  if (filter.pairs) terms.push_back(*filter.pairs ? "generation_b IS NOT NULL" : "generation_b IS NULL");
  if (filter.labeller)
    terms.push_back(!filter.labeller->empty() && filter.labeller->back() == ':'
                        ? "substr(labeller, 1, length(?1)) = ?1"
                        : "labeller = ?1");
  else
    terms.push_back("?1 IS NULL");  // keeps ?1 bound in every statement
  std::string where = "WHERE ";
  for (size_t i = 0; i < terms.size(); ++i) where += (i ? " AND " : "") + terms[i];
  return where + " ";
}

}  // namespace

const char* to_string(PreferenceChoice choice) {
  return choice == PreferenceChoice::pending ? "pending" : enum_name(kChoiceNames, choice);
}

std::optional<PreferenceChoice> preference_choice_from_string(std::string_view name) {
  if (name == "pending") return PreferenceChoice::pending;
  if (name.empty()) return std::nullopt;
  return enum_value(kChoiceNames, name);
}

std::optional<std::pair<int64_t, int64_t>> Preference::winner_loser() const {
  if (!generation_b) return std::nullopt;
  if (choice == PreferenceChoice::a) return std::make_pair(generation_a, *generation_b);
  if (choice == PreferenceChoice::b) return std::make_pair(*generation_b, generation_a);
  return std::nullopt;
}

Preference add_preference_pair(Catalog& catalog, int64_t generation_a, int64_t generation_b) {
  const std::string file = catalog.path().string();
  if (generation_a == generation_b)
    throw Error(ErrorCode::invalid_argument, file,
                cat("a preference pair needs two different generations (got ", generation_a, " twice)"));
  Transaction transaction(catalog, TransactionMode::write);
  require_generation(catalog, generation_a);
  require_generation(catalog, generation_b);
  auto existing = catalog.prepare(
      "SELECT id FROM preferences WHERE (generation_a = ?1 AND generation_b = ?2) OR "
      "(generation_a = ?2 AND generation_b = ?1)");
  existing.bind_all(generation_a, generation_b);
  if (existing.step())
    throw Error(
        ErrorCode::conflict, file,
        cat("generations ", generation_a, " and ", generation_b, " are already pair ", existing.int64(0)));
  Preference p;
  p.generation_a = generation_a;
  p.generation_b = generation_b;
  p.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO preferences (generation_a, generation_b, choice, labeller, created_at_ms, "
          "labelled_at_ms) VALUES (?1, ?2, '', '', ?3, 0)")
      .bind_all(p.generation_a, *p.generation_b, p.created_at_ms)
      .run();
  p.id = catalog.connection().last_insert_id();
  transaction.commit();
  return p;
}

Preference set_single_label(Catalog& catalog, int64_t generation, PreferenceChoice choice,
                            std::string_view labeller) {
  const std::string file = catalog.path().string();
  if (!single_choice(choice))
    throw Error(
        ErrorCode::invalid_argument, file,
        cat("a single label is good or bad, not ", to_string(choice), " (generation ", generation, ")"));
  if (labeller.empty()) throw Error(ErrorCode::invalid_argument, file, "a label needs its labeller");
  Transaction transaction(catalog, TransactionMode::write);
  require_generation(catalog, generation);
  catalog.prepare("DELETE FROM preferences WHERE generation_a = ?1 AND generation_b IS NULL")
      .bind_all(generation)
      .run();
  Preference p;
  p.generation_a = generation;
  p.choice = choice;
  p.labeller = std::string(labeller);
  p.created_at_ms = p.labelled_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO preferences (generation_a, generation_b, choice, labeller, created_at_ms, "
          "labelled_at_ms) VALUES (?1, NULL, ?2, ?3, ?4, ?4)")
      .bind_all(p.generation_a, enum_name(kChoiceNames, choice), p.labeller, p.created_at_ms)
      .run();
  p.id = catalog.connection().last_insert_id();
  transaction.commit();
  return p;
}

void label_preference(Catalog& catalog, int64_t id, PreferenceChoice choice, std::string_view labeller) {
  const std::string file = catalog.path().string();
  Transaction transaction(catalog, TransactionMode::write);
  const auto existing = get_preference(catalog, id);
  if (!existing) throw_not_found(catalog, cat("preference ", id));
  if (choice != PreferenceChoice::pending) {
    if (existing->is_pair() ? !pair_choice(choice) : !single_choice(choice))
      throw Error(ErrorCode::invalid_argument, file,
                  cat("preference ", id, " is ",
                      existing->is_pair() ? "a pair (a, b or skip)" : "a single label (good or bad)", "; '",
                      to_string(choice), "' does not apply"));
    if (labeller.empty()) throw Error(ErrorCode::invalid_argument, file, "a label needs its labeller");
  }
  const bool clear = choice == PreferenceChoice::pending;
  catalog.prepare("UPDATE preferences SET choice = ?2, labeller = ?3, labelled_at_ms = ?4 WHERE id = ?1")
      .bind_all(id, clear ? "" : enum_name(kChoiceNames, choice),
                clear ? std::string() : std::string(labeller),
                clear ? int64_t{0} : std::max<int64_t>(now_ms(), existing->created_at_ms))
      .run();
  transaction.commit();
}

std::optional<Preference> get_preference(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_preference(s);
}

std::vector<Preference> list_preferences(Catalog& catalog, const PreferenceFilter& filter) {
  auto s = catalog.prepare(std::string(kColumns) + where_clause(filter, true) + "ORDER BY id LIMIT ?2");
  s.bind_all(filter.labeller, filter.limit > 0 ? filter.limit : int64_t{-1});
  std::vector<Preference> out;
  while (s.step()) out.push_back(read_preference(s));
  return out;
}

std::optional<Preference> last_labelled(Catalog& catalog, const PreferenceFilter& filter) {
  auto s = catalog.prepare(std::string(kColumns) + where_clause(filter, false) +
                           "AND choice <> '' ORDER BY labelled_at_ms DESC, id DESC LIMIT 1");
  s.bind_all(filter.labeller);
  if (!s.step()) return std::nullopt;
  return read_preference(s);
}

PreferenceCounts count_preferences(Catalog& catalog) {
  auto s = catalog.prepare("SELECT choice, COUNT(*) FROM preferences GROUP BY choice");
  PreferenceCounts counts;
  while (s.step()) {
    const auto choice = enum_column(s, 0, kChoiceNames);
    const int64_t n = s.int64(1);
    switch (choice) {
      case PreferenceChoice::pending:
        counts.pending += n;
        break;
      case PreferenceChoice::a:
      case PreferenceChoice::b:
        counts.preferred += n;
        break;
      case PreferenceChoice::skip:
        counts.skipped += n;
        break;
      case PreferenceChoice::good:
        counts.good += n;
        break;
      case PreferenceChoice::bad:
        counts.bad += n;
        break;
    }
  }
  return counts;
}

}  // namespace mugv
