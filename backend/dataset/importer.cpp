#include "dataset/importer.h"

#include "catalog/captions.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/path_confinement.h"
#include "core/strings.h"
#include "dataset/manifest.h"
#include "dataset/source_ingest.h"
#include "media/probe.h"

#include <algorithm>
#include <cmath>

namespace mugv {
namespace {

// Finds the manifest of a folder import, when the folder has one.
std::optional<fs::path> folder_manifest(const fs::path& dir) {
  for (const char* name : {"manifest.jsonl", "manifest.json", "manifest.csv"})
    if (fs::is_regular_file(dir / name)) return dir / name;
  return std::nullopt;
}

// The videos under `dir` with their sidecar captions; a video whose caption file cannot be used is left out
// and reported in `failures`.
std::vector<ManifestEntry> scan_folder(const fs::path& dir, std::vector<ImportFailure>& failures) {
  std::vector<ManifestEntry> entries;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_regular_file(ec)) continue;
    std::string ext = to_lower(it->path().extension().string());
    const auto& exts = video_extensions();
    if (std::find(exts.begin(), exts.end(), ext) == exts.end()) continue;
    ManifestEntry e;
    e.path = it->path();
    try {
      e.caption = read_sidecar_caption(e.path).value_or("");
    } catch (const Error& error) {
      failures.push_back({e.path, error.what()});
      continue;
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  return entries;
}

// Records a file that could not be used as a failed source (when it can be hashed at all), so the
// catalog shows it with its reason; returns the failure for the report.
ImportFailure record_failure(Catalog& catalog, const fs::path& path, const std::string& hash,
                             const std::string& reason) {
  record_failed_source(catalog, path, hash, reason);
  return {path, reason};
}

Clip clip_for(const ManifestEntry& e, const Source& source, int64_t dataset_id) {
  Clip c;
  c.dataset_id = dataset_id;
  c.source_id = source.id;
  c.start_s = e.start_s.value_or(0.0);
  c.end_s = e.end_s.value_or(source.duration_s);
  c.fps = e.fps.value_or(source.fps);
  c.width = source.width;
  c.height = source.height;
  c.start_frame = static_cast<int64_t>(std::llround(c.start_s * c.fps));
  c.end_frame = static_cast<int64_t>(std::llround(c.end_s * c.fps));
  if (!e.start_s && !e.end_s && source.info.contains("frame_count"))
    c.end_frame = source.info["frame_count"].get<int64_t>();
  return c;
}

bool same_range(const Clip& a, const Clip& b) {
  return std::fabs(a.start_s - b.start_s) < 1e-6 && std::fabs(a.end_s - b.end_s) < 1e-6;
}

}  // namespace

const std::vector<std::string>& video_extensions() {
  static const std::vector<std::string> exts = {".mp4",  ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg",
                                                ".mpeg", ".ts",  ".mts", ".wmv", ".flv",  ".y4m"};
  return exts;
}

ImportReport import_dataset(Catalog& catalog, const ImportOptions& options, const CancelToken& cancel,
                            const ProgressFn& progress) {
  if (trim(options.dataset_name).empty())
    throw Error(ErrorCode::invalid_argument, "--name", "a dataset name is required");
  std::error_code ec;
  if (!fs::exists(options.input, ec))
    throw Error(ErrorCode::not_found, options.input.string(), "no such file or folder");

  ImportReport report;
  std::vector<ManifestEntry> entries;
  fs::path manifest_path;
  if (fs::is_directory(options.input)) {
    if (auto m = folder_manifest(options.input))
      manifest_path = *m;
    else
      entries = scan_folder(options.input, report.failures);
  } else {
    manifest_path = options.input;
  }
  if (!manifest_path.empty()) {
    check_job_path("manifest", manifest_path);  // a server job's manifest may be a symlink to anywhere
    auto read = read_manifest(manifest_path);
    entries = std::move(read.entries);
    for (const auto& p : read.problems)
      report.failures.push_back({manifest_path, cat("line ", p.line, ": ", p.reason)});
  }

  auto dataset = find_dataset(catalog, options.dataset_name);
  if (!dataset) {
    Dataset d;
    d.name = options.dataset_name;
    d.kind = DatasetKind::video;
    d.root_dir = fs::absolute(fs::is_directory(options.input) ? options.input : options.input.parent_path());
    d.description = options.description;
    dataset = create_dataset(catalog, d);
    report.dataset_created = true;
  }
  report.dataset_id = dataset->id;

  // Each file costs a probe, so every file is worth a report (and lets a cancel land between files).
  ProgressMeter meter(progress, "import", "files", static_cast<int64_t>(entries.size()),
                      std::chrono::milliseconds(0));
  for (const auto& entry : entries) {
    cancel.throw_if_cancelled("import");
    ++report.files_seen;
    std::string hash;
    try {
      // Under a server, every file found by the walk or named by the manifest must lie inside the server's
      // roots once its symlinks are followed, not only the folder the job named.
      check_job_path("file", entry.path);
      hash = content_hash_of_file(entry.path);
      auto source = find_source_by_hash(catalog, hash);
      if (source && source->status == SourceStatus::failed) {
        report.failures.push_back({entry.path, source->error_message});
        meter.advance(1, entry.path.filename().string());
        continue;
      }
      if (source) {
        ++report.sources_known;
      } else {
        source = add_source(catalog, source_from_probe(entry.path, hash, probe(entry.path)));
        ++report.sources_added;
      }
      Clip clip = clip_for(entry, *source, dataset->id);
      ClipFilter existing;
      existing.dataset_id = dataset->id;
      existing.source_id = source->id;
      auto known = list_clips(catalog, existing);
      if (std::any_of(known.begin(), known.end(), [&](const Clip& k) { return same_range(k, clip); })) {
        ++report.clips_known;
      } else {
        Transaction tx(catalog, TransactionMode::write);
        int64_t clip_id = add_clips(catalog, {clip}).front();
        if (!entry.caption.empty()) {
          (void)add_caption(catalog, clip_id, entry.caption, CaptionOrigin::import,
                            manifest_path.empty() ? "sidecar" : manifest_path.filename().string());
          ++report.captions_added;
        }
        tx.commit();
        ++report.clips_added;
      }
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled) throw;
      std::string reason = e.subject() == entry.path.string() || e.subject().empty() ? e.message() : e.what();
      report.failures.push_back(record_failure(catalog, entry.path, hash, reason));
      log_warning(cat(entry.path.string(), ": skipped: ", reason));
    }
    meter.advance(1, entry.path.filename().string());
  }
  meter.flush();
  return report;
}

}  // namespace mugv
