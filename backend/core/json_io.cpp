#include "core/json_io.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"

#include <toml++/toml.h>

#include <sstream>

namespace mugv {
namespace {

nlohmann::json toml_to_json(const toml::node& node) {
  if (const toml::table* table = node.as_table()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, child] : *table) out[std::string(key.str())] = toml_to_json(child);
    return out;
  }
  if (const toml::array* array = node.as_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const toml::node& child : *array) out.push_back(toml_to_json(child));
    return out;
  }
  if (auto v = node.as_string()) return v->get();
  if (auto v = node.as_integer()) return v->get();
  if (auto v = node.as_floating_point()) return v->get();
  if (auto v = node.as_boolean()) return v->get();
  std::ostringstream text;  // date, time, date-time
  node.visit([&](const auto& value) { text << value; });
  return text.str();
}

void json_to_toml(const nlohmann::json& value, const std::string& key_path, toml::table& table,
                  std::string_view key);

void insert_path(toml::table& root, const std::string& dotted, const nlohmann::json& value) {
  std::vector<std::string> parts = split(dotted, '.');
  toml::table* table = &root;
  std::string path;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    path += (path.empty() ? "" : ".") + parts[i];
    toml::node* existing = table->get(parts[i]);
    if (!existing) {
      table->insert(parts[i], toml::table{});
      existing = table->get(parts[i]);
    }
    table = existing->as_table();
    if (!table)
      throw Error(ErrorCode::invalid_argument, dotted, "'" + path + "' is both a value and a table");
  }
  json_to_toml(value, dotted, *table, parts.back());
}

toml::array json_array_to_toml(const nlohmann::json& value, const std::string& key_path) {
  toml::array array;
  for (const auto& item : value) {
    if (item.is_object()) {
      toml::table child;
      for (const auto& [k, v] : item.items()) insert_path(child, k, v);
      array.push_back(std::move(child));
    } else if (item.is_array()) {
      array.push_back(json_array_to_toml(item, key_path));
    } else if (item.is_string()) {
      array.push_back(item.get<std::string>());
    } else if (item.is_boolean()) {
      array.push_back(item.get<bool>());
    } else if (item.is_number_integer()) {
      array.push_back(item.get<int64_t>());
    } else if (item.is_number()) {
      array.push_back(item.get<double>());
    } else {
      throw Error(ErrorCode::invalid_argument, key_path, "null has no TOML form");
    }
  }
  return array;
}

void json_to_toml(const nlohmann::json& value, const std::string& key_path, toml::table& table,
                  std::string_view key) {
  if (table.contains(key) && !value.is_object())
    throw Error(ErrorCode::invalid_argument, key_path, "given twice");
  if (value.is_object()) {
    toml::node* existing = table.get(key);
    if (!existing) {
      table.insert(key, toml::table{});
      existing = table.get(key);
    }
    toml::table* child = existing->as_table();
    if (!child) throw Error(ErrorCode::invalid_argument, key_path, "is both a value and a table");
    for (const auto& [k, v] : value.items()) insert_path(*child, k, v);
  } else if (value.is_array()) {
    table.insert(key, json_array_to_toml(value, key_path));
  } else if (value.is_string()) {
    table.insert(key, value.get<std::string>());
  } else if (value.is_boolean()) {
    table.insert(key, value.get<bool>());
  } else if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > uint64_t(INT64_MAX))
      throw Error(ErrorCode::invalid_argument, key_path, "integer too large for TOML (64-bit signed)");
    table.insert(key, value.get<int64_t>());
  } else if (value.is_number_integer()) {
    table.insert(key, value.get<int64_t>());
  } else if (value.is_number()) {
    table.insert(key, value.get<double>());
  } else {
    throw Error(ErrorCode::invalid_argument, key_path, "null has no TOML form");
  }
}

}  // namespace

TextPosition position_of_offset(std::string_view text, size_t offset) {
  TextPosition pos;
  offset = std::min(offset, text.size());
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++pos.line;
      pos.column = 1;
    } else {
      ++pos.column;
    }
  }
  return pos;
}

nlohmann::json parse_json_text(std::string_view text, const std::string& subject) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character.
    TextPosition pos = position_of_offset(text, e.byte > 0 ? e.byte - 1 : 0);
    std::string what = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at line L, column C: ".
    if (size_t colon = what.find(": "); colon != std::string::npos) what = what.substr(colon + 2);
    throw Error(ErrorCode::format, subject,
                cat("invalid JSON at line ", pos.line, ", column ", pos.column, ": ", what));
  } catch (const nlohmann::json::exception& e) {
    // Valid JSON that nlohmann cannot hold, such as a number beyond a double's range (out_of_range 406).
    std::string what = e.what();
    if (size_t bracket = what.find("] "); bracket != std::string::npos) what = what.substr(bracket + 2);
    throw Error(ErrorCode::format, subject, "invalid JSON: " + what);
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json_text(read_text_file(path), path.string());
}

void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& value) {
  std::string text;
  try {
    text = value.dump(2) + "\n";
  } catch (const nlohmann::json::type_error& e) {
    throw Error(ErrorCode::invalid_argument, path.string(),
                std::string("cannot encode as JSON: ") + e.what());
  }
  write_text_atomic(path, text);
}

nlohmann::json parse_toml_text(std::string_view text, const std::string& subject) {
  try {
    toml::table table = toml::parse(text, subject);
    return toml_to_json(table);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    throw Error(ErrorCode::format, subject,
                cat("invalid TOML at line ", begin.line, ", column ", begin.column, ": ", e.description()));
  }
}

nlohmann::json read_toml_file(const std::filesystem::path& path) {
  return parse_toml_text(read_text_file(path), path.string());
}

std::string to_toml_text(const nlohmann::json& document) {
  if (!document.is_object())
    throw Error(ErrorCode::invalid_argument, "toml", "the document must be an object");
  toml::table root;
  for (const auto& [key, value] : document.items()) insert_path(root, key, value);
  std::ostringstream out;
  out << toml::toml_formatter(root) << "\n";
  return out.str();
}

}  // namespace mugv
