#include "core/shell_quote.h"

namespace mugv {

std::string shell_quote(std::string_view arg) {
  // Inside single quotes a POSIX shell expands nothing, and nothing but ' ends the quote; a NUL byte
  // cannot be part of an argument at all, so it is not special-cased.
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'')
      quoted += "'\\''";
    else
      quoted += c;
  }
  return quoted + "'";
}

std::string shell_join(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& a : args) line += (line.empty() ? "" : " ") + shell_quote(a);
  return line;
}

}  // namespace mugv
