#include "model/lora_file.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/strings.h"
#include "core/weight_files.h"
#include "model/weights.h"

#include <cmath>
#include <cstring>
#include <regex>

namespace mugv {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPrefixes[] = {"base_model.model.",      "pipe.dit.",        "pipe.", "transformer.",
                                     "model.diffusion_model.", "diffusion_model.", "dit.",  "model."};
constexpr const char* kWritePrefix = "base_model.model.";

struct ParsedKey {
  std::string module;  // with its prefix
  enum Part { down, up, alpha } part = down;
  std::string layout, adapter;
};

std::optional<ParsedKey> parse_key(const std::string& name) {
  static const std::regex peft(R"(^(.+)\.lora_(A|B)(?:\.([A-Za-z0-9_\-]+))?\.weight$)");
  static const std::regex kohya(R"(^(.+)\.lora_(down|up)\.weight$)");
  static const std::regex alpha(R"(^(.+)\.alpha$)");
  std::smatch m;
  if (std::regex_match(name, m, peft))
    return ParsedKey{m[1], m[2] == "A" ? ParsedKey::down : ParsedKey::up,
                     m[3].matched ? "peft-in-model" : "peft",
                     m[3].matched ? std::string(m[3]) : std::string()};
  if (std::regex_match(name, m, kohya))
    return ParsedKey{m[1], m[2] == "down" ? ParsedKey::down : ParsedKey::up, "kohya", ""};
  if (std::regex_match(name, m, alpha)) return ParsedKey{m[1], ParsedKey::alpha, "kohya", ""};
  return std::nullopt;
}

std::pair<std::string, std::string> strip_prefix(const std::string& module) {
  for (const char* prefix : kPrefixes)
    if (module.rfind(prefix, 0) == 0 && module.size() > std::strlen(prefix))
      return {prefix, module.substr(std::strlen(prefix))};
  return {"", module};
}

std::optional<double> metadata_number(const std::map<std::string, std::string>& metadata, const char* key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::nullopt;
  try {
    size_t used = 0;
    const double v = std::stod(it->second, &used);
    if (used > 0 && std::isfinite(v) && v > 0) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::string list_some(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 8) out += cat(" and ", names.size() - 8, " more");
  return out;
}

}  // namespace

LoraFile read_lora_file(const fs::path& path) {
  const WeightFiles files = WeightFiles::open(path);
  LoraFile out;
  out.info.metadata = files.metadata();
  std::vector<std::string> foreign;
  std::map<std::string, torch::Tensor> alphas;
  std::set<std::string> layouts;
  for (const auto& name : files.names()) {
    auto key = parse_key(name);
    if (!key) {
      foreign.push_back(name);
      continue;
    }
    auto [prefix, module] = strip_prefix(key->module);
    if (out.info.prefix.empty()) out.info.prefix = prefix;
    if (key->part != ParsedKey::alpha) layouts.insert(key->layout);
    if (!key->adapter.empty()) out.info.adapter = key->adapter;
    const auto& view = files.at(name);
    auto tensor = tensor_from_view(view, cat(path.string(), ": ", name));
    if (out.info.dtype.empty()) out.info.dtype = to_string(view.dtype);
    if (key->part == ParsedKey::alpha) {
      alphas[module] = tensor;
      continue;
    }
    auto& m = out.weights.modules[module];
    (key->part == ParsedKey::down ? m.down : m.up) = tensor;
    out.info.parameters += tensor.numel();
    files.release(name);
  }
  if (!foreign.empty())
    throw Error(
        ErrorCode::format, path.string(),
        cat(foreign.size(), " tensor(s) are not LoRA tensors (lora_A/lora_B, lora_down/lora_up, alpha): ",
            list_some(foreign), "; is this a whole model rather than an adapter?"));
  if (out.weights.modules.empty()) throw Error(ErrorCode::format, path.string(), "holds no LoRA tensors");
  if (layouts.size() > 1)
    throw Error(ErrorCode::format, path.string(), "mixes the lora_A/lora_B and lora_down/lora_up layouts");
  out.info.layout = *layouts.begin();
  std::vector<std::string> incomplete;
  for (const auto& [module, m] : out.weights.modules) {
    if (!m.down.defined() || !m.up.defined() || m.down.dim() != 2 || m.up.dim() != 2 ||
        m.up.size(1) != m.down.size(0)) {
      incomplete.push_back(module);
      continue;
    }
    out.info.ranks.insert(m.down.size(0));
  }
  if (!incomplete.empty())
    throw Error(ErrorCode::format, path.string(),
                cat("module(s) without a matching 2-D lora_A [rank, in] and lora_B [out, rank]: ",
                    list_some(incomplete)));
  for (const auto& [module, a] : alphas) {
    auto it = out.weights.modules.find(module);
    if (it == out.weights.modules.end())
      throw Error(ErrorCode::format, path.string(), cat(module, ".alpha belongs to no adapted module"));
    it->second.alpha = a.to(torch::kFloat64).reshape({-1})[0].item<double>();
  }
  if (!alphas.empty()) {
    out.info.alpha_source = "per-module alpha tensors";
  } else if (auto a = metadata_number(out.info.metadata, "lora_alpha")) {
    out.weights.alpha = a;
    out.info.alpha_source = "metadata lora_alpha";
  } else if (auto k = metadata_number(out.info.metadata, "ss_network_alpha")) {
    out.weights.alpha = k;
    out.info.alpha_source = "metadata ss_network_alpha";
  } else if (const fs::path config = path.parent_path() / "adapter_config.json";
             fs::is_regular_file(config)) {
    const auto j = read_json_file(config);
    if (auto a = j.find("lora_alpha"); a != j.end() && a->is_number() && a->get<double>() > 0) {
      out.weights.alpha = a->get<double>();
      out.info.alpha_source = "adapter_config.json";
    }
  }
  if (out.info.alpha_source.empty()) out.info.alpha_source = "none in the file: alpha = rank (scale 1)";
  return out;
}

void write_lora_file(const fs::path& path, const LoraWeights& weights,
                     const std::map<std::string, std::string>& given) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::set<int64_t> ranks;
  for (const auto& [module, m] : weights.modules) {
    tensors.emplace_back(cat(kWritePrefix, module, ".lora_A.weight"), m.down);
    tensors.emplace_back(cat(kWritePrefix, module, ".lora_B.weight"), m.up);
    if (m.alpha) tensors.emplace_back(cat(kWritePrefix, module, ".alpha"), torch::tensor(float(*m.alpha)));
    ranks.insert(m.rank());
  }
  std::map<std::string, std::string> metadata = given;
  metadata["format"] = "pt";
  if (!ranks.empty()) metadata["lora_rank"] = std::to_string(*ranks.rbegin());
  metadata["lora_alpha"] = cat(weights.alpha ? *weights.alpha : double(ranks.empty() ? 1 : *ranks.rbegin()));
  save_named_tensors(tensors, path, metadata);
}

