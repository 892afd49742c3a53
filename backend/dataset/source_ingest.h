#pragma once
// Turning a file on disk into a catalog source: the probe fields a source records, and how a file
// that cannot be used is recorded as a failed source with its reason. Shared by `mugv dataset import`
// and `mugv curate`, so both recognise the same file the same way. Stateless; thread-safe as far as
// the Catalog passed in is (one per thread).

#include "catalog/catalog.h"
#include "catalog/sources.h"
#include "media/probe.h"

#include <filesystem>
#include <string>

namespace mugv {

// A Source (status ok, not yet stored) for `path` with content hash `hash` and its probe results.
// Throws Error(not_found/io) when the file size cannot be read.
[[nodiscard]] Source source_from_probe(const std::filesystem::path& path, const std::string& hash,
                                       const MediaInfo& info);

// Stores `path` as a failed source with `reason`, unless its hash is empty (the file could not even be
// read) or the hash is already known (its earlier record stays).
void record_failed_source(Catalog& catalog, const std::filesystem::path& path, const std::string& hash,
                          const std::string& reason);

}  // namespace mugv
