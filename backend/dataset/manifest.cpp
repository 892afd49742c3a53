#include "dataset/manifest.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/utf8.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

namespace mugv {
namespace {

const char* kKnownFields[] = {"path", "caption", "start", "end", "fps"};

bool is_known_field(const std::string& key) {
  for (const char* k : kKnownFields)
    if (key == k) return true;
  return false;
}

fs::path resolve(const fs::path& base_dir, const std::string& p) {
  fs::path path(p);
  return path.is_absolute() ? path : (base_dir / path).lexically_normal();
}

std::string relative_if_under(const fs::path& base_dir, const fs::path& p) {
  fs::path rel = p.lexically_relative(base_dir);
  if (!rel.empty() && *rel.begin() != "..") return rel.string();
  return p.string();
}

std::optional<double> number_field(const nlohmann::json& obj, const char* key) {
  if (!obj.contains(key) || obj[key].is_null()) return std::nullopt;
  if (!obj[key].is_number()) throw Error(ErrorCode::format, key, "expected a number");
  const double value = obj[key].get<double>();
  if (!std::isfinite(value)) throw Error(ErrorCode::format, key, "expected a finite number");
  return value;
}

ManifestEntry entry_from_json(const nlohmann::json& obj, const fs::path& base_dir) {
  if (!obj.is_object()) throw Error(ErrorCode::format, "expected a JSON object");
  if (!obj.contains("path") || !obj["path"].is_string() || obj["path"].get<std::string>().empty())
    throw Error(ErrorCode::format, "missing \"path\" (a non-empty string)");
  ManifestEntry e;
  e.path = resolve(base_dir, obj["path"].get<std::string>());
  if (obj.contains("caption")) {
    if (!obj["caption"].is_string()) throw Error(ErrorCode::format, "caption", "expected a string");
    e.caption = obj["caption"].get<std::string>();
  }
  e.start_s = number_field(obj, "start");
  e.end_s = number_field(obj, "end");
  e.fps = number_field(obj, "fps");
  if (e.start_s && *e.start_s < 0) throw Error(ErrorCode::format, "start", cat(*e.start_s, " is negative"));
  if (e.end_s && *e.end_s <= e.start_s.value_or(0.0))
    throw Error(ErrorCode::format,
                cat("end (", *e.end_s, ") is not after start (", e.start_s.value_or(0.0), ")"));
  if (e.fps && *e.fps <= 0) throw Error(ErrorCode::format, "fps", cat(*e.fps, " is not positive"));
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!is_known_field(it.key())) e.extra[it.key()] = it.value();
  return e;
}

nlohmann::json entry_to_json(const ManifestEntry& e, const fs::path& base_dir) {
  nlohmann::json obj = {{"path", relative_if_under(base_dir, e.path)}, {"caption", e.caption}};
  if (e.start_s) obj["start"] = *e.start_s;
  if (e.end_s) obj["end"] = *e.end_s;
  if (e.fps) obj["fps"] = *e.fps;
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) obj[it.key()] = it.value();
  return obj;
}

// CSV cells are text; a cell that is a finite decimal number becomes a JSON number ("nan", "inf" and hex
// floats, which strtod also reads, stay text).
nlohmann::json csv_cell_value(const std::string& cell) {
  if (cell.empty()) return nullptr;
  if (cell.find_first_not_of("0123456789+-.eE \t") != std::string::npos) return cell;
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  if (end && end != cell.c_str() && *end == '\0' && std::isfinite(v)) return v;
  return cell;
}

// The CSV records of `text` with the line each starts on: a record runs on over line breaks while a quote is
// open (an odd count of '"' so far: an escaped quote counts two). A record whose quote is still open at the
// end of the text is given as its first line alone (the parser then reports it), and reading goes on at
// the line after it, so one stray quote costs one line, not the rest of the file.
std::vector<std::pair<int, std::string>> csv_records(std::string_view text) {
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < text.size();) {
    const size_t end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  std::vector<std::pair<int, std::string>> records;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string record(lines[i]);
    bool open = std::count(record.begin(), record.end(), '"') % 2 == 1;
    size_t last = i;
    while (open && last + 1 < lines.size()) {
      ++last;
      record += '\n';
      record += lines[last];
      open = (std::count(lines[last].begin(), lines[last].end(), '"') % 2 == 1) != open;
    }
    if (open) {
      records.emplace_back(int(i) + 1, std::string(lines[i]));
    } else {
      records.emplace_back(int(i) + 1, std::move(record));
      i = last;
    }
  }
  return records;
}

// The elements of a JSON array document (`text` holds only space before its '['), each with the line it
// starts on, found by tracking strings and nesting alone: every element is then parsed by itself, so one bad
// element costs that element, as a bad line does in JSONL. What keeps the array from being whole (an empty
// element, text after its ']', no ']' at all) is a problem; the elements found are still read.
struct ArrayScan {
  std::vector<std::pair<int, std::string>> elements;
  std::vector<ManifestProblem> problems;
};

