// libFuzzer target: dataset manifests (JSONL, JSON array and CSV files people write or export from other
// tools, which an import job reads) must never crash, hang or reach undefined behaviour on any bytes, and
// must throw nothing but mugv::Error. Beyond that, what was read must survive a round trip: written back in
// the same format and read again, it gives the same entries with no problem (a CSV caption holding a line
// break, a header naming a column with a comma, or a number CSV cannot keep would break that).
//
// The first byte picks the format (odd: CSV; even: JSON when its bit 1 is set, else JSONL); the rest is the
// manifest's text.
#include "core/error.h"
#include "core/utf8.h"
#include "dataset/manifest.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

bool same_entries(const std::vector<mugv::ManifestEntry>& a, const std::vector<mugv::ManifestEntry>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].path != b[i].path || a[i].caption != b[i].caption || a[i].start_s != b[i].start_s ||
        a[i].end_s != b[i].end_s || a[i].fps != b[i].fps || a[i].extra != b[i].extra)
      return false;
  return true;
}

void fail(const char* what, const std::string& text) {
  std::fprintf(stderr, "%s; written text:\n%s\n", what, text.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto format = data[0] % 2   ? mugv::ManifestFormat::csv
                      : data[0] & 2 ? mugv::ManifestFormat::json
                                    : mugv::ManifestFormat::jsonl;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const mugv::fs::path base = "/data/manifests";
  mugv::ManifestReadResult read;
  try {
    read = mugv::parse_manifest_text(text, format, base, "fuzz");
  } catch (const mugv::Error&) {
    return 0;
  }
  for (const auto& entry : read.entries)
    if (!mugv::is_utf8(entry.caption)) fail("a caption that is not UTF-8 was accepted", entry.caption);
  const std::string written = mugv::manifest_text(read.entries, format, base);
  const mugv::ManifestReadResult again = mugv::parse_manifest_text(written, format, base, "fuzz");
  if (!again.problems.empty()) fail(again.problems[0].reason.c_str(), written);
  if (!same_entries(read.entries, again.entries)) fail("the entries changed in a round trip", written);
  return 0;
}
