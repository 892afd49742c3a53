// libFuzzer target: parse_toml_text (presets, cluster profiles, curricula: files people write by hand, and
// preset files a server's client may name) must never crash, hang or reach undefined behaviour on any bytes,
// and must throw nothing but mugv::Error. toml++ 3.3 itself asserts on some malformed table headers and
// reaches __builtin_unreachable() on some non-ASCII characters (core/json_io.cpp says how they are kept away
// from it); the inputs that found those are kept in fuzz_toml_corpus.
#include "core/error.h"
#include "core/json_io.h"

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const nlohmann::json document =
        mugv::parse_toml_text(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    (void)document.dump();
  } catch (const mugv::Error&) {
  }
  return 0;
}
