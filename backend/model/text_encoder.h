#pragma once
// Text encoders that turn token ids into the caption features the DiT cross-attends to.
//   SmallTextEncoder  token embedding + learned positions + pre-LN transformer layers (GELU),
//                     final LayerNorm; trained jointly with the DiT for the small presets.
//   T5Encoder         the T5-v1.1 encoder: RMS layer norms (T5LayerNorm), unscaled attention with
//                     bucketed relative position bias computed in the first block and shared by
//                     all, gated-GELU feed-forward, no biases. Parameter paths match Hugging Face's
//                     names without the "encoder." prefix, so load_t5_encoder reads HF safetensors.
// Both take ids [B, S] (int64, S <= max_tokens) and mask [B, S] (1 = token, 0 = padding; undefined =
// all tokens) and return [B, S, dim]; padded positions carry values that consumers must mask.
// Not thread-safe (torch modules).

#include "model/config.h"
#include "model/dit.h"
#include "model/weights.h"

#include <torch/torch.h>

#include <filesystem>
#include <memory>

namespace mugv {

class TextEncoderBase : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask) = 0;
  const TextEncoderConfig& config() const { return config_; }

 protected:
  explicit TextEncoderBase(const TextEncoderConfig& config) : config_(config) {}
  void check_ids(const torch::Tensor& ids, const torch::Tensor& mask) const;
  TextEncoderConfig config_;
};

class TextLayerImpl : public torch::nn::Module {
 public:
  TextLayerImpl(int64_t dim, int64_t heads, int64_t ff_dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, out{nullptr}, fc1{nullptr}, fc2{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(TextLayer);

class SmallTextEncoderImpl : public TextEncoderBase {
 public:
  explicit SmallTextEncoderImpl(const TextEncoderConfig& config);
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask) override;
  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor position_embedding;  // [max_tokens, dim]
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
};
TORCH_MODULE(SmallTextEncoder);

class T5AttentionImpl : public torch::nn::Module {
 public:
  T5AttentionImpl(const TextEncoderConfig& config, bool has_relative_bias);
  // bias [B or 1, H, S, S] (position bias + key padding).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);
  // Position bias [1, H, S, S] from relative_attention_bias (first block only).
  torch::Tensor position_bias(int64_t tokens);
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};

 private:
  TextEncoderConfig config_;
};
TORCH_MODULE(T5Attention);

class T5EncoderImpl : public TextEncoderBase {
 public:
  explicit T5EncoderImpl(const TextEncoderConfig& config);
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask) override;
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList block{
      nullptr};  // block.N.layer.0 = {SelfAttention, layer_norm}, layer.1 = {DenseReluDense, layer_norm}
  RMSNorm final_layer_norm{nullptr};
};
TORCH_MODULE(T5Encoder);

// T5's bidirectional relative position bucket of (key position - query position).
[[nodiscard]] torch::Tensor t5_relative_position_bucket(const torch::Tensor& relative_position,
                                                        int64_t buckets, int64_t max_distance);

// The encoder `config.kind` names. Throws Error(invalid_argument) for TextEncoderKind::unknown.
[[nodiscard]] std::shared_ptr<TextEncoderBase> make_text_encoder(const TextEncoderConfig& config);

// Loads Hugging Face T5 (v1.1) encoder weights from a file, an index or a model folder (model/weights.h):
// "encoder.block.N.layer.0.SelfAttention.q.weight", ..., the embedding from "shared.weight" or
// "encoder.embed_tokens.weight". Decoder tensors and other extras are ignored by default (and never read).
// Errors as load_module (model/weights.h).
LoadReport load_t5_encoder(T5EncoderImpl& encoder, const std::filesystem::path& path,
                           UnexpectedTensors unexpected = UnexpectedTensors::ignore);

}  // namespace mugv
