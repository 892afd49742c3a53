#pragma once
// Datasets: a named collection of clips over source files, with a root directory for its caches.
// Deleting a dataset deletes its clips, their captions and tags; sources stay (they may be shared).
// Functions take the caller's Catalog (one per thread); writes run in their own write transaction,
// or join the caller's.

#include "catalog/catalog.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class DatasetKind { unknown = 0, video, image, mixed };

const char* to_string(DatasetKind kind);
std::optional<DatasetKind> dataset_kind_from_string(std::string_view name);

struct Dataset {
  int64_t id = 0;
  std::string name;  // unique, non-empty
  DatasetKind kind = DatasetKind::video;
  fs::path root_dir;
  std::string description;
  int64_t created_at_ms = 0;
};

// Stores `dataset` (id and created_at_ms are assigned) and returns it. Error(conflict) when the name
// is taken, Error(invalid_argument) when it is empty or the kind is unknown.
[[nodiscard]] Dataset create_dataset(Catalog& catalog, Dataset dataset);
[[nodiscard]] std::optional<Dataset> get_dataset(Catalog& catalog, int64_t id);
[[nodiscard]] std::optional<Dataset> find_dataset(Catalog& catalog, std::string_view name);
// All datasets by name; empty when there are none.
[[nodiscard]] std::vector<Dataset> list_datasets(Catalog& catalog);
// Updates name, kind, root_dir and description of dataset.id. Error(not_found), Error(conflict).
void update_dataset(Catalog& catalog, const Dataset& dataset);
// Returns false when no such dataset existed.
bool delete_dataset(Catalog& catalog, int64_t id);

}  // namespace mugv
