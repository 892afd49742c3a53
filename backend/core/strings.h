#pragma once
// Small string helpers used across the backend.

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// Concatenates anything streamable: cat("clip ", 12, " of ", path).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

std::vector<std::string> split(std::string_view text, char separator);
std::string trim(std::string_view text);
std::string to_lower(std::string_view text);
bool starts_with(std::string_view text, std::string_view prefix);
bool ends_with(std::string_view text, std::string_view suffix);
// Name order with runs of digits compared as numbers: "mugv-1b" < "mugv-4b" < "mugv-10b". Ties in value
// ("7" and "007") fall back to plain byte order, so distinct names never compare equal.
bool natural_less(std::string_view a, std::string_view b);
// Renders a byte count as "12.3 MiB".
std::string human_bytes(double bytes);
// Renders a tensor shape as "[2, 16, 64]".
std::string shape_string(const std::vector<int64_t>& shape);
// Renders seconds as "1h02m", "3m05s" or "4.2s".
std::string human_duration(double seconds);

}  // namespace mugv
