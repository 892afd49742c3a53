#pragma once
// The curation pipeline over the catalog (`mugv curate`): long raw videos in, scored clips with a
// keep/reject decision and its reason out, every decision reversible.
//
// curate():
//   1. inputs: files, folders (recursively, by video extension) or manifests (.jsonl/.json/.csv: the
//      paths they list);
//   2. every file is identified by content hash (core/hash.h); with a shard (index/count) only the files
//      whose position in content-hash order is index mod count are processed, so shards never overlap
//      and do not depend on paths or on the order the inputs were given;
//   3. each source is probed once (a known source is not probed again) and recorded in the catalog; a bad
//      file (unreadable, not a video, truncated, audio-only) becomes a failed source with its reason and
//      the run goes on;
//   4. analyze_video (one decode pass) splits the source at scene boundaries into clips and scores them;
//      the clips are stored with every score (the columns plus ClipScores::extra, see
//      clip_scores_from_analysis) and decided by decision.h;
//   5. completion is recorded per (dataset, source) in the same transaction as the source's clips: the
//      source's info JSON gets "curated": {"<dataset id>": {"clips": N, "dataset_created_ms": T, ...}}.
//      A source whose marker matches its clip count is skipped, so rerunning adds nothing and an
//      interrupted run (cancel, crash, kill) resumes at the first source it had not finished.
//
// redecide() recomputes every scored clip's decision from the STORED scores (no decoding) with new
// thresholds. Nothing is ever deleted by a decision: a rejected clip keeps its scores and captions and
// comes back with looser thresholds. It also replaces dedup and balance verdicts (they depend on which
// clips are kept), so run those again afterwards.
//
// merge_catalog() copies one dataset of a shard's catalog file into another catalog: sources by content
// hash, clips with scores, decisions, tags and caption history, and the completion markers. Merging all
// shards gives the clips, scores and decisions one unsharded run gives (clip ids differ).
//
// All functions take the caller's Catalog (not thread-safe: one per thread) and write through the typed
// catalog API in write transactions.

#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "core/progress.h"
#include "curation/analyze.h"
#include "curation/decision.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

struct ShardSpec {
  int index = 0;  // 0-based
  int count = 1;
};

// "i/n" with 0 <= i < n; nullopt for anything else.
[[nodiscard]] std::optional<ShardSpec> shard_spec_from_string(std::string_view text);
[[nodiscard]] std::string to_string(const ShardSpec& shard);

struct CurateOptions {
  std::vector<fs::path> inputs;  // files, folders or manifests
  std::string dataset_name;      // created when absent
  std::string preset = "mugv";   // a preset name (presets/curation/NAME.toml) or a .toml path
  // Overrides on top of the preset, see resolve_curation_preset.
  nlohmann::json overrides = nlohmann::json::object();
  ShardSpec shard;
  int decode_threads = 1;
};

struct CurateFailure {
  fs::path path;
  std::string reason;
};

struct CurateReport {
  int64_t dataset_id = 0;
  bool dataset_created = false;
  int files_seen = 0;  // input files before sharding
  int files_in_shard = 0;
  int sources_analyzed = 0;  // decoded in this run
  int sources_skipped = 0;   // already curated into this dataset
  int clips_added = 0;
  int clips_kept = 0;  // of the clips added in this run
  int clips_rejected = 0;
  int64_t frames_decoded = 0;
  double elapsed_s = 0;
  std::vector<CurateFailure> failures;  // bad files, bad manifest lines
};

// Loads the preset (`name_or_path` ending in .toml or containing '/' is a file) and applies `overrides`:
// a flat or nested JSON object whose keys are either the thresholds' names, optionally prefixed with
// "thresholds." (min_len_s, max_len_s, sharpness_min, sharpness_max, motion_min, motion_max,
// aesthetic_min, reject = list or comma-separated artifact names), or dotted preset keys
// ("scene.adaptive_ratio", "artifacts.shake_min_px"). Error(invalid_argument) naming an unknown key.
[[nodiscard]] CurationPreset resolve_curation_preset(
    std::string_view name_or_path, const nlohmann::json& overrides = nlohmann::json::object());

// Parses "key=value" items (what `--set` takes) into an overrides object; values are numbers when they
// parse as numbers. Error(usage) naming an item without '='.
[[nodiscard]] nlohmann::json overrides_from_assignments(const std::vector<std::string>& assignments);

// Runs the pipeline. Checks `cancel` once per decoded frame and between sources (Error(cancelled);
// what was finished before stays). Progress: stage "curate", unit "frames", detail
// "file 3/10 name.mp4, 42 clips, 230 fps, ETA 1m05s". Error(not_found) for a missing input,
// Error(invalid_argument) for an empty dataset name or a bad shard; per-file problems end up in
// CurateReport::failures.
CurateReport curate(Catalog& catalog, const CurateOptions& options, const CancelToken& cancel,
                    const ProgressFn& progress);

// The ClipAnalysis a stored clip's scores describe (what decide() needs); nullopt when the clip has no
// sharpness, motion or aesthetic score (e.g. imported without curation).
[[nodiscard]] std::optional<ClipAnalysis> clip_analysis_from_scores(const Clip& clip);
// The ClipScores stored for an analysed clip: columns plus extra (shake_px, aesthetic_parts, border and
// overlay fractions, frozen_ratio, speed_change_ratio, motion_pairs, phash[3] as 16-digit hex,
// artifacts by name, cut_kind of the shot's start).
[[nodiscard]] ClipScores clip_scores_from_analysis(const ClipAnalysis& analysis, CutKind shot_cut);

struct RedecideReport {
  int64_t clips = 0;     // clips in the dataset
  int64_t unscored = 0;  // left as they were: no stored scores
  int64_t changed = 0;   // decision or reason differs from before
  int64_t kept = 0;
  int64_t rejected = 0;
  double elapsed_s = 0;
};

// Error(not_found) for an unknown dataset.
RedecideReport redecide(Catalog& catalog, std::string_view dataset_name,
                        const CurationThresholds& thresholds);

struct MergeReport {
  int64_t sources_added = 0;
  int64_t sources_known = 0;
  int64_t clips_added = 0;
  int64_t clips_known = 0;  // same source and range already in the target dataset
  int64_t captions_added = 0;
};

// Merges dataset `dataset_name` of the catalog file `from` into `into` (the dataset is created there
// when absent). Idempotent: merging the same file twice adds nothing. Error(not_found) when the file or
// the dataset in it does not exist.
MergeReport merge_catalog(Catalog& into, const fs::path& from, std::string_view dataset_name);

}  // namespace mugv
