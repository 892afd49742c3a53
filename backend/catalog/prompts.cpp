#include "catalog/prompts.h"

#include "catalog/detail.h"

#include <algorithm>

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr const char* kColumns = "SELECT id, text, negative, tags_json, created_at_ms FROM prompts ";

Prompt read_prompt(Catalog& catalog, const sqlite::Statement& s) {
  Prompt p;
  p.id = s.int64(0);
  p.text = s.text(1);
  p.negative = s.text(2);
  const auto tags = json_column(catalog, s, 3, cat("prompt ", p.id));
  if (tags.is_array())
    for (const auto& tag : tags)
      if (tag.is_string()) p.tags.push_back(tag.get<std::string>());
  p.created_at_ms = s.int64(4);
  return p;
}

std::string tags_json(Catalog& catalog, const std::vector<std::string>& tags) {
  check_tags(catalog, tags);
  nlohmann::json array = nlohmann::json::array();
  std::vector<std::string> seen;
  for (const auto& tag : tags) {
    if (std::find(seen.begin(), seen.end(), tag) != seen.end()) continue;
    seen.push_back(tag);
    array.push_back(tag);
  }
  return array.dump();
}

void check_text(Catalog& catalog, const Prompt& prompt) {
  if (trim(prompt.text).empty())
    throw Error(ErrorCode::invalid_argument, catalog.path().string(), "a prompt needs text");
}

}  // namespace

Prompt add_prompt(Catalog& catalog, Prompt prompt) {
  check_text(catalog, prompt);
  const std::string tags = tags_json(catalog, prompt.tags);
  prompt.tags = nlohmann::json::parse(tags).get<std::vector<std::string>>();
  prompt.created_at_ms = now_ms();
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("INSERT INTO prompts (text, negative, tags_json, created_at_ms) VALUES (?1, ?2, ?3, ?4)")
      .bind_all(prompt.text, prompt.negative, tags, prompt.created_at_ms)
      .run();
  prompt.id = catalog.connection().last_insert_id();
  transaction.commit();
  return prompt;
}

std::optional<Prompt> get_prompt(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_prompt(catalog, s);
}

void update_prompt(Catalog& catalog, const Prompt& prompt) {
  check_text(catalog, prompt);
  const std::string tags = tags_json(catalog, prompt.tags);
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE prompts SET text = ?2, negative = ?3, tags_json = ?4 WHERE id = ?1")
      .bind_all(prompt.id, prompt.text, prompt.negative, tags)
      .run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("prompt ", prompt.id));
  transaction.commit();
}

bool delete_prompt(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM prompts WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

std::vector<Prompt> list_prompts(Catalog& catalog, const PromptQuery& query) {
  auto s =
      catalog.prepare(std::string(kColumns) +
                      "WHERE (?1 = '' OR text LIKE ?2 ESCAPE '\\') "
                      "AND (?3 = '' OR EXISTS (SELECT 1 FROM json_each(prompts.tags_json) WHERE value = ?3)) "
                      "ORDER BY created_at_ms DESC, id DESC LIMIT ?4 OFFSET ?5");
  s.bind_all(query.text_contains, like_pattern_containing(query.text_contains), query.tag,
             query.limit > 0 ? query.limit : int64_t{-1}, std::max<int64_t>(query.offset, 0));
  std::vector<Prompt> out;
  while (s.step()) out.push_back(read_prompt(catalog, s));
  return out;
}

}  // namespace mugv
