#include "catalog/clips.h"

#include "catalog/detail.h"

#include <algorithm>
#include <set>
#include <variant>

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<ClipDecision, 3> kDecisionNames{{
    {ClipDecision::unknown, "unknown"},
    {ClipDecision::keep, "keep"},
    {ClipDecision::reject, "reject"},
}};

constexpr char kTagSeparator = '\x1f';

constexpr const char* kColumns =
    "SELECT id, dataset_id, source_id, start_s, end_s, start_frame, end_frame, fps, width, height, "
    "sharpness, "
    "motion, aesthetic, artifact_score, artifact_flags, phash, scores_json, decision, reason, created_at_ms, "
    "(SELECT group_concat(tag, char(31)) FROM clip_tags WHERE clip_id = clips.id) FROM clips ";

Clip read_clip(Catalog& catalog, const sqlite::Statement& s) {
  Clip c;
  c.id = s.int64(0);
  c.dataset_id = s.int64(1);
  c.source_id = s.int64(2);
  c.start_s = s.real(3);
  c.end_s = s.real(4);
  c.start_frame = s.int64(5);
  c.end_frame = s.int64(6);
  c.fps = s.real(7);
  c.width = s.int32(8);
  c.height = s.int32(9);
  c.scores.sharpness = s.optional_real(10);
  c.scores.motion = s.optional_real(11);
  c.scores.aesthetic = s.optional_real(12);
  c.scores.artifact_score = s.optional_real(13);
  c.scores.artifact_flags = static_cast<uint32_t>(s.int64(14));
  if (auto phash = s.optional_int64(15)) c.scores.phash = static_cast<uint64_t>(*phash);
  c.scores.extra = json_column(catalog, s, 16, cat("clip ", c.id));
  c.decision = enum_column(s, 17, kDecisionNames);
  c.reason = s.text(18);
  c.created_at_ms = s.int64(19);
  if (!s.is_null(20)) c.tags = split(s.text(20), kTagSeparator);
  std::sort(c.tags.begin(), c.tags.end());
  return c;
}

void require_clip(Catalog& catalog, int64_t clip_id) {
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("clip ", clip_id));
}

bool row_exists(Catalog& catalog, const char* sql, int64_t id) {
  auto s = catalog.prepare(sql);
  s.bind_all(id);
  return s.step();
}

bool clip_exists(Catalog& catalog, int64_t clip_id) {
  return row_exists(catalog, "SELECT 1 FROM clips WHERE id = ?1", clip_id);
}

void insert_tags(Catalog& catalog, int64_t clip_id, const std::vector<std::string>& tags) {
  auto insert = catalog.prepare("INSERT OR IGNORE INTO clip_tags (clip_id, tag) VALUES (?1, ?2)");
  for (const auto& tag : tags) {
    insert.reset();
    insert.bind_all(clip_id, tag).run();
  }
}

using Value = std::variant<int64_t, double, std::string>;

// Builds the WHERE clause from fixed fragments with ?N placeholders; values are only ever bound.
struct Where {
  std::string sql;
  std::vector<Value> values;

  void add(const std::string& fragment_with_placeholder, Value value) {
    values.push_back(std::move(value));
    std::string fragment = fragment_with_placeholder;
    fragment.replace(fragment.find('?'), 1, cat('?', values.size()));
    sql += sql.empty() ? "WHERE " : " AND ";
    sql += fragment;
  }
  void add_range(const char* column, const ScoreRange& range) {
    if (range.min) add(cat(column, " >= ?"), *range.min);
    if (range.max) add(cat(column, " <= ?"), *range.max);
  }
  void bind(sqlite::Statement& s) const {
    for (size_t i = 0; i < values.size(); ++i)
      std::visit([&](const auto& v) { s.bind(static_cast<int>(i + 1), v); }, values[i]);
  }
};

Where where_for(const ClipFilter& filter) {
  Where w;
  if (filter.dataset_id) w.add("dataset_id = ?", *filter.dataset_id);
  if (filter.source_id) w.add("source_id = ?", *filter.source_id);
  if (filter.decision) w.add("decision = ?", std::string(to_string(*filter.decision)));
  // A rejection lists every failed threshold ("sharpness<200, motion>20"): find any part, in any case.
  if (filter.reason) w.add("instr(lower(reason), lower(?)) > 0", *filter.reason);
  if (filter.tag) w.add("id IN (SELECT clip_id FROM clip_tags WHERE tag = ?)", *filter.tag);
  w.add_range("sharpness", filter.sharpness);
  w.add_range("motion", filter.motion);
  w.add_range("aesthetic", filter.aesthetic);
  w.add_range("artifact_score", filter.artifact_score);
  return w;
}

}  // namespace

