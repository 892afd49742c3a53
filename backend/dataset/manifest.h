#pragma once
// Dataset manifests: the interchange format for clips (path, caption, start, end, fps, scores), read and
// written as JSONL (one object per line), JSON (one array of such objects) or CSV (RFC 4180, header row
// required). Also the kohya/musubi sidecar convention: a clip `x.mp4` may have its caption in `x.txt` beside
// it. A UTF-8 byte order mark before any of them is skipped.
//
// Reading never stops at a bad line: it is reported in ManifestReadResult::problems (line number and
// reason) and the remaining lines are read. In a JSON array each element is read by itself and a bad one is
// a problem of the line it starts on; an array that is not closed, or has an empty element, is a problem too
// and its elements are still read. A .json file that holds JSON lines rather than an array is read as JSONL.
// Relative paths are resolved against the manifest's folder. A quoted CSV field may hold line breaks (RFC
// 4180), as write_manifest writes a caption that has them; a quote left open to the end of the file is a
// problem of the line it opens on, and the lines after it are read as records of their own. Times and frame
// rates must be finite, start >= 0, end > start, fps > 0.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

namespace fs = std::filesystem;

struct ManifestEntry {
  fs::path path;
  std::string caption;
  std::optional<double> start_s, end_s, fps;
  nlohmann::json extra = nlohmann::json::object();  // any other fields (scores, tags, split, ...)
};

struct ManifestProblem {
  int line = 0;  // 1-based line number in the manifest file
  std::string reason;
};

struct ManifestReadResult {
  std::vector<ManifestEntry> entries;
  std::vector<ManifestProblem> problems;
};

enum class ManifestFormat { unknown = 0, jsonl, json, csv };
const char* to_string(ManifestFormat format);
std::optional<ManifestFormat> manifest_format_from_string(const std::string& name);
// By extension: .jsonl → jsonl, .json → json, .csv → csv, else unknown.
ManifestFormat manifest_format_of(const fs::path& path);

// Throws Error(not_found/io) when the file cannot be read, Error(format) for an unknown extension or a CSV
// without the required "path" column; bad lines become problems.
ManifestReadResult read_manifest(const fs::path& path);
// The same for manifest text; relative paths resolve against base_dir, errors name `subject`.
ManifestReadResult parse_manifest_text(std::string_view text, ManifestFormat format, const fs::path& base_dir,
                                       const std::string& subject);

// Writes atomically. Paths are written relative to the manifest's folder when they lie under it.
void write_manifest(const fs::path& path, const std::vector<ManifestEntry>& entries);
// The text write_manifest writes (format jsonl, json — an entry a line — or csv), paths relative to base_dir
// where they lie under it. What parse_manifest_text reads back from it is `entries`, except that CSV cells
// are text: an extra value that reads as a number comes back as that number.
std::string manifest_text(const std::vector<ManifestEntry>& entries, ManifestFormat format,
                          const fs::path& base_dir);

// The sidecar caption of a clip (`clip.txt` beside `clip.mp4`), trimmed; nullopt when there is none. Throws
// Error(format) naming the caption file when it is not UTF-8 (as CSV cells that are not are problems).
std::optional<std::string> read_sidecar_caption(const fs::path& clip);
void write_sidecar_caption(const fs::path& clip, const std::string& caption);

// Splits one CSV record (RFC 4180 quoting) into fields. Exposed for tests.
std::vector<std::string> parse_csv_record(const std::string& line);
std::string csv_escape(const std::string& field);

}  // namespace mugv
