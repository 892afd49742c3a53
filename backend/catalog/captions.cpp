#include "catalog/captions.h"

#include "catalog/detail.h"

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<CaptionOrigin, 5> kOriginNames{{
    {CaptionOrigin::unknown, "unknown"},
    {CaptionOrigin::human, "human"},
    {CaptionOrigin::model, "model"},
    {CaptionOrigin::template_, "template"},
    {CaptionOrigin::import, "import"},
}};

constexpr const char* kColumns =
    "SELECT id, clip_id, text, origin, producer, version, is_current, created_at_ms FROM captions ";

Caption read_caption(const sqlite::Statement& s) {
  Caption c;
  c.id = s.int64(0);
  c.clip_id = s.int64(1);
  c.text = s.text(2);
  c.origin = enum_column(s, 3, kOriginNames);
  c.producer = s.text(4);
  c.version = s.int32(5);
  c.current = s.int64(6) != 0;
  c.created_at_ms = s.int64(7);
  return c;
}

}  // namespace

const char* to_string(CaptionOrigin origin) {
  return enum_name(kOriginNames, origin);
}
std::optional<CaptionOrigin> caption_origin_from_string(std::string_view name) {
  return enum_value(kOriginNames, name);
}

Caption add_caption(Catalog& catalog, int64_t clip_id, std::string_view text, CaptionOrigin origin,
                    std::string_view producer) {
  if (origin == CaptionOrigin::unknown)
    throw Error(ErrorCode::invalid_argument, catalog.path().string(),
                cat("clip ", clip_id, ": a caption needs an origin (human, model, template or import)"));
  Transaction transaction(catalog, TransactionMode::write);
  {
    auto exists = catalog.prepare("SELECT 1 FROM clips WHERE id = ?1");
    exists.bind_all(clip_id);
    if (!exists.step()) throw_not_found(catalog, cat("clip ", clip_id));
  }
  const std::optional<Caption> current = current_caption(catalog, clip_id);
  const bool becomes_current =
      !current || current->origin != CaptionOrigin::human || origin == CaptionOrigin::human;

  Caption caption;
  caption.clip_id = clip_id;
  caption.text = std::string(text);
  caption.origin = origin;
  caption.producer = std::string(producer);
  caption.current = becomes_current;
  caption.created_at_ms = now_ms();
  {
    auto next = catalog.prepare("SELECT coalesce(max(version), 0) + 1 FROM captions WHERE clip_id = ?1");
    next.bind_all(clip_id);
    caption.version = next.step() ? next.int32(0) : 1;
  }
  if (becomes_current)
    catalog.prepare("UPDATE captions SET is_current = 0 WHERE clip_id = ?1 AND is_current")
        .bind_all(clip_id)
        .run();
  catalog
      .prepare(
          "INSERT INTO captions (clip_id, text, origin, producer, version, is_current, created_at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
      .bind_all(clip_id, caption.text, origin, caption.producer, caption.version, becomes_current,
                caption.created_at_ms)
      .run();
  caption.id = catalog.connection().last_insert_id();
  transaction.commit();
  return caption;
}

std::optional<Caption> current_caption(Catalog& catalog, int64_t clip_id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE clip_id = ?1 AND is_current");
  s.bind_all(clip_id);
  if (!s.step()) return std::nullopt;
  return read_caption(s);
}

std::vector<Caption> caption_history(Catalog& catalog, int64_t clip_id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE clip_id = ?1 ORDER BY version DESC");
  s.bind_all(clip_id);
  std::vector<Caption> out;
  while (s.step()) out.push_back(read_caption(s));
  return out;
}

void set_current_caption(Catalog& catalog, int64_t caption_id) {
  Transaction transaction(catalog, TransactionMode::write);
  auto find = catalog.prepare("SELECT clip_id FROM captions WHERE id = ?1");
  find.bind_all(caption_id);
  if (!find.step()) throw_not_found(catalog, cat("caption ", caption_id));
  const int64_t clip_id = find.int64(0);
  // Two statements: SQLite checks the one-current-per-clip index row by row, not per statement.
  catalog.prepare("UPDATE captions SET is_current = 0 WHERE clip_id = ?1 AND is_current")
      .bind_all(clip_id)
      .run();
  catalog.prepare("UPDATE captions SET is_current = 1 WHERE id = ?1").bind_all(caption_id).run();
  transaction.commit();
}

}  // namespace mugv
