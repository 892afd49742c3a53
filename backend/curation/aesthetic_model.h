#pragma once
// Learned aesthetic predictors the user supplies, scoring a picture 1..10 in place of the built-in heuristic
// (scores.h). Curation is torch-free: the formats that need LibTorch are provided by a loader registered at
// start-up (register_torch_aesthetic_loader() in curation/torch_aesthetic.h, done by the `mugv` binary when
// built with LibTorch). Without a registered loader, load_aesthetic_model refuses with a message saying so.
//
// Formats (see torch_aesthetic.h for the exact contracts):
//   *.pt, *.ts, *.torchscript   a whole TorchScript predictor: images [N, 3, S, S] in [0, 1] -> scores [N]
//   *.safetensors               a LAION-style MLP head (Linear layers, optional activations) on the
//   embeddings
//                               of a TorchScript feature extractor named in the file's metadata
// The preset key `aesthetic.model` (or `curate --set aesthetic.model=FILE`) selects a model; decisions then
// compare its score with aesthetic.min, and each clip records which scorer produced its number.
// An AestheticModel is used from one thread at a time.

#include "media/frame.h"

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

namespace mugv {

class AestheticModel {
 public:
  virtual ~AestheticModel() = default;
  // Score of one picture (any size), nominally 1..10. Throws Error(invalid_argument) when the model
  // produces no finite number for it.
  virtual double score(const RgbFrame& picture) = 0;
  // What produced the scores, recorded with every clip: "model:<file name>".
  virtual std::string source() const = 0;
};

// Returns a model for `file`, or nullptr when the loader does not handle its type.
using AestheticModelLoader =
    std::function<std::shared_ptr<AestheticModel>(const std::filesystem::path& file)>;

// Adds a loader (thread-safe; loaders are tried in the order they were registered).
void register_aesthetic_model_loader(AestheticModelLoader loader);

// Loads `file` with the first loader that takes it. Error(not_found) when the file does not exist;
// Error(unsupported) naming the file when no loader handles its type (with the types this build reads);
// a loader's own Error (format, invalid_argument) for a damaged or unsuitable model.
[[nodiscard]] std::shared_ptr<AestheticModel> load_aesthetic_model(const std::filesystem::path& file);

}  // namespace mugv
