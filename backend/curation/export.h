#pragma once
// Exporting a curated dataset (`mugv dataset export`): a manifest, or a folder of clip files.
//
//  - ExportFormat::jsonl / json / csv: one manifest entry per clip (dataset/manifest.h): path = the SOURCE
//  file,
//    start, end, fps, the current caption, and the scores (sharpness, motion, aesthetic, clip_id, source
//    hash, decision, reason, tags). `mugv dataset import FILE` reads it back as the same clips.
//  - ExportFormat::clips: a folder with one mp4 per clip (clip_<id>.mp4), its caption beside it as
//    clip_<id>.txt (the kohya/musubi convention) and manifest.jsonl listing the clip files with their
//    scores and where they came from. A clip that starts and ends on keyframes is stream-copied
//    (media/remux.h: exact, fast); any other is re-encoded frame-accurately (H.264, CRF 17, the source's
//    frame rate and size). Files are written atomically.
//
// Only kept clips are exported unless ExportSelection::all. A clip whose source cannot be decoded is
// listed in the report's failures and the export goes on. Checks `cancel` between clips and once per
// frame; progress: stage "export", unit "clips".

#include "catalog/catalog.h"
#include "core/progress.h"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

enum class ExportFormat { unknown = 0, jsonl, json, csv, clips };
const char* to_string(ExportFormat format);
std::optional<ExportFormat> export_format_from_string(std::string_view name);
// .jsonl -> jsonl, .json -> json (one array), .csv -> csv, anything else (a folder) -> clips.
[[nodiscard]] ExportFormat export_format_of(const fs::path& out);

enum class ExportSelection { unknown = 0, kept, all };
const char* to_string(ExportSelection selection);
std::optional<ExportSelection> export_selection_from_string(std::string_view name);

struct ExportOptions {
  ExportFormat format = ExportFormat::unknown;  // unknown: export_format_of(out)
  ExportSelection selection = ExportSelection::kept;
  int crf = 17;
};

struct ExportFailure {
  int64_t clip_id = 0;
  std::string reason;
};

struct ExportReport {
  ExportFormat format = ExportFormat::unknown;
  fs::path manifest;           // the manifest written
  int64_t clips = 0;           // clips written
  int64_t frames_encoded = 0;  // frames of the clips that had to be re-encoded
  int64_t clips_copied = 0;    // clips stream-copied (cut on keyframes): no re-encode, no quality loss
  std::vector<ExportFailure> failures;
};

// Error(not_found) for an unknown dataset; Error(io) when `out` cannot be written.
ExportReport export_dataset(Catalog& catalog, std::string_view dataset_name, const fs::path& out,
                            const ExportOptions& options = {}, const CancelToken& cancel = {},
                            const ProgressFn& progress = {});

}  // namespace mugv
