#pragma once
// Sources: raw video files known to the catalog, identified by content hash (the same bytes under two
// paths are one source). A source starts `pending`, becomes `ok` once probed or `failed` with the
// reason a person can act on; clips refer to ok sources. A source with clips cannot be deleted
// (Error(conflict)); delete its datasets' clips first.
// Probe fields (duration_s, fps, width, height) are 0 until probed.

#include "catalog/catalog.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class SourceStatus { unknown = 0, pending, ok, failed };

const char* to_string(SourceStatus status);
std::optional<SourceStatus> source_status_from_string(std::string_view name);

struct Source {
  int64_t id = 0;
  fs::path path;
  std::string content_hash;  // unique; e.g. "blake2b:<hex>"
  int64_t size_bytes = 0;
  double duration_s = 0;
  double fps = 0;
  int width = 0;
  int height = 0;
  bool variable_frame_rate = false;
  SourceStatus status = SourceStatus::pending;
  std::string error_message;  // why it failed; empty unless status == failed
  std::optional<int64_t> probed_at_ms;
  nlohmann::json info = nlohmann::json::object();  // codec, streams, ... as probed
  int64_t created_at_ms = 0;
};

// Stores `source`; Error(conflict) naming the existing path when its content hash is already known
// (check with find_source_by_hash first to reuse it), Error(invalid_argument) for an empty hash.
[[nodiscard]] Source add_source(Catalog& catalog, Source source);
[[nodiscard]] std::optional<Source> get_source(Catalog& catalog, int64_t id);
[[nodiscard]] std::optional<Source> find_source_by_hash(Catalog& catalog, std::string_view content_hash);
// All sources with `status` (any status when nullopt), by id.
[[nodiscard]] std::vector<Source> list_sources(Catalog& catalog,
                                               std::optional<SourceStatus> status = std::nullopt);
// Records probe results of source.id (duration, fps, size, vfr, info), sets status ok, clears the
// error and stamps probed_at_ms. Error(not_found).
void set_source_probed(Catalog& catalog, const Source& source);
// Sets status failed with `reason` and stamps probed_at_ms. Error(not_found).
void mark_source_failed(Catalog& catalog, int64_t id, std::string_view reason);
// Returns false when no such source existed; Error(conflict) while clips refer to it.
bool delete_source(Catalog& catalog, int64_t id);

}  // namespace mugv