const char* to_string(ClipDecision decision) {
  return enum_name(kDecisionNames, decision);
}
std::optional<ClipDecision> clip_decision_from_string(std::string_view name) {
  return enum_value(kDecisionNames, name);
}

std::vector<int64_t> add_clips(Catalog& catalog, const std::vector<Clip>& clips) {
  const std::string file = catalog.path().string();
  Transaction transaction(catalog, TransactionMode::write);
  auto insert = catalog.prepare(
      "INSERT INTO clips (dataset_id, source_id, start_s, end_s, start_frame, end_frame, fps, width, height, "
      "sharpness, motion, aesthetic, artifact_score, artifact_flags, phash, scores_json, decision, reason, "
      "created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
      "?18, ?19)");
  std::set<int64_t> known_datasets, known_sources;
  std::vector<int64_t> ids;
  ids.reserve(clips.size());
  const int64_t created_at_ms = now_ms();
  for (size_t i = 0; i < clips.size(); ++i) {
    const Clip& c = clips[i];
    const std::string what = cat("clip ", i + 1, " of ", clips.size(), " (", c.start_s, "-", c.end_s, " s)");
    if (c.end_s < c.start_s || c.end_frame < c.start_frame)
      throw Error(ErrorCode::invalid_argument, file, cat(what, ": ends before it starts"));
    if (!known_datasets.count(c.dataset_id)) {
      if (!row_exists(catalog, "SELECT 1 FROM datasets WHERE id = ?1", c.dataset_id))
        throw Error(ErrorCode::not_found, file, cat(what, ": dataset ", c.dataset_id, " does not exist"));
      known_datasets.insert(c.dataset_id);
    }
    if (!known_sources.count(c.source_id)) {
      if (!row_exists(catalog, "SELECT 1 FROM sources WHERE id = ?1", c.source_id))
        throw Error(ErrorCode::not_found, file, cat(what, ": source ", c.source_id, " does not exist"));
      known_sources.insert(c.source_id);
    }
    check_tags(catalog, c.tags);
    std::optional<int64_t> phash;
    if (c.scores.phash) phash = static_cast<int64_t>(*c.scores.phash);
    insert.reset();
    insert
        .bind_all(c.dataset_id, c.source_id, c.start_s, c.end_s, c.start_frame, c.end_frame, c.fps, c.width,
                  c.height, c.scores.sharpness, c.scores.motion, c.scores.aesthetic, c.scores.artifact_score,
                  c.scores.artifact_flags, phash, json_text(c.scores.extra, "{}"), c.decision, c.reason,
                  created_at_ms)
        .run();
    const int64_t id = catalog.connection().last_insert_id();
    insert_tags(catalog, id, c.tags);
    ids.push_back(id);
  }
  transaction.commit();
  return ids;
}

std::optional<Clip> get_clip(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_clip(catalog, s);
}

void update_clip_scores(Catalog& catalog, int64_t clip_id, const ClipScores& scores) {
  std::optional<int64_t> phash;
  if (scores.phash) phash = static_cast<int64_t>(*scores.phash);
  Transaction transaction(catalog, TransactionMode::write);
  catalog
      .prepare(
          "UPDATE clips SET sharpness = ?2, motion = ?3, aesthetic = ?4, artifact_score = ?5, artifact_flags "
          "= ?6, "
          "phash = ?7, scores_json = ?8 WHERE id = ?1")
      .bind_all(clip_id, scores.sharpness, scores.motion, scores.aesthetic, scores.artifact_score,
                scores.artifact_flags, phash, json_text(scores.extra, "{}"))
      .run();
  require_clip(catalog, clip_id);
  transaction.commit();
}

void set_clip_decision(Catalog& catalog, int64_t clip_id, ClipDecision decision, std::string_view reason) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE clips SET decision = ?2, reason = ?3 WHERE id = ?1")
      .bind_all(clip_id, decision, reason)
      .run();
  require_clip(catalog, clip_id);
  transaction.commit();
}

void set_clip_tags(Catalog& catalog, int64_t clip_id, const std::vector<std::string>& tags) {
  check_tags(catalog, tags);
  Transaction transaction(catalog, TransactionMode::write);
  if (!clip_exists(catalog, clip_id)) throw_not_found(catalog, cat("clip ", clip_id));
  catalog.prepare("DELETE FROM clip_tags WHERE clip_id = ?1").bind_all(clip_id).run();
  insert_tags(catalog, clip_id, tags);
  transaction.commit();
}

