#pragma once
// Adapter files as the PEFT / diffusers ecosystem writes them, read and written by module path:
//
//   written   safetensors, tensors "base_model.model.<module>.lora_A.weight" [rank, in] and
//             "...lora_B.weight" [out, rank] (what PEFT's save_pretrained writes for a bare model), with
//             __metadata__ {"format": "pt", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
//             "base_model", "base_sha256", ...}. PEFT's adapter_config.json (r, lora_alpha, target_modules,
//             lora_dropout) can be written beside it (write_peft_adapter_config).
//   read      safetensors or torch.save files (core/weight_files.h) in these key layouts:
//               peft            <prefix><module>.lora_A.weight / .lora_B.weight
//               peft-in-model   <prefix><module>.lora_A.<adapter>.weight (a state dict of a model PEFT
//                               injected adapters into, e.g. the release's enhancer: "pipe.dit." prefix,
//                               adapter "default", rank 256)
//               kohya           <prefix><module>.lora_down.weight / .lora_up.weight [+ .alpha]
//             with <prefix> one of base_model.model., pipe.dit., pipe., transformer., model.diffusion_model.,
//             diffusion_model., dit., model. (or none). alpha comes from a module's .alpha tensor, else the
//             metadata (lora_alpha, ss_network_alpha), else adapter_config.json beside the file, else it is
//             the rank (scale 1) and LoraFileInfo says so.
// A tensor that is no LoRA tensor, or a module with only one of A and B, is Error(format) naming the file and
// the keys — never skipped. Whether the modules exist in a model is LoraSet::attach's check.
// Pure functions over files; thread-safe.

#include "model/lora.h"

#include <filesystem>
#include <map>
#include <set>
#include <string>

namespace mugv {

struct LoraFileInfo {
  std::string layout;        // "peft", "peft-in-model" or "kohya"
  std::string prefix;        // stripped before the module paths ("" when none)
  std::string adapter;       // adapter name of in-model keys ("default")
  std::set<int64_t> ranks;   // of all modules
  std::string alpha_source;  // where alpha came from ("metadata lora_alpha", "adapter_config.json", ...)
  std::map<std::string, std::string> metadata;  // the file's __metadata__
  int64_t parameters = 0;
  std::string dtype;  // of the first tensor ("F32", "BF16", ...)
};

struct LoraFile {
  LoraWeights weights;
  LoraFileInfo info;
};

[[nodiscard]] LoraFile read_lora_file(const std::filesystem::path& path);

// Writes `weights` in the PEFT layout (header). Every module shares one rank; alpha is weights.alpha (or the
// rank). `metadata` is added to the header. Throws Error(io) naming the path.
void write_lora_file(const std::filesystem::path& path, const LoraWeights& weights,
                     const std::map<std::string, std::string>& metadata);
// PEFT's adapter_config.json for `weights` in `dir` (peft_type LORA, r, lora_alpha, lora_dropout,
// target_modules = the module paths).
void write_peft_adapter_config(const std::filesystem::path& dir, const LoraWeights& weights, double dropout);

// "FILE[:SCALE]" as `--lora` takes it: the text after the last ':' is the scale when it is a number
// (default 1). Throws Error(usage) for an empty file name.
struct LoraArgument {
  std::filesystem::path file;
  double scale = 1.0;
};
[[nodiscard]] LoraArgument parse_lora_argument(const std::string& text);

// {"layout", "prefix", "adapter", "ranks", "alpha", "alpha_source", "modules", "parameters", "dtype",
// "metadata", "targets"}: what `mugv lora info --json` prints.
[[nodiscard]] nlohmann::json to_json(const LoraFile& file);

}  // namespace mugv
