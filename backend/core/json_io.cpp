#include "core/json_io.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/utf8.h"

// toml++ 3.3 asserts preconditions that malformed input can break: a table header such as "[[[1]]]" or "[\n"
// reaches its key parser with a character it does not expect (fixed upstream after 3.3). With assertions on
// (debug builds), a user's broken preset would abort the process, a server included, instead of being
// reported; with them off, as in release builds, the library reports the parse error. So it is always
// compiled as in release. Found by fuzzing parse_toml_text.
#pragma push_macro("NDEBUG")
#ifndef NDEBUG
#define NDEBUG
#endif
#include <toml++/toml.h>
#pragma pop_macro("NDEBUG")

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <utility>
#include <vector>

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
    } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      ++pos.column;  // characters, not bytes: a UTF-8 continuation byte adds none
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

namespace {

// The non-ASCII character at text[i] as a \u or \U escape and its length in bytes; {"", 0} for malformed
// UTF-8 (core/utf8.h's test: overlong forms and surrogates included, which toml++ would refuse as escapes).
std::pair<std::string, size_t> unicode_escape(std::string_view text, size_t i) {
  const auto [code, length] = decode_utf8(text, i);
  if (length == 0) return {"", 0};
  char escape[16];
  std::snprintf(escape, sizeof escape, code > 0xFFFF ? "\\U%08X" : "\\u%04X", unsigned(code));
  return {escape, length};
}

// A literal string ('...' or '''...''') at text[quote] that holds non-ASCII characters, written to `out` as
// the basic string of the same value (backslashes and quotes escaped, the characters as escapes, since
// literal strings have none), replacing the opening quote `out` ends with. Returns the offset after the
// string, or 0 when it holds none (then nothing is written); sets `problem` for one that holds some and is
// not closed or not UTF-8 (the parser would meet those characters raw).
size_t literal_as_basic(std::string_view text, size_t quote, std::string& out, const char*& problem) {
  const auto ascii = [](std::string_view part) {
    return std::all_of(part.begin(), part.end(),
                       [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
  };
  const bool multiline = text.compare(quote, 3, "'''") == 0;
  const size_t begin = quote + (multiline ? 3 : 1);
  size_t end = multiline ? text.find("'''", begin) : text.find_first_of("'\n", begin);
  if (end == std::string_view::npos || text[end] != '\'') {
    if (!ascii(text.substr(begin, end == std::string_view::npos ? end : end - begin)))
      problem = "a literal string that is not closed";
    return 0;
  }
  // A multi-line literal may end with one or two quotes of its own: the delimiter is the run's last three.
  for (int extra = 0; multiline && extra < 2 && end + 3 < text.size() && text[end + 3] == '\''; ++extra)
    ++end;
  const std::string_view content = text.substr(begin, end - begin);
  if (ascii(content)) return 0;
  const std::string delimiter = multiline ? "\"\"\"" : "\"";
  std::string basic = delimiter;
  for (size_t k = 0; k < content.size(); ++k) {
    const char ch = content[k];
    if (static_cast<unsigned char>(ch) >= 0x80) {
      const auto [escape, length] = unicode_escape(content, k);
      if (length == 0) {
        problem = "a literal string that is not UTF-8";
        return 0;
      }
      basic += escape;
      k += length - 1;
    } else if (ch == '\\' || ch == '"') {
      basic += '\\';
      basic += ch;
    } else {
      basic += ch;
    }
  }
  out.pop_back();
  out += basic + delimiter;
  return end + (multiline ? 3 : 1);
}

// TOML text that toml++ 3.3 reads without undefined behaviour: that version reaches __builtin_unreachable()
// when it asks whether some non-ASCII characters (U+00A1 to U+0499 among them: accented letters, Greek,
// Cyrillic) are whitespace, which it does outside strings, after a line-ending backslash in a multi-line
// string, and when a malformed value runs on into a string (found by fuzzing parse_toml_text). So non-ASCII
// characters in basic strings are written as the \u or \U escapes of the same characters and in comments as
// '?', and a literal string holding any becomes the basic string of the same value; the values read are
// unchanged. TOML allows them nowhere else, nor as escapes: the first one outside strings and comments, or
// after a backslash, is returned in `problem` (offset npos when there is none). The scan follows basic,
// multi-line basic, literal and multi-line literal strings; where it loses track of a malformed string it
// errs towards "inside", leaving the error to the parser.
struct TextProblem {
  size_t offset = std::string_view::npos;
  const char* what = "";
};
// `origin[k]` is the offset in the original text of the character that gave byte k of the escaped text (an
// escape's bytes all point at its character, a converted literal string's at its opening quote), with one
// more entry for the end: what maps toml++'s error positions back to the file.
std::string escape_non_ascii(std::string_view text, TextProblem& problem, std::vector<size_t>& origin) {
  enum class State { normal, comment, basic, multiline_basic, literal, multiline_literal };
  State state = State::normal;
  problem = {};
  const auto report = [&](size_t i, const char* what) {
    if (problem.offset == std::string_view::npos) problem = {i, what};
  };
  std::string out;
  out.reserve(text.size());
  const auto at = [&](size_t i, std::string_view what) { return text.compare(i, what.size(), what) == 0; };
  constexpr std::string_view kBasic3 = "\"\"\"", kLiteral3 = "'''";
  origin.clear();
  // The bytes appended since the last record all came from the character at `source`. (take() records the
  // delimiter quotes it copies one by one.)
  const auto record = [&](size_t source) {
    origin.resize(std::min(origin.size(), out.size()));
    while (origin.size() < out.size()) origin.push_back(source);
  };
  size_t from = 0;  // the character whose output is not yet recorded (recorded when the next one starts)
  for (size_t i = 0; i < text.size(); ++i) {
    record(from);
    from = i;
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80 && (state == State::comment || state == State::basic || state == State::multiline_basic)) {
      if (const auto [escape, length] = unicode_escape(text, i); length != 0) {
        out += state == State::comment ? "?" : escape;
        i += length - 1;
        continue;
      }
    }
    out += char(c);
    if (c == '\n') {
      if (state != State::multiline_basic && state != State::multiline_literal) state = State::normal;
      continue;
    }
    const auto take = [&](size_t extra) {  // the rest of a three-quote delimiter
      record(from);
      for (size_t k = 1; k <= extra && i + k < text.size(); ++k) {
        out += text[i + k];
        origin.push_back(i + k);
      }
      i += extra;
    };
    switch (state) {
      case State::normal:
        if (c >= 0x80) report(i, "a non-ASCII character outside a string or comment");
        if (c == '#') {
          state = State::comment;
        } else if (c == '"') {
          state = at(i, kBasic3) ? State::multiline_basic : State::basic;
          if (state == State::multiline_basic) take(2);
        } else if (c == '\'') {
          const char* literal_problem = nullptr;
          const size_t after = literal_as_basic(text, i, out, literal_problem);
          if (literal_problem) report(i, literal_problem);
          if (after != 0) {
            i = after - 1;
            break;
          }
          state = at(i, kLiteral3) ? State::multiline_literal : State::literal;
          if (state == State::multiline_literal) take(2);
        }
        break;
      case State::basic:
      case State::multiline_basic:
        if (c == '\\' && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80) {
          report(i, "a backslash before a non-ASCII character, which is no escape");
        } else if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          take(1);  // an escaped character (a backslash ending a line leaves the newline to the loop)
        } else if (state == State::basic ? c == '"' : at(i, kBasic3)) {
          if (state == State::multiline_basic) take(2);
          state = State::normal;
        }
        break;
      case State::literal:
      case State::multiline_literal:
        if (state == State::literal ? c == '\'' : at(i, kLiteral3)) {
          if (state == State::multiline_literal) take(2);
          state = State::normal;
        }
        break;
      case State::comment:
        break;
    }
  }
  record(from);
  origin.push_back(text.size());
  return out;
}

}  // namespace

nlohmann::json parse_toml_text(std::string_view text, const std::string& subject) {
  TextProblem problem;
  std::vector<size_t> origin;
  const std::string ascii = escape_non_ascii(text, problem, origin);
  if (problem.offset != std::string_view::npos) {
    const TextPosition pos = position_of_offset(text, problem.offset);
    throw Error(ErrorCode::format, subject,
                cat("invalid TOML at line ", pos.line, ", column ", pos.column, ": ", problem.what));
  }
  try {
    toml::table table = toml::parse(ascii, subject);
    return toml_to_json(table);
  } catch (const toml::parse_error& e) {
    // toml++ counts in the escaped text, where an escape is longer than its character: the position in the
    // file is that of the character the reported byte came from.
    const auto& begin = e.source().begin;
    size_t offset = 0;
    for (size_t line = 1; line < begin.line && offset < ascii.size(); ++offset)
      if (ascii[offset] == '\n') ++line;
    offset = std::min(offset + (begin.column > 0 ? begin.column - 1 : 0), ascii.size());
    const TextPosition pos = position_of_offset(text, origin[offset]);
    throw Error(ErrorCode::format, subject,
                cat("invalid TOML at line ", pos.line, ", column ", pos.column, ": ", e.description()));
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
