#pragma once
// JSON and TOML file helpers with errors a person can act on: every error names the file and, for
// syntax errors, the line and column ("x.toml: line 3, column 7: expected '='").
// All functions are stateless and thread-safe.
//
// TOML maps to JSON as: tables -> objects (nested, never flattened), arrays -> arrays, integers
// -> integers, floats -> numbers, booleans -> booleans, strings -> strings, dates and times ->
// strings in TOML's own (RFC 3339) spelling. JSON null has no TOML form and is rejected on writing.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace mugv {

// Parses `text`; `subject` (usually the path) prefixes errors. Throws Error(format).
[[nodiscard]] nlohmann::json parse_json_text(std::string_view text, const std::string& subject);
// Throws Error(not_found / io) when the file cannot be read, Error(format) when it is not JSON.
[[nodiscard]] nlohmann::json read_json_file(const std::filesystem::path& path);
// Pretty-prints (indent 2, trailing newline) and writes atomically (see write_file_atomic).
void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& value);

[[nodiscard]] nlohmann::json parse_toml_text(std::string_view text, const std::string& subject);
[[nodiscard]] nlohmann::json read_toml_file(const std::filesystem::path& path);
// Renders a JSON object as a TOML document. Keys containing dots are treated as paths
// ({"train.lr": 1} becomes [train] lr = 1). Throws Error(invalid_argument) naming the key for
// null values, non-object roots and arrays mixing tables with values.
[[nodiscard]] std::string to_toml_text(const nlohmann::json& document);

// Line and column (both 1-based) of byte `offset` in `text`, for error messages; the column counts UTF-8
// characters, as editors do.
struct TextPosition {
  size_t line = 1;
  size_t column = 1;
};
[[nodiscard]] TextPosition position_of_offset(std::string_view text, size_t offset);

}  // namespace mugv
