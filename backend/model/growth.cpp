#include "model/growth.h"

#include "core/error.h"
#include "core/strings.h"

#include <optional>
#include <regex>

namespace mugv {
namespace {

// How one tensor carries the hidden size: along which dimension its outputs are hidden-sized (in how many
// fused parts), and whether its dimension 1 is a hidden-sized input.
// Sizes are multiples of the hidden size: the MLP's inner width is mlp_ratio × hidden and grows with it.
struct HiddenRole {
  int out_dim = -1;    // -1: no hidden-sized output
  int out_parts = 1;   // fused parts along out_dim (each repeated on its own)
  int out_width = 1;   // out_dim's size in hidden sizes
  bool input = false;  // dimension 1 is a hidden-sized input (split k ways)
  int in_width = 1;    // its size in hidden sizes
};

std::optional<HiddenRole> hidden_role(const std::string& name, int mlp_ratio) {
  static const std::regex block(R"(blocks\.\d+\.(.+))");
  std::smatch m;
  const auto out = [](int parts = 1, bool input = false) { return HiddenRole{0, parts, parts, input, 1}; };
  if (std::regex_match(name, m, block)) {
    const std::string local = m[1];
    if (local == "scale_shift_table") return HiddenRole{1, 1, 1, false, 1};
    if (local == "attn.qkv.weight") return out(3, true);
    if (local == "attn.qkv.bias") return out(3);
    if (local == "cross_attn.kv_linear.weight") return out(2, true);
    if (local == "cross_attn.kv_linear.bias") return out(2);
    if (local == "mlp.fc1.weight") return HiddenRole{0, 1, mlp_ratio, true, 1};
    if (local == "mlp.fc1.bias") return HiddenRole{0, 1, mlp_ratio, false, 1};
    if (local == "mlp.fc2.weight") return HiddenRole{0, 1, 1, true, mlp_ratio};
    for (const char* linear : {"attn.proj", "cross_attn.q_linear", "cross_attn.proj", "mlp.fc2"}) {
      if (local == cat(linear, ".weight")) return out(1, true);
      if (local == cat(linear, ".bias")) return out(1);
    }
    if (local == "cross_attn_norm.weight" || local == "cross_attn_norm.bias") return out();
    for (const char* norm :
         {"attn.q_norm.weight", "attn.k_norm.weight", "cross_attn.q_norm.weight", "cross_attn.k_norm.weight"})
      if (local == norm) return HiddenRole{};  // per head: the head width does not change
    return std::nullopt;
  }
  for (const char* embedder : {"t_embedder", "fps_embedder"}) {
    if (name == cat(embedder, ".mlp.0.weight") || name == cat(embedder, ".mlp.0.bias") ||
        name == cat(embedder, ".mlp.2.bias"))
      return out();
    if (name == cat(embedder, ".mlp.2.weight")) return out(1, true);
  }
  if (name == "x_embedder.proj.weight" || name == "x_embedder.proj.bias") return out();
  if (name == "t_block.1.weight") return out(6, true);
  if (name == "t_block.1.bias") return out(6);
  if (name == "y_embedder.y_proj.fc1.weight" || name == "y_embedder.y_proj.fc1.bias" ||
      name == "y_embedder.y_proj.fc2.bias")
    return out();
  if (name == "y_embedder.y_proj.fc2.weight") return out(1, true);
  if (name == "start_token" || name == "end_token") return out();
  if (name == "null_caption") return HiddenRole{};  // text space
  if (name == "final_layer.scale_shift_table") return HiddenRole{1, 1, 1, false, 1};
  if (name == "final_layer.linear.weight") return HiddenRole{-1, 1, 1, true, 1};
  if (name == "final_layer.linear.bias") return HiddenRole{};
  return std::nullopt;
}

// Each of `parts` chunks along `dim` repeated `factor` times in place: [a, b] -> [a, a, b, b] for factor 2.
torch::Tensor repeat_parts(const torch::Tensor& t, int64_t dim, int parts, int factor) {
  std::vector<torch::Tensor> pieces;
  for (const auto& part : t.chunk(parts, dim))
    for (int k = 0; k < factor; ++k) pieces.push_back(part);
  return torch::cat(pieces, dim);
}

// Dimension 1 split `factor` ways: [W/k + N_1, ..., W/k + N_k] with the N_j summing to zero.
torch::Tensor split_input(const torch::Tensor& w, int factor, double noise, torch::Generator& generator) {
  const torch::Tensor share = w / factor;
  std::vector<torch::Tensor> copies;
  if (noise > 0 && w.numel() > 1) {
    const double scale = noise * w.std().item<double>();
    std::vector<torch::Tensor> n;
    for (int k = 0; k < factor; ++k) n.push_back(torch::randn(w.sizes(), generator, w.options()) * scale);
    torch::Tensor mean = torch::stack(n).mean(0);
    for (int k = 0; k < factor; ++k) copies.push_back(share + (n[static_cast<size_t>(k)] - mean));
  } else {
    for (int k = 0; k < factor; ++k) copies.push_back(share);
  }
  return torch::cat(copies, 1);
}

}  // namespace

DiTConfig grown_dit_config(const DiTConfig& config, int factor) {
  if (factor < 2)
    throw Error(ErrorCode::invalid_argument, "--width", cat(factor, " does not grow the model"));
  DiTConfig wide = config;
  wide.hidden = config.hidden * factor;
  wide.heads = config.heads * factor;
  return wide;
}

std::vector<std::pair<std::string, torch::Tensor>> grow_dit_tensors(
    const std::vector<std::pair<std::string, torch::Tensor>>& narrow, const DiTConfig& config,
    const GrowthOptions& options) {
  (void)grown_dit_config(config, options.factor);  // checks the factor
  auto generator = torch::make_generator<torch::CPUGeneratorImpl>(options.seed);
  std::vector<std::pair<std::string, torch::Tensor>> grown;
  for (const auto& [name, tensor] : narrow) {
    const auto role = hidden_role(name, config.mlp_ratio);
    if (!role)
      throw Error(ErrorCode::invalid_argument, name, "has no known place in the hidden size; cannot grow it");
    torch::Tensor t = tensor.detach().to(torch::kCPU);
    if (role->out_dim >= 0) {
      const int64_t want = int64_t(config.hidden) * role->out_width;
      if (t.dim() <= role->out_dim || t.size(role->out_dim) != want)
        throw Error(ErrorCode::invalid_argument, name,
                    cat("is ", t.sizes(), "; expected ", want, " along dimension ", role->out_dim));
      t = repeat_parts(t, role->out_dim, role->out_parts, options.factor);
    }
    if (role->input) {
      const int64_t want = int64_t(config.hidden) * role->in_width;
      if (t.dim() != 2 || t.size(1) != want)
        throw Error(ErrorCode::invalid_argument, name, cat("is ", t.sizes(), "; expected ", want, " inputs"));
      t = split_input(t, options.factor, options.noise, generator);
    }
    grown.emplace_back(name, t.contiguous());
  }
  return grown;
}

}  // namespace mugv
