#pragma once
// Helpers shared by the catalog's query modules; not part of the catalog's public API.

#include "catalog/catalog.h"
#include "core/error.h"
#include "core/strings.h"

#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mugv::catalog_detail {

template <typename E, size_t N>
using EnumNames = std::array<std::pair<E, const char*>, N>;

template <typename E, size_t N>
const char* enum_name(const EnumNames<E, N>& names, E value) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  return names[0].second;
}

template <typename E, size_t N>
std::optional<E> enum_value(const EnumNames<E, N>& names, std::string_view text) {
  for (const auto& [v, name] : names)
    if (text == name) return v;
  return std::nullopt;
}

// Reads an enum column; a name this build does not know (written by a newer one) reads as unknown.
template <typename E, size_t N>
E enum_column(const sqlite::Statement& statement, int column, const EnumNames<E, N>& names) {
  return enum_value(names, statement.text(column)).value_or(names[0].first);
}

// Parses a JSON column; damaged text is reported as Error(corrupt) naming the row.
inline nlohmann::json json_column(Catalog& catalog, const sqlite::Statement& statement, int column,
                                  std::string_view what) {
  auto value = nlohmann::json::parse(statement.text(column), nullptr, false);
  if (value.is_discarded())
    throw Error(ErrorCode::corrupt, catalog.path().string(), cat(what, ": stored JSON is damaged"));
  return value;
}

inline std::string json_text(const nlohmann::json& value, std::string_view empty_default) {
  return value.is_null() ? std::string(empty_default) : value.dump();
}

[[noreturn]] inline void throw_not_found(Catalog& catalog, std::string_view what) {
  throw Error(ErrorCode::not_found, catalog.path().string(), cat(what, " does not exist"));
}

// Tags are short labels; control characters are refused because lists are joined with \x1f.
inline void check_tags(Catalog& catalog, const std::vector<std::string>& tags) {
  for (const auto& tag : tags) {
    if (tag.empty())
      throw Error(ErrorCode::invalid_argument, catalog.path().string(), "a tag cannot be empty");
    for (unsigned char c : tag)
      if (c < 0x20)
        throw Error(ErrorCode::invalid_argument, catalog.path().string(),
                    cat("tag \"", tag, "\" contains a control character"));
  }
}

// Escapes % and _ so user text matches literally in `LIKE ? ESCAPE '\'`.
inline std::string like_pattern_containing(std::string_view text) {
  std::string pattern = "%";
  for (char c : text) {
    if (c == '%' || c == '_' || c == '\\') pattern += '\\';
    pattern += c;
  }
  pattern += '%';
  return pattern;
}

}  // namespace mugv::catalog_detail
