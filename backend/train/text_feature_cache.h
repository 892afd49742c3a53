#pragma once
// Text features of a frozen text encoder (a released model's T5, or the base a LoRA run keeps frozen),
// computed once per tokenised caption and kept on disk, so the encoder runs once per caption instead of once
// per step, and later runs on the same encoder reuse the features:
//   $MUGV_HOME/cache/text/<encoder id>/<sha256 of the token ids and mask>.safetensors   {"features": [S,
//   dim]}
// The encoder id names the weights, the token length and the precision the features were computed in (the
// caller derives it from the base's identity), so features of another encoder are never mixed in. A file that
// cannot be read is recomputed and rewritten (atomically). Each row is computed alone, so a feature does not
// depend on the batch it first appeared in: runs and resumes read the same values.
// Not thread-safe (the encoder is a torch module).

#include "model/text_encoder.h"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace mugv {

class TextFeatureCache {
 public:
  // `encoder` must stay alive and frozen while the cache is used.
  TextFeatureCache(const std::string& encoder_id, TextEncoderBase& encoder);

  // Features [B, S, dim] of ids [B, S] (int64) with mask [B, S] (1 = token), on the encoder's device, in the
  // dtype the encoder gives under the caller's autocast. No gradient flows into the encoder.
  [[nodiscard]] torch::Tensor features(const torch::Tensor& ids, const torch::Tensor& mask);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  TextEncoderBase& encoder_;
};

}  // namespace mugv
