#include "catalog/datasets.h"

#include "catalog/detail.h"
#include "core/names.h"

namespace mugv {
namespace {

using namespace catalog_detail;

constexpr EnumNames<DatasetKind, 4> kKindNames{{
    {DatasetKind::unknown, "unknown"},
    {DatasetKind::video, "video"},
    {DatasetKind::image, "image"},
    {DatasetKind::mixed, "mixed"},
}};

constexpr const char* kColumns = "SELECT id, name, kind, root_dir, description, created_at_ms FROM datasets ";

Dataset read_dataset(const sqlite::Statement& s) {
  Dataset d;
  d.id = s.int64(0);
  d.name = s.text(1);
  d.kind = enum_column(s, 2, kKindNames);
  d.root_dir = s.text(3);
  d.description = s.text(4);
  d.created_at_ms = s.int64(5);
  return d;
}

void check_dataset(Catalog& catalog, const Dataset& dataset) {
  if (trim(dataset.name).empty())
    throw Error(ErrorCode::invalid_argument, catalog.path().string(), "a dataset needs a name");
  // The name becomes a folder under $MUGV_HOME/datasets (latent caches, exports).
  check_path_component_name(dataset.name, "dataset");
  if (dataset.kind == DatasetKind::unknown)
    throw Error(ErrorCode::invalid_argument, catalog.path().string(),
                cat("dataset \"", dataset.name, "\": kind must be video, image or mixed"));
}

[[noreturn]] void throw_name_taken(Catalog& catalog, const std::string& name) {
  throw Error(ErrorCode::conflict, catalog.path().string(),
              cat("a dataset named \"", name, "\" already exists; choose another name or delete it first"));
}

}  // namespace

const char* to_string(DatasetKind kind) {
  return enum_name(kKindNames, kind);
}
std::optional<DatasetKind> dataset_kind_from_string(std::string_view name) {
  return enum_value(kKindNames, name);
}

Dataset create_dataset(Catalog& catalog, Dataset dataset) {
  check_dataset(catalog, dataset);
  Transaction transaction(catalog, TransactionMode::write);
  if (find_dataset(catalog, dataset.name)) throw_name_taken(catalog, dataset.name);
  dataset.created_at_ms = now_ms();
  catalog
      .prepare(
          "INSERT INTO datasets (name, kind, root_dir, description, created_at_ms) VALUES (?1, ?2, ?3, ?4, "
          "?5)")
      .bind_all(dataset.name, dataset.kind, dataset.root_dir.string(), dataset.description,
                dataset.created_at_ms)
      .run();
  dataset.id = catalog.connection().last_insert_id();
  transaction.commit();
  return dataset;
}

std::optional<Dataset> get_dataset(Catalog& catalog, int64_t id) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE id = ?1");
  s.bind_all(id);
  if (!s.step()) return std::nullopt;
  return read_dataset(s);
}

std::optional<Dataset> find_dataset(Catalog& catalog, std::string_view name) {
  auto s = catalog.prepare(std::string(kColumns) + "WHERE name = ?1");
  s.bind_all(name);
  if (!s.step()) return std::nullopt;
  return read_dataset(s);
}

std::vector<Dataset> list_datasets(Catalog& catalog) {
  auto s = catalog.prepare(std::string(kColumns) + "ORDER BY name");
  std::vector<Dataset> out;
  while (s.step()) out.push_back(read_dataset(s));
  return out;
}

void update_dataset(Catalog& catalog, const Dataset& dataset) {
  check_dataset(catalog, dataset);
  Transaction transaction(catalog, TransactionMode::write);
  if (auto other = find_dataset(catalog, dataset.name); other && other->id != dataset.id)
    throw_name_taken(catalog, dataset.name);
  catalog.prepare("UPDATE datasets SET name = ?2, kind = ?3, root_dir = ?4, description = ?5 WHERE id = ?1")
      .bind_all(dataset.id, dataset.name, dataset.kind, dataset.root_dir.string(), dataset.description)
      .run();
  if (catalog.connection().changes() == 0) throw_not_found(catalog, cat("dataset ", dataset.id));
  transaction.commit();
}

bool delete_dataset(Catalog& catalog, int64_t id) {
  Transaction transaction(catalog, TransactionMode::write);
  catalog.prepare("DELETE FROM datasets WHERE id = ?1").bind_all(id).run();
  const bool deleted = catalog.connection().changes() > 0;
  transaction.commit();
  return deleted;
}

}  // namespace mugv
