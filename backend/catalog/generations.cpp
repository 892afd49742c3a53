#include "catalog/generations.h"

#include "catalog/detail.h"

#include <algorithm>

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr const char* kColumns =
    "SELECT id, prompt_id, prompt_text, negative, run_id, checkpoint_id, seed, steps, cfg_scale, width, "
    "height, "
    "frames, image_path, output_path, settings_json, created_at_ms FROM generations ";

Generation read_generation(Catalog& catalog, const sqlite::Statement& s) {
  Generation g;
  g.id = s.int64(0);
  g.prompt_id = s.optional_int64(1);
  g.prompt_text = s.text(2);
  g.negative = s.text(3);
  g.run_id = s.optional_int64(4);
  g.checkpoint_id = s.optional_int64(5);
  g.seed = static_cast<uint64_t>(s.int64(6));
  g.steps = s.int32(7);
  g.cfg_scale = s.real(8);
  g.width = s.int32(9);
  g.height = s.int32(10);
  g.frames = s.int32(11);
  g.image_path = s.text(12);
  g.output_path = s.text(13);
  g.settings = json_column(catalog, s, 14, cat("generation ", g.id));
  g.created_at_ms = s.int64(15);
  return g;
}

void require_row(Catalog& catalog, const char* table, const char* what, const std::optional<int64_t>& id) {
  if (!id) return;
  auto s = catalog.prepare(cat("SELECT 1 FROM ", table, " WHERE id = ?1"));
  s.bind_all(*id);
  if (!s.step()) throw_not_found(catalog, cat(what, " ", *id));
}

}  // namespace

Generation add_generation(Catalog& catalog, Generation generation) {
  const std::string file = catalog.path().string();
  if (trim(generation.prompt_text).empty())
    throw Error(ErrorCode::invalid_argument, file, "a generation needs its prompt text");
  if (generation.steps <= 0 || generation.width <= 0 || generation.height <= 0 || generation.frames <= 0)
    throw Error(ErrorCode::invalid_argument, file,
                cat("generation settings out of range: steps ", generation.steps, ", ", generation.width, "x",
                    generation.height, ", ", generation.frames, " frames (all must be positive)"));
  Transaction transaction(catalog, TransactionMode::write);
  require_row(catalog, "prompts", "prompt", generation.prompt_id);
  require_row(catalog, "runs", "run", generation.run_id);
  require_row(catalog, "checkpoints", "checkpoint", generation.checkpoint_id);
  generation.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO generations (prompt_id, prompt_text, negative, run_id, checkpoint_id, seed, steps, "
          "cfg_scale, "
          "width, height, frames, image_path, output_path, settings_json, created_at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)")
      .bind_all(generation.prompt_id, generation.prompt_text, generation.negative, generation.run_id,
                generation.checkpoint_id, generation.seed, generation.steps, generation.cfg_scale,
                generation.width, generation.height, generation.frames, generation.image_path.string(),
                generation.output_path.string(), json_text(generation.settings, "{}"),
                generation.created_at_ms)
      .run();
  generation.id = catalog.connection().last_insert_id();
  transaction.commit();
  return generation;
}

std::optional<Generation> get_generation(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_generation(catalog, s);
}

std::vector<Generation> list_generations(Catalog& catalog, int64_t limit, int64_t offset) {
  auto s = catalog.prepare(std::string(kColumns) + "ORDER BY created_at_ms DESC, id DESC LIMIT ?1 OFFSET ?2");
  s.bind_all(limit > 0 ? limit : int64_t{-1}, std::max<int64_t>(offset, 0));
  std::vector<Generation> out;
  while (s.step()) out.push_back(read_generation(catalog, s));
  return out;
}

std::vector<Generation> list_generations_for_prompt(Catalog& catalog, int64_t prompt_id, int64_t limit) {
  auto s = catalog.prepare(std::string(kColumns) +
                           "WHERE prompt_id = ?1 ORDER BY created_at_ms DESC, id DESC LIMIT ?2");
  s.bind_all(prompt_id, limit > 0 ? limit : int64_t{-1});
  std::vector<Generation> out;
  while (s.step()) out.push_back(read_generation(catalog, s));
  return out;
}

bool delete_generation(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM generations WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

}  // namespace mugv