void write_peft_adapter_config(const fs::path& dir, const LoraWeights& weights, double dropout) {
  int64_t rank = 0;
  auto targets = nlohmann::json::array();
  for (const auto& [module, m] : weights.modules) {
    rank = std::max(rank, m.rank());
    targets.push_back(module);
  }
  write_json_atomic(dir / "adapter_config.json",
                    {{"peft_type", "LORA"},
                     {"r", rank},
                     {"lora_alpha", weights.alpha ? *weights.alpha : double(rank)},
                     {"lora_dropout", dropout},
                     {"target_modules", targets},
                     {"bias", "none"},
                     {"inference_mode", true}});
}

LoraArgument parse_lora_argument(const std::string& text) {
  LoraArgument a;
  a.file = text;
  if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    const std::string tail = text.substr(colon + 1);
    try {
      size_t used = 0;
      const double scale = std::stod(tail, &used);
      if (used == tail.size() && std::isfinite(scale)) {
        a.file = text.substr(0, colon);
        a.scale = scale;
      }
    } catch (const std::exception&) {
    }
  }
  if (a.file.empty())
    throw Error(ErrorCode::usage, "--lora", cat("'", text, "' names no file (FILE[:SCALE])"));
  return a;
}

nlohmann::json to_json(const LoraFile& file) {
  auto modules = nlohmann::json::array();
  for (const auto& [module, m] : file.weights.modules)
    modules.push_back({{"module", module},
                       {"rank", m.rank()},
                       {"in", m.down.size(1)},
                       {"out", m.up.size(0)},
                       {"scale", file.weights.scale_of(module)}});
  nlohmann::json j = {{"layout", file.info.layout},         {"prefix", file.info.prefix},
                      {"ranks", file.info.ranks},           {"alpha_source", file.info.alpha_source},
                      {"parameters", file.info.parameters}, {"dtype", file.info.dtype},
                      {"metadata", file.info.metadata},     {"modules", modules}};
  if (!file.info.adapter.empty()) j["adapter"] = file.info.adapter;
  if (file.weights.alpha) j["alpha"] = *file.weights.alpha;
  return j;
}

}  // namespace mugv