ArrayScan json_array_elements(std::string_view text) {
  ArrayScan scan;
  size_t i = text.find('[') + 1;
  int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + i, '\n'));
  auto skip_space = [&] {
    for (; i < text.size() && std::isspace(static_cast<unsigned char>(text[i])); ++i)
      if (text[i] == '\n') ++line;
  };
  for (;;) {
    skip_space();
    if (i >= text.size()) {
      scan.problems.push_back({line, "the JSON array is not closed (no ']' at its end)"});
      return scan;
    }
    if (text[i] == ']' && scan.elements.empty()) {  // []
      ++i;
      break;
    }
    const int start_line = line;
    const size_t start = i;
    int depth = 0;
    bool in_string = false;
    for (; i < text.size(); ++i) {
      const char c = text[i];
      if (c == '\n') ++line;
      if (in_string) {
        if (c == '\\') {
          if (i + 1 < text.size() && text[i + 1] == '\n') ++line;
          ++i;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && depth > 0) {
        --depth;
      } else if ((c == ',' || c == ']') && depth == 0) {
        break;
      }
    }
    std::string element = trim(text.substr(start, i - start));
    if (element.empty())
      scan.problems.push_back({start_line, "an empty element (two commas, or a comma before ']')"});
    else
      scan.elements.emplace_back(start_line, std::move(element));
    if (i >= text.size()) {
      scan.problems.push_back({line, "the JSON array is not closed (no ']' at its end)"});
      return scan;
    }
    if (text[i++] == ']') break;
  }
  skip_space();
  if (i < text.size()) scan.problems.push_back({line, "text after the JSON array's closing ']'"});
  return scan;
}

std::string render_cell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return csv_escape(v.get<std::string>());
  return csv_escape(v.dump());
}

}  // namespace

const char* to_string(ManifestFormat format) {
  switch (format) {
    case ManifestFormat::jsonl:
      return "jsonl";
    case ManifestFormat::json:
      return "json";
    case ManifestFormat::csv:
      return "csv";
    default:
      return "unknown";
  }
}

std::optional<ManifestFormat> manifest_format_from_string(const std::string& name) {
  if (name == "jsonl") return ManifestFormat::jsonl;
  if (name == "json") return ManifestFormat::json;
  if (name == "csv") return ManifestFormat::csv;
  return std::nullopt;
}

ManifestFormat manifest_format_of(const fs::path& path) {
  std::string ext = to_lower(path.extension().string());
  if (ext == ".jsonl") return ManifestFormat::jsonl;
  if (ext == ".json") return ManifestFormat::json;
  if (ext == ".csv") return ManifestFormat::csv;
  return ManifestFormat::unknown;
}

std::vector<std::string> parse_csv_record(const std::string& line) {
  std::vector<std::string> fields;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.push_back(std::move(field));
      field.clear();
    } else if (c != '\r') {
      field += c;
    }
  }
  if (quoted) throw Error(ErrorCode::format, "unterminated quoted field");
  fields.push_back(std::move(field));
  return fields;
}

