#pragma once
// Captions the clips of a dataset with any Captioner: keyframes are extracted and the captioner is called on
// `concurrency` worker threads, while the calling thread alone writes to the catalog (Catalog is not
// thread-safe). A failed clip (after `retries` extra tries for retryable failures, with backoff) gets the
// tag "uncaptioned" and its error in scores.extra["caption_error"]; the run goes on, and running again
// with scope `missing` retries exactly those. A human caption is never replaced: the catalog stores a
// model caption of a human-captioned clip as a non-current version (catalog/captions.h), and scope
// `missing` / `not_human` do not even ask the model.

#include "caption/captioner.h"
#include "catalog/catalog.h"
#include "core/progress.h"

#include <chrono>
#include <string>
#include <vector>

namespace mugv {

enum class CaptionScope {
  unknown = 0,
  missing,    // clips without a current caption, or tagged "uncaptioned"
  not_human,  // every clip whose current caption is not a person's
  all,        // every clip (human captions still stay current)
};
const char* to_string(CaptionScope scope);
std::optional<CaptionScope> caption_scope_from_string(const std::string& name);

inline constexpr const char* kUncaptionedTag = "uncaptioned";

struct CaptionRunOptions {
  std::string dataset;
  CaptionScope scope = CaptionScope::missing;
  bool kept_only = false;  // only clips whose decision is keep
  int concurrency = 4;
  int retries = 2;
  std::chrono::milliseconds retry_backoff{500};
};

struct CaptionFailure {
  int64_t clip_id = 0;
  std::string error;
};

struct CaptionRunReport {
  int clips = 0;       // clips in scope
  int captioned = 0;   // new current captions
  int kept_human = 0;  // model caption stored as a version because a person's caption stays current
  std::vector<CaptionFailure> failures;
};

// Throws Error(not_found) for an unknown dataset; Error(cancelled) when cancelled (what was written stays).
CaptionRunReport caption_dataset(Catalog& catalog, Captioner& captioner, const CaptionRunOptions& options,
                                 const CancelToken& cancel, const ProgressFn& progress);

}  // namespace mugv