void add_clip_tag(Catalog& catalog, int64_t clip_id, std::string_view tag) {
  std::vector<std::string> tags{std::string(tag)};
  check_tags(catalog, tags);
  Transaction transaction(catalog, TransactionMode::write);
  if (!clip_exists(catalog, clip_id)) throw_not_found(catalog, cat("clip ", clip_id));
  insert_tags(catalog, clip_id, tags);
  transaction.commit();
}

bool remove_clip_tag(Catalog& catalog, int64_t clip_id, std::string_view tag) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM clip_tags WHERE clip_id = ?1 AND tag = ?2").bind_all(clip_id, tag).run();
  const bool removed = catalog.connection().changes() > 0;
  transaction.commit();
  return removed;
}

std::vector<Clip> list_clips(Catalog& catalog, const ClipFilter& filter) {
  const Where where = where_for(filter);
  const int n = static_cast<int>(where.values.size());
  auto s = catalog.prepare(cat(kColumns, where.sql, " ORDER BY id LIMIT ?", n + 1, " OFFSET ?", n + 2));
  where.bind(s);
  s.bind(n + 1, filter.limit > 0 ? filter.limit : int64_t{-1});
  s.bind(n + 2, std::max<int64_t>(filter.offset, 0));
  std::vector<Clip> out;
  while (s.step()) out.push_back(read_clip(catalog, s));
  return out;
}

int64_t count_clips(Catalog& catalog, const ClipFilter& filter) {
  const Where where = where_for(filter);
  auto s = catalog.prepare(cat("SELECT count(*) FROM clips ", where.sql));
  where.bind(s);
  return s.step() ? s.int64(0) : 0;
}

std::vector<DecisionCount> count_clips_by_decision(Catalog& catalog, int64_t dataset_id) {
  auto s = catalog.prepare(
      "SELECT decision, reason, count(*) FROM clips WHERE dataset_id = ?1 GROUP BY decision, reason "
      "ORDER BY decision, reason");
  s.bind_all(dataset_id);
  std::vector<DecisionCount> out;
  while (s.step()) out.push_back({enum_column(s, 0, kDecisionNames), s.text(1), s.int64(2)});
  return out;
}

bool delete_clip(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM clips WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

ClipFilter parse_clip_filter(std::string_view text, std::string_view subject) {
  ClipFilter filter;
  for (const std::string& raw : split(std::string(text), ',')) {
    const std::string term = trim(raw);
    if (term.empty()) continue;
    auto fail = [&](const std::string& why) -> Error {
      return Error(ErrorCode::usage, std::string(subject), cat("'", term, "': ", why));
    };
    if (const auto eq = term.find('=');
        eq != std::string::npos && term.find_first_of("<>") == std::string::npos) {
      const std::string key = trim(term.substr(0, eq)), value = trim(term.substr(eq + 1));
      if (value.empty()) throw fail("no value after '='");
      if (key == "decision") {
        filter.decision = clip_decision_from_string(value);
        if (!filter.decision) throw fail("a decision is keep, reject or unknown");
      } else if (key == "tag") {
        filter.tag = value;
      } else {
        throw fail("use decision=, tag=, reason~ or a score with >= / <=");
      }
      continue;
    }
    if (const auto tilde = term.find('~'); tilde != std::string::npos) {
      if (trim(term.substr(0, tilde)) != "reason") throw fail("only the reason is matched with ~");
      filter.reason = trim(term.substr(tilde + 1));
      continue;
    }
    const auto op = term.find_first_of("<>");
    if (op == std::string::npos || op + 1 >= term.size() || term[op + 1] != '=')
      throw fail("expected SCORE>=X or SCORE<=X");
    const std::string key = trim(term.substr(0, op)), number = trim(term.substr(op + 2));
    double value = 0;
    try {
      size_t used = 0;
      value = std::stod(number, &used);
      if (used != number.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw fail(cat("'", number, "' is not a number"));
    }
    ScoreRange* range = key == "sharpness"   ? &filter.sharpness
                        : key == "motion"    ? &filter.motion
                        : key == "aesthetic" ? &filter.aesthetic
                        : key == "artifact"  ? &filter.artifact_score
                                             : nullptr;
    if (!range) throw fail("scores are sharpness, motion, aesthetic and artifact");
    (term[op] == '>' ? range->min : range->max) = value;
  }
  return filter;
}

}  // namespace mugv
