#pragma once
// Prompts: saved text prompts (with an optional negative prompt and tags) for generation and for
// training-time sample previews. Writes run in their own write transaction or join the caller's.

#include "catalog/catalog.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

struct Prompt {
  int64_t id = 0;
  std::string text;
  std::string negative;
  std::vector<std::string> tags;  // kept in the order given, duplicates removed
  int64_t created_at_ms = 0;
};

// Which prompts to list, newest first. Empty members do not filter.
struct PromptQuery {
  std::string text_contains;  // case-insensitive for ASCII, matched literally (% and _ are not wildcards)
  std::string tag;            // exact tag
  int64_t limit = 0;          // 0: no limit
  int64_t offset = 0;
};

// Stores the prompt (id and created_at_ms assigned). Error(invalid_argument) for empty text.
[[nodiscard]] Prompt add_prompt(Catalog& catalog, Prompt prompt);
[[nodiscard]] std::optional<Prompt> get_prompt(Catalog& catalog, int64_t id);
// Replaces text, negative and tags of prompt.id. Error(not_found).
void update_prompt(Catalog& catalog, const Prompt& prompt);
// Returns false when no such prompt existed; generations keep their own copy of the text.
bool delete_prompt(Catalog& catalog, int64_t id);
[[nodiscard]] std::vector<Prompt> list_prompts(Catalog& catalog, const PromptQuery& query = {});

}  // namespace mugv
