#pragma once
// State dicts of torch modules in safetensors files (core/safetensors.h). Tensor names are the
// module's parameter and buffer paths ("blocks.3.attn.qkv.weight"), dtypes are kept as they are
// in the module (f32 stays F32, bf16 stays BF16). Checkpoints (backend/train) build on these.
//
// Loading checks the whole file against the module before it copies anything: a missing tensor,
// a shape mismatch or (by policy) an unexpected tensor throws and leaves the module unchanged.
// Values are converted to each parameter's dtype and device. Not thread-safe with respect to the
// module being loaded; the file itself is read-only.

#include "core/safetensors.h"
#include "core/weight_files.h"
#include "model/config.h"

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

enum class UnexpectedTensors { unknown = 0, error, ignore };
const char* to_string(UnexpectedTensors policy);
std::optional<UnexpectedTensors> unexpected_tensors_from_string(std::string_view name);

struct LoadReport {
  int64_t loaded = 0;                // tensors copied into the module
  std::vector<std::string> ignored;  // file tensors that no module entry used (policy ignore)
};

// Names a module entry may have in a file, tried in order (e.g. T5's embedding: "shared.weight",
// then "encoder.embed_tokens.weight").
using TensorNameMap = std::function<std::vector<std::string>(const std::string& module_name)>;

// Writes every parameter and buffer of `module` (recursively) to `path` atomically, with
// `metadata` as the file's __metadata__. Throws Error(unsupported) for a dtype safetensors cannot
// hold, Error(io) naming the path when it cannot be written.
void save_module(const torch::nn::Module& module, const std::filesystem::path& path,
                 const std::map<std::string, std::string>& metadata = {});

// Writes every parameter and buffer of `module` as a torch.save zip checkpoint (what
// `torch.save(model.state_dict(), path)` gives, e.g. the release's dit.pt), one tensor at a time, each name
// prefixed by `prefix`. Errors as save_module.
void save_module_torch(const torch::nn::Module& module, const std::filesystem::path& path,
                       const std::string& prefix = {});

// Loads `path` (any weight files core/weight_files.h opens: safetensors, sharded safetensors, a torch.save
// checkpoint such as the release's dit.pt, a Hugging Face folder) into `module`, streaming: everything is
// checked first, then each tensor is copied from the mapped file into its parameter (converted to the
// parameter's dtype) and its pages dropped, so resident memory stays near the module's own size plus one
// tensor. Throws Error(not_found) listing the module tensors the file lacks,
// Error(invalid_argument) naming a tensor whose shape differs ("file: blocks.0.attn.qkv.weight has
// shape [96, 32]; the model expects [192, 64]"), Error(format) listing unexpected tensors when the
// policy is `error`, Error(unsupported) for a dtype LibTorch cannot hold (F8).
LoadReport load_module(torch::nn::Module& module, const std::filesystem::path& path,
                       UnexpectedTensors unexpected = UnexpectedTensors::error);
// The same from open files, with a name mapping (identity when empty).
LoadReport load_module(torch::nn::Module& module, const SafetensorsFile& file, const TensorNameMap& names,
                       UnexpectedTensors unexpected);
LoadReport load_module(torch::nn::Module& module, const WeightFiles& files, const TensorNameMap& names,
                       UnexpectedTensors unexpected);

// Writes named tensors (CPU, any dtype safetensors holds) to a safetensors file atomically.
void save_named_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::filesystem::path& path,
                        const std::map<std::string, std::string>& metadata);

// Every parameter and buffer by path (what save_module writes).
[[nodiscard]] std::vector<std::pair<std::string, torch::Tensor>> module_state(
    const torch::nn::Module& module);

// A CPU tensor holding a copy of the view's bytes. Throws Error(unsupported) naming `subject`.
[[nodiscard]] torch::Tensor tensor_from_view(const TensorView& view, const std::string& subject);
[[nodiscard]] std::optional<DType> safetensors_dtype(torch::ScalarType type);

}  // namespace mugv
