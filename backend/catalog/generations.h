#pragma once
// Generations: the history of generated videos with everything needed to reproduce one (prompt text,
// negative, seed, sampler settings, model run and checkpoint). The prompt text is copied, so deleting
// a prompt, run or checkpoint keeps the generation with that link set to none.
// Writes run in their own write transaction or join the caller's.

#include "catalog/catalog.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct Generation {
  int64_t id = 0;
  std::optional<int64_t> prompt_id;
  std::string prompt_text;
  std::string negative;
  std::optional<int64_t> run_id;
  std::optional<int64_t> checkpoint_id;
  uint64_t seed = 0;
  int steps = 0;
  double cfg_scale = 0;
  int width = 0;
  int height = 0;
  int frames = 0;
  fs::path image_path;                                 // conditioning image for I2V; empty for T2V
  fs::path output_path;                                // the written video
  nlohmann::json settings = nlohmann::json::object();  // sampler, shift, enhancer, ...
  int64_t created_at_ms = 0;
};

// Stores the generation (id and created_at_ms assigned). Error(not_found) for a missing prompt, run or
// checkpoint; Error(invalid_argument) for empty prompt text or non-positive steps, size or frames.
[[nodiscard]] Generation add_generation(Catalog& catalog, Generation generation);
[[nodiscard]] std::optional<Generation> get_generation(Catalog& catalog, int64_t id);
// Newest first, at most `limit` (0: all).
[[nodiscard]] std::vector<Generation> list_generations(Catalog& catalog, int64_t limit = 0,
                                                       int64_t offset = 0);
[[nodiscard]] std::vector<Generation> list_generations_for_prompt(Catalog& catalog, int64_t prompt_id,
                                                                  int64_t limit = 0);
bool delete_generation(Catalog& catalog, int64_t id);

}  // namespace mugv
