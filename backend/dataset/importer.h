#pragma once
// Imports clips into a catalog dataset (`mugv dataset import`). The input is one of
//   - a manifest file (.jsonl / .json / .csv; see manifest.h),
//   - a folder holding manifest.jsonl, manifest.json or manifest.csv (the first found is used),
//   - any other folder: every video file below it (recursively) with its sidecar .txt caption.
// Each file is probed once; a file whose content is already a known source is not probed again,
// and a clip already in the dataset (same source and range) is not added twice, so importing the
// same folder twice adds nothing. A bad file (unreadable, not a video, no video stream, ...) is
// recorded as a failed source with its reason, listed in the report, and the import goes on.
// Checks the cancel token between files; what was imported before a cancel stays imported.

#include "catalog/catalog.h"
#include "core/progress.h"

#include <filesystem>
#include <string>
#include <vector>

namespace mugv {

struct ImportOptions {
  std::string dataset_name;
  std::filesystem::path input;
  std::string description;
};

struct ImportFailure {
  std::filesystem::path path;
  std::string reason;
};

struct ImportReport {
  int64_t dataset_id = 0;
  bool dataset_created = false;
  int files_seen = 0;
  int sources_added = 0;  // newly probed sources
  int sources_known = 0;  // already in the catalog (same content)
  int clips_added = 0;
  int clips_known = 0;  // already in this dataset
  int captions_added = 0;
  std::vector<ImportFailure> failures;  // bad files and bad manifest lines
};

// File extensions treated as video when scanning a folder (lower case, with the dot).
const std::vector<std::string>& video_extensions();

// Throws Error(not_found) when the input does not exist, Error(invalid_argument) for an empty
// dataset name; everything else is per-file and ends up in ImportReport::failures.
ImportReport import_dataset(Catalog& catalog, const ImportOptions& options, const CancelToken& cancel,
                            const ProgressFn& progress);

}  // namespace mugv
