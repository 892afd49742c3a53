#pragma once
// Quoting for POSIX shells, for command lines written into scripts (sbatch files): the quoted
// text is always exactly one word whose value is the input, whatever it holds ($(...), backticks, quotes,
// newlines, globs). Pure functions; thread-safe.

#include <string>
#include <string_view>
#include <vector>

namespace mugv {

// 'arg' with every ' written as '\'' (end the quote, an escaped quote, reopen). The empty string is ''.
std::string shell_quote(std::string_view arg);
// The arguments quoted and joined by spaces: a command line that runs exactly `args`.
std::string shell_join(const std::vector<std::string>& args);

}  // namespace mugv
