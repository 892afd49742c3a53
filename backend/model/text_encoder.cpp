#include "model/text_encoder.h"

#include "core/error.h"
#include "model/compute.h"

#include <cmath>
#include <string>

namespace mugv {

namespace F = torch::nn::functional;

namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  torch::nn::Linear layer(torch::nn::LinearOptions(in, out).bias(bias));
  torch::NoGradGuard no_grad;
  layer->weight.normal_(0.0, kInitStd);
  if (bias) layer->bias.zero_();
  return layer;
}

// A module holding named children only, so that parameter paths mirror Hugging Face's nesting.
class ContainerImpl : public torch::nn::Module {};
TORCH_MODULE(Container);

}  // namespace

void TextEncoderBase::check_ids(const torch::Tensor& ids, const torch::Tensor& mask) const {
  if (ids.dim() != 2 || ids.size(1) > config_.max_tokens || ids.size(1) < 1) {
    throw Error(ErrorCode::invalid_argument, "text ids",
                "expected [B, S] with 1 <= S <= " + std::to_string(config_.max_tokens));
  }
  if (mask.defined() && mask.sizes() != ids.sizes()) {
    throw Error(ErrorCode::invalid_argument, "text mask", "must have the shape of the ids");
  }
}

TextLayerImpl::TextLayerImpl(int64_t dim, int64_t heads, int64_t ff_dim) : heads_(heads) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  qkv = register_module("qkv", linear(dim, 3 * dim, true));
  out = register_module("out", linear(dim, dim, true));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc1 = register_module("fc1", linear(dim, ff_dim, true));
  fc2 = register_module("fc2", linear(ff_dim, dim, true));
}

torch::Tensor TextLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  auto heads = qkv(norm1(x)).view({batch, tokens, 3, heads_, dim / heads_}).permute({2, 0, 3, 1, 4});
  auto h = attention(heads[0], heads[1], heads[2], bias).transpose(1, 2).reshape({batch, tokens, dim});
  auto y = x + out(h);
  return y + fc2(gelu(fc1(norm2(y)), /*tanh_approximation=*/false));
}

SmallTextEncoderImpl::SmallTextEncoderImpl(const TextEncoderConfig& config) : TextEncoderBase(config) {
  validate(config, "text");
  token_embedding = register_module("token_embedding", torch::nn::Embedding(config.vocab_size, config.dim));
  position_embedding =
      register_parameter("position_embedding", torch::randn({config.max_tokens, config.dim}) * 0.01);
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < config.layers; ++i)
    layers->push_back(TextLayer(config.dim, config.heads, config.ff_dim));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.dim})));
  torch::NoGradGuard no_grad;
  token_embedding->weight.normal_(0.0, 0.02);
}

torch::Tensor SmallTextEncoderImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  check_ids(ids, mask);
  const int64_t tokens = ids.size(1);
  auto x = token_embedding(ids) + position_embedding.narrow(0, 0, tokens).unsqueeze(0);
  torch::Tensor bias;
  if (mask.defined()) bias = key_padding_bias(mask, x.scalar_type());
  for (auto& layer : *layers) x = layer->as<TextLayerImpl>()->forward(x, bias);
  return final_norm(x);
}

torch::Tensor t5_relative_position_bucket(const torch::Tensor& relative_position, int64_t buckets,
                                          int64_t max_distance) {
  const int64_t half = buckets / 2;
  auto result = (relative_position > 0).to(torch::kInt64) * half;
  auto n = relative_position.abs();
  const int64_t max_exact = half / 2;
  auto is_small = n < max_exact;
  // Beyond max_exact, buckets grow logarithmically up to max_distance (T5, Raffel et al. 2020).
  auto large = max_exact + (torch::log(n.to(torch::kFloat32) / max_exact) /
                            std::log(double(max_distance) / max_exact) * (half - max_exact))
                               .to(torch::kInt64);
  large = torch::clamp_max(large, half - 1);
  return result + torch::where(is_small, n, large);
}

T5AttentionImpl::T5AttentionImpl(const TextEncoderConfig& config, bool has_relative_bias) : config_(config) {
  const int64_t inner = int64_t(config.heads) * config.head_dim;
  q = register_module("q", linear(config.dim, inner, false));
  k = register_module("k", linear(config.dim, inner, false));
  v = register_module("v", linear(config.dim, inner, false));
  o = register_module("o", linear(inner, config.dim, false));
  if (has_relative_bias) {
    relative_attention_bias = register_module("relative_attention_bias",
                                              torch::nn::Embedding(config.relative_buckets, config.heads));
  }
}