std::string csv_escape(const std::string& field) {
  if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

ManifestReadResult read_manifest(const fs::path& path) {
  const ManifestFormat format = manifest_format_of(path);
  if (format == ManifestFormat::unknown)
    throw Error(ErrorCode::format, path.string(), "unknown manifest type (expected .jsonl, .json or .csv)");
  return parse_manifest_text(read_text_file(path), format, path.parent_path(), path.string());
}

ManifestReadResult parse_manifest_text(std::string_view text, ManifestFormat format, const fs::path& base_dir,
                                       const std::string& subject) {
  if (format == ManifestFormat::unknown)
    throw Error(ErrorCode::format, subject, "unknown manifest type (expected .jsonl, .json or .csv)");
  text = without_bom(text);  // spreadsheets write one before a CSV header
  ManifestReadResult result;
  std::vector<std::pair<int, std::string>> records;
  std::vector<ManifestProblem> array_problems;  // after the elements' own, on the same line
  if (format == ManifestFormat::csv) {
    records = csv_records(text);
  } else if (const size_t first = text.find_first_not_of(" \t\r\n");
             format == ManifestFormat::json && first != std::string_view::npos && text[first] == '[') {
    ArrayScan scan = json_array_elements(text);
    records = std::move(scan.elements);
    array_problems = std::move(scan.problems);
  } else {  // JSONL, or a .json file that holds JSON lines rather than one array
    std::istringstream in{std::string(text)};
    int line_no = 0;
    for (std::string line; std::getline(in, line);) records.emplace_back(++line_no, std::move(line));
  }
  std::vector<std::string> header;
  for (const auto& [line_no, line] : records) {
    if (trim(line).empty()) continue;
    if (format == ManifestFormat::csv && header.empty()) {
      // Without a usable header row nothing in the file can be read: refuse the whole manifest.
      try {
        for (auto& h : parse_csv_record(line)) header.push_back(to_lower(trim(h)));
        if (!is_utf8(line)) throw Error(ErrorCode::format, "not UTF-8 text");
      } catch (const Error& e) {
        throw Error(ErrorCode::format, subject, cat("header row: ", e.message()));
      }
      if (std::find(header.begin(), header.end(), "path") == header.end())
        throw Error(ErrorCode::format, subject, "CSV manifest has no \"path\" column in its header row");
      continue;
    }
    try {
      if (format != ManifestFormat::csv) {
        nlohmann::json obj;
        try {
          obj = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Error(ErrorCode::format, cat("not valid JSON (", e.what(), ")"));
        }
        result.entries.push_back(entry_from_json(obj, base_dir));
      } else {
        auto cells = parse_csv_record(line);
        if (cells.size() != header.size())
          throw Error(ErrorCode::format,
                      cat("has ", cells.size(), " fields, the header has ", header.size()));
        nlohmann::json obj = nlohmann::json::object();
        for (size_t i = 0; i < header.size(); ++i) {
          if (!is_utf8(cells[i])) throw Error(ErrorCode::format, header[i], "not UTF-8 text");
          obj[header[i]] = (header[i] == "path" || header[i] == "caption") ? nlohmann::json(cells[i])
                                                                           : csv_cell_value(cells[i]);
        }
        result.entries.push_back(entry_from_json(obj, base_dir));
      }
    } catch (const Error& e) {
      result.problems.push_back({line_no, e.what()});
    }
  }
  result.problems.insert(result.problems.end(), array_problems.begin(), array_problems.end());
  std::stable_sort(result.problems.begin(), result.problems.end(),
                   [](const ManifestProblem& a, const ManifestProblem& b) { return a.line < b.line; });
  return result;
}

void write_manifest(const fs::path& path, const std::vector<ManifestEntry>& entries) {
  const ManifestFormat format = manifest_format_of(path);
  if (format == ManifestFormat::unknown)
    throw Error(ErrorCode::invalid_argument, path.string(),
                "unknown manifest type (expected .jsonl, .json or .csv)");
  write_text_atomic(path, manifest_text(entries, format, path.parent_path()));
}

std::string manifest_text(const std::vector<ManifestEntry>& entries, ManifestFormat format,
                          const fs::path& base_dir) {
  if (format == ManifestFormat::unknown)
    throw Error(ErrorCode::invalid_argument, "manifest",
                "unknown manifest type (expected jsonl, json or csv)");
  std::ostringstream out;
  // Invalid UTF-8 (from a catalog filled before captions were checked) is written as U+FFFD, not refused.
  auto json_line = [&](const ManifestEntry& e) {
    return entry_to_json(e, base_dir).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  if (format == ManifestFormat::jsonl) {
    for (const auto& e : entries) out << json_line(e) << '\n';
  } else if (format == ManifestFormat::json) {
    // One array, an entry a line: valid JSON for other tools, and line numbers that name entries.
    out << '[';
    for (size_t i = 0; i < entries.size(); ++i) out << (i ? ",\n" : "\n") << json_line(entries[i]);
    out << (entries.empty() ? "]\n" : "\n]\n");
  } else {
    std::vector<std::string> columns = {"path", "caption", "start", "end", "fps"};
    for (const auto& e : entries)
      for (auto it = e.extra.begin(); it != e.extra.end(); ++it)
        if (std::find(columns.begin(), columns.end(), it.key()) == columns.end()) columns.push_back(it.key());
    for (size_t i = 0; i < columns.size(); ++i) out << (i ? "," : "") << csv_escape(columns[i]);
    out << '\n';
    for (const auto& e : entries) {
      nlohmann::json obj = entry_to_json(e, base_dir);
      for (size_t i = 0; i < columns.size(); ++i)
        out << (i ? "," : "") << (obj.contains(columns[i]) ? render_cell(obj[columns[i]]) : "");
      out << '\n';
    }
  }
  return out.str();
}

std::optional<std::string> read_sidecar_caption(const fs::path& clip) {
  fs::path txt = clip;
  txt.replace_extension(".txt");
  std::error_code ec;
  if (!fs::is_regular_file(txt, ec)) return std::nullopt;
  std::string text = trim(without_bom(read_text_file(txt)));
  if (text.empty()) return std::nullopt;
  if (!is_utf8(text))
    throw Error(ErrorCode::format, txt.string(), "not UTF-8 text (save the caption as UTF-8)");
  return text;
}

void write_sidecar_caption(const fs::path& clip, const std::string& caption) {
  fs::path txt = clip;
  txt.replace_extension(".txt");
  write_text_atomic(txt, caption + "\n");
}

}  // namespace mugv
