#pragma once
// Captions: every caption a clip ever had is kept as a numbered version (1, 2, ...); at most one is
// the clip's current caption, the one training uses.
// The rule that protects people's edits: a caption from a model, a template or an import never
// replaces a current human caption; it is stored as a non-current version that a person may promote
// with set_current_caption. Human captions always become current.
// Writes run in their own write transaction or join the caller's.

#include "catalog/catalog.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class CaptionOrigin {
  unknown = 0,
  human,      // typed or edited by a person
  model,      // written by a captioning model
  template_,  // generated from structured labels ("a red circle moving left")
  import,     // read from a sidecar file or manifest
};

// CaptionOrigin::template_ reads and writes as "template".
const char* to_string(CaptionOrigin origin);
std::optional<CaptionOrigin> caption_origin_from_string(std::string_view name);

struct Caption {
  int64_t id = 0;
  int64_t clip_id = 0;
  std::string text;
  CaptionOrigin origin = CaptionOrigin::unknown;
  std::string producer;  // model name and version, or the command that wrote it
  int version = 0;       // 1 for the clip's first caption
  bool current = false;
  int64_t created_at_ms = 0;
};

// Stores a new version of the clip's caption and returns it; `current` says whether it became the
// current caption under the rule above. Error(not_found) for a missing clip, Error(invalid_argument)
// for an unknown origin.
[[nodiscard]] Caption add_caption(Catalog& catalog, int64_t clip_id, std::string_view text,
                                  CaptionOrigin origin, std::string_view producer);
// The clip's current caption; nullopt when it has none.
[[nodiscard]] std::optional<Caption> current_caption(Catalog& catalog, int64_t clip_id);
// All versions of the clip's caption, newest first; empty when it has none.
[[nodiscard]] std::vector<Caption> caption_history(Catalog& catalog, int64_t clip_id);
// Makes caption `caption_id` its clip's current caption (a person's explicit choice). Error(not_found).
void set_current_caption(Catalog& catalog, int64_t caption_id);

}  // namespace mugv
