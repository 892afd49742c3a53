#pragma once
// Low-rank adapters (LoRA) on the DiT's linears, in the PEFT convention: for a base linear y = W·x + b, an
// adapter adds scale · B·(A·dropout(x)) with A [rank, in] ("lora_A"), B [out, rank] ("lora_B") and
// scale = alpha / rank. A starts uniform in ±1/sqrt(in) and B at zero, so a fresh adapter changes nothing.
//
// Where adapters can go and how targets name them: model/lora_spec.h.
//
// A LoraSet is what the DiT consults at each adaptable linear (DiTImpl::set_lora). Adapters enter it in two
// ways:
//   - trainable: lora_A / lora_B are registered as child modules of the base linear, so the model's
//     parameter paths are the PEFT names ("blocks.0.attn.qkv.lora_A.weight") and optimisers, EMA and
//     checkpoints see them like any parameter; the base stays as it is (the caller freezes it).
//   - loaded for inference (several at once, each with its own scale): held by the set only.
// merge_lora() instead adds scale · B·A into the base weights, which then need no set at run time.
//
// Not thread-safe (torch modules). Tensor-parallel models are refused (the adapters would need splitting).

#include "model/dit.h"
#include "model/lora_spec.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mugv {

// Their module paths.
[[nodiscard]] std::vector<std::string> adaptable_linears(const DiTImpl& dit);
// The adaptable paths the targets name, in model order. Throws Error(invalid_argument) naming a target that
// matches none (with the groups and an example of the paths).
[[nodiscard]] std::vector<std::string> resolve_lora_targets(const DiTImpl& dit,
                                                            const std::vector<std::string>& targets);

// One adapter's tensors by module path: A ("down", [rank, in]) and B ("up", [out, rank]), with the alpha
// stored for that module when the file has one.
struct LoraModuleWeights {
  torch::Tensor down, up;
  std::optional<double> alpha;
  int64_t rank() const { return down.size(0); }
};
struct LoraWeights {
  std::map<std::string, LoraModuleWeights> modules;
  std::optional<double> alpha;  // the file's alpha for every module (metadata); nullopt: alpha = rank
  // alpha / rank of one module (the module's alpha, else the file's, else the rank: scale 1).
  double scale_of(const std::string& module) const;
};

class LoraSet {
 public:
  // Registers a trainable adapter on every target linear of `dit` (initialised from torch's global
  // generator: seed it first for reproducible runs), on the device and in the dtype of each base weight
  // (fp32 when the base is stored in a lower precision). Throws Error(invalid_argument) for targets that
  // name nothing, Error(conflict) when the set already holds a trainable adapter, Error(unsupported) for a
  // model split by tensor parallel.
  void attach_trainable(DiTImpl& dit, const LoraConfig& config);
  // Adds a loaded adapter with the user's `scale` (multiplying alpha / rank), copied to `device` (default:
  // that of each base weight; give the compute device when blocks are swapped in from host memory) in the
  // base weight's dtype. Checks every module first: a path that is no adaptable linear of `dit` throws
  // Error(invalid_argument) listing all such keys; a shape that does not fit throws naming the module.
  void attach(DiTImpl& dit, const LoraWeights& weights, double scale, const std::string& subject,
              std::optional<torch::Device> device = std::nullopt);

  // `y` (the output of `base` for its input x) plus every adapter's output on `base`; `y` itself when `base`
  // has none. Each adapter adds scale · B·(A·x) to y in one GEMM (addmm), so no output-sized temporaries
  // pile up beside y: on a CPU these transients fragmented the heap, about 25 % more peak memory with
  // adapters on every linear of the blocks.
  [[nodiscard]] torch::Tensor add_to(const torch::nn::Linear& base, const torch::Tensor& x,
                                     torch::Tensor y) const;
  bool empty() const { return by_linear_.empty(); }
  // Moves the loaded adapters to `device` (trainable ones move with the module tree they belong to).
  void to(torch::Device device);

 private:
  struct Entry {
    torch::Tensor down, up;
    double scale = 1;
    double dropout = 0;
    bool trainable = false;
  };
  std::unordered_map<const torch::nn::Module*, std::vector<Entry>> by_linear_;
  bool has_trainable_ = false;
};

// Checks `weights` against `dit` as LoraSet::attach does (every key names an adaptable linear, every shape
// fits), changing nothing.
void check_lora_weights(const DiTImpl& dit, const LoraWeights& weights, const std::string& subject);

// The DiT's set, installed (empty) when it has none yet.
LoraSet& lora_set_of(DiTImpl& dit);

// Adds scale_m · B·A (computed in fp32, written in each weight's dtype) into the base weights. Checks as
// LoraSet::attach.
void merge_lora(DiTImpl& dit, const LoraWeights& weights, double scale, const std::string& subject);

// An adapter of rank `rank` for each target linear that approximates tuned − base (truncated SVD: B = U·√S,
// A = √S·Vᵀ, alpha = rank). `relative_error` receives ‖Δ − B·A‖ / ‖Δ‖ over all modules (Frobenius).
// Throws Error(invalid_argument) when the two models differ in shape.
[[nodiscard]] LoraWeights extract_lora(const DiTImpl& base, const DiTImpl& tuned, int64_t rank,
                                       const std::vector<std::string>& targets,
                                       double* relative_error = nullptr);

}  // namespace mugv
