#pragma once
// UTF-8 validation for text that enters from files and programs people make.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace mugv {

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF),
// the test nlohmann::json applies when it writes a string. Text from files people make (CSV manifests,
// caption files) is checked with it where it enters, so that nothing stored fails to serialise later.
bool is_utf8(std::string_view text);

// The well-formed UTF-8 sequence at text[i] as its code point and length in bytes; {0, 0} when none starts
// there (a stray continuation byte, an overlong form, a surrogate, a sequence cut short). ASCII is length 1.
std::pair<uint32_t, size_t> decode_utf8(std::string_view text, size_t i);

// `text` with each byte that does not begin a well-formed sequence replaced by U+FFFD: for text that is only
// reported, never data (another program's output in an error message, a cut-off HTTP body).
std::string valid_utf8(std::string_view text);

// `text` without the UTF-8 byte order mark some editors and spreadsheets put first (U+FEFF at offset 0 is
// that mark, never content, in a UTF-8 file).
std::string_view without_bom(std::string_view text);

}  // namespace mugv
