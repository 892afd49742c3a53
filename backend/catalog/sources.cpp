#include "catalog/sources.h"

#include "catalog/detail.h"

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<SourceStatus, 4> kStatusNames{{
    {SourceStatus::unknown, "unknown"},
    {SourceStatus::pending, "pending"},
    {SourceStatus::ok, "ok"},
    {SourceStatus::failed, "failed"},
}};

constexpr const char* kColumns =
    "SELECT id, path, content_hash, size_bytes, duration_s, fps, width, height, variable_frame_rate, status, "
    "error_message, probed_at_ms, info_json, created_at_ms FROM sources ";

Source read_source(Catalog& catalog, const sqlite::Statement& s) {
  Source r;
  r.id = s.int64(0);
  r.path = s.text(1);
  r.content_hash = s.text(2);
  r.size_bytes = s.int64(3);
  r.duration_s = s.real(4);
  r.fps = s.real(5);
  r.width = s.int32(6);
  r.height = s.int32(7);
  r.variable_frame_rate = s.int64(8) != 0;
  r.status = enum_column(s, 9, kStatusNames);
  r.error_message = s.text(10);
  r.probed_at_ms = s.optional_int64(11);
  r.info = json_column(catalog, s, 12, cat("source ", r.id));
  r.created_at_ms = s.int64(13);
  return r;
}

}  // namespace

const char* to_string(SourceStatus status) {
  return enum_name(kStatusNames, status);
}
std::optional<SourceStatus> source_status_from_string(std::string_view name) {
  return enum_value(kStatusNames, name);
}

Source add_source(Catalog& catalog, Source source) {
  if (source.content_hash.empty())
    throw Error(ErrorCode::invalid_argument, catalog.path().string(),
                cat(source.path.string(), ": a source needs a content hash"));
  if (source.status == SourceStatus::unknown) source.status = SourceStatus::pending;
  Transaction transaction(catalog, TransactionMode::write);
  if (auto existing = find_source_by_hash(catalog, source.content_hash))
    throw Error(ErrorCode::conflict, catalog.path().string(),
                cat(source.path.string(), ": same content as source ", existing->id, " (",
                    existing->path.string(), ")"));
  source.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO sources (path, content_hash, size_bytes, duration_s, fps, width, height, "
          "variable_frame_rate, "
          "status, error_message, probed_at_ms, info_json, created_at_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")
      .bind_all(source.path.string(), source.content_hash, source.size_bytes, source.duration_s, source.fps,
                source.width, source.height, source.variable_frame_rate, source.status, source.error_message,
                source.probed_at_ms, json_text(source.info, "{}"), source.created_at_ms)
      .run();
  source.id = catalog.connection().last_insert_id();
  transaction.commit();
  return source;
}

std::optional<Source> get_source(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_source(catalog, s);
}

std::optional<Source> find_source_by_hash(Catalog& catalog, std::string_view content_hash) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE content_hash = ?1");
  s.bind_all(content_hash);
  if (!s.step()) return std::nullopt;
  return read_source(catalog, s);
}

std::vector<Source> list_sources(Catalog& catalog, std::optional<SourceStatus> status) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE ?1 IS NULL OR status = ?1 ORDER BY id");
  s.bind_all(status);
  std::vector<Source> out;
  while (s.step()) out.push_back(read_source(catalog, s));
  return out;
}

void set_source_probed(Catalog& catalog, const Source& source) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog
      .prepare(
          "UPDATE sources SET duration_s = ?2, fps = ?3, width = ?4, height = ?5, variable_frame_rate = ?6, "
          "info_json = ?7, status = 'ok', error_message = '', probed_at_ms = ?8 WHERE id = ?1")
      .bind_all(source.id, source.duration_s, source.fps, source.width, source.height,
                source.variable_frame_rate, json_text(source.info, "{}"), now_ms())
      .run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("source ", source.id));
  transaction.commit();
}

void mark_source_failed(Catalog& catalog, int64_t id, std::string_view reason) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("UPDATE sources SET status = 'failed', error_message = ?2, probed_at_ms = ?3 WHERE id = ?1")
      .bind_all(id, reason, now_ms())
      .run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("source ", id));
  transaction.commit();
}

bool delete_source(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  auto uses = catalog.prepare("SELECT count(*) FROM clips WHERE source_id = ?1");
  uses.bind_all(id);
  if (uses.step() && uses.int64(0) > 0)
    throw Error(ErrorCode::conflict, catalog.path().string(),
                cat("source ", id, " is used by ", uses.int64(0), " clips; delete those first"));
  catalog.prepare("DELETE FROM sources WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

}  // namespace mugv