torch::Tensor T5AttentionImpl::position_bias(int64_t tokens) {
  auto options = torch::TensorOptions().dtype(torch::kInt64).device(relative_attention_bias->weight.device());
  auto position = torch::arange(tokens, options);
  auto relative = position.view({1, -1}) - position.view({-1, 1});  // key - query
  auto buckets =
      t5_relative_position_bucket(relative, config_.relative_buckets, config_.relative_max_distance);
  return relative_attention_bias(buckets).permute({2, 0, 1}).unsqueeze(0);  // [1, H, S, S]
}

torch::Tensor T5AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const int64_t batch = x.size(0), tokens = x.size(1);
  auto split = [&](const torch::Tensor& t) {
    return t.view({batch, tokens, config_.heads, config_.head_dim}).transpose(1, 2);
  };
  // T5 folds the 1/sqrt(d) scale into its initialisation: scores are unscaled.
  auto scores = torch::matmul(split(q(x)), split(k(x)).transpose(-2, -1)) + bias;
  auto weights = torch::softmax(scores.to(torch::kFloat32), -1).to(x.dtype());
  auto h = torch::matmul(weights, split(v(x))).transpose(1, 2).reshape({batch, tokens, -1});
  return o(h);
}

T5EncoderImpl::T5EncoderImpl(const TextEncoderConfig& config) : TextEncoderBase(config) {
  validate(config, "text");
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(config.vocab_size, config.dim));
  block = register_module("block", torch::nn::ModuleList());
  for (int i = 0; i < config.layers; ++i) {
    Container b;
    auto layer = b->register_module("layer", torch::nn::ModuleList());
    Container attention_layer;
    attention_layer->register_module("SelfAttention", T5Attention(config, i == 0));
    attention_layer->register_module("layer_norm", RMSNorm(config.dim));
    Container ff_layer;
    Container dense;
    dense->register_module("wi_0", linear(config.dim, config.ff_dim, false));
    dense->register_module("wi_1", linear(config.dim, config.ff_dim, false));
    dense->register_module("wo", linear(config.ff_dim, config.dim, false));
    ff_layer->register_module("DenseReluDense", dense);
    ff_layer->register_module("layer_norm", RMSNorm(config.dim));
    layer->push_back(attention_layer);
    layer->push_back(ff_layer);
    block->push_back(b);
  }
  final_layer_norm = register_module("final_layer_norm", RMSNorm(config.dim));
}

torch::Tensor T5EncoderImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  check_ids(ids, mask);
  auto x = embed_tokens(ids);
  torch::Tensor bias;
  for (size_t i = 0; i < block->size(); ++i) {
    auto layers = block[i]->named_children()["layer"]->as<torch::nn::ModuleListImpl>();
    auto attention_layer = layers->ptr(0)->named_children();
    auto ff_layer = layers->ptr(1)->named_children();
    auto attn = std::dynamic_pointer_cast<T5AttentionImpl>(attention_layer["SelfAttention"]);
    if (i == 0) {
      bias = attn->position_bias(ids.size(1)).to(x.dtype());
      if (mask.defined()) bias = bias + key_padding_bias(mask, x.scalar_type());
    }
    auto norm1 = std::dynamic_pointer_cast<RMSNormImpl>(attention_layer["layer_norm"]);
    x = x + attn->forward(norm1->forward(x), bias);
    auto norm2 = std::dynamic_pointer_cast<RMSNormImpl>(ff_layer["layer_norm"]);
    auto dense = ff_layer["DenseReluDense"]->named_children();
    auto h = norm2->forward(x);
    auto wi_0 = dense["wi_0"]->as<torch::nn::LinearImpl>();
    auto wi_1 = dense["wi_1"]->as<torch::nn::LinearImpl>();
    auto wo = dense["wo"]->as<torch::nn::LinearImpl>();
    // Gated GELU with the tanh approximation ("gelu_new" in T5-v1.1).
    auto gated = gelu(wi_0->forward(h), /*tanh_approximation=*/true) * wi_1->forward(h);
    x = x + wo->forward(gated);
  }
  return final_layer_norm(x);
}

std::shared_ptr<TextEncoderBase> make_text_encoder(const TextEncoderConfig& config) {
  switch (config.kind) {
    case TextEncoderKind::small_transformer:
      return std::make_shared<SmallTextEncoderImpl>(config);
    case TextEncoderKind::t5:
      return std::make_shared<T5EncoderImpl>(config);
    case TextEncoderKind::unknown:
      break;
  }
  throw Error(ErrorCode::invalid_argument, "text", "text.kind must be small_transformer or t5");
}

LoadReport load_t5_encoder(T5EncoderImpl& encoder, const std::filesystem::path& path,
                           UnexpectedTensors unexpected) {
  const WeightFiles file = WeightFiles::open(path);
  auto names = [](const std::string& name) -> std::vector<std::string> {
    if (name == "embed_tokens.weight") return {"shared.weight", "encoder.embed_tokens.weight"};
    return {"encoder." + name};
  };
  return load_module(encoder, file, names, unexpected);
}

}  // namespace mugv
