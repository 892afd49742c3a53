#include "model/lora_spec.h"

#include "core/error.h"
#include "core/strings.h"

#include <fnmatch.h>

#include <cmath>
#include <set>

namespace mugv {
namespace {

bool in_group(const std::string& group, const std::string& path) {
  auto block_local = [&](std::string_view prefix) {
    if (path.rfind("blocks.", 0) != 0) return false;
    const auto dot = path.find('.', 7);
    return dot != std::string::npos && std::string_view(path).substr(dot + 1).rfind(prefix, 0) == 0;
  };
  if (group == "all") return true;
  if (group == "attn") return block_local("attn.");
  if (group == "cross" || group == "cross_attn") return block_local("cross_attn.");
  if (group == "mlp") return block_local("mlp.");
  if (group == "adaln") return path == "t_block.1";
  if (group == "text") return path.rfind("y_embedder.", 0) == 0;
  if (group == "final") return path == "final_layer.linear";
  return false;
}

bool is_group(const std::string& name) {
  for (const char* g : {"all", "attn", "cross", "cross_attn", "mlp", "adaln", "text", "final"})
    if (name == g) return true;
  return false;
}

bool target_matches(const std::string& target, const std::string& path) {
  if (is_group(target)) return in_group(target, path);
  if (target.find('*') != std::string::npos) return fnmatch(target.c_str(), path.c_str(), 0) == 0;
  return path == target || (path.size() > target.size() &&
                            path.compare(path.size() - target.size(), target.size(), target) == 0 &&
                            path[path.size() - target.size() - 1] == '.');
}

double parse_number(const std::string& item, const std::string& value) {
  try {
    size_t used = 0;
    const double v = std::stod(value, &used);
    if (used == value.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw Error(ErrorCode::usage, "--lora", cat("'", item, "': '", value, "' is not a number"));
}

}  // namespace

LoraConfig parse_lora_config(std::string_view spec) {
  LoraConfig c;
  bool alpha_given = false, targets_given = false;
  std::string last_key;
  for (const auto& raw : split(std::string(spec), ',')) {
    const std::string item = trim(raw);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    std::string key, value;
    if (eq == std::string::npos) {
      if (last_key != "targets")
        throw Error(ErrorCode::usage, "--lora",
                    cat("'", item, "' is not key=value (keys: rank, alpha, dropout, targets)"));
      key = last_key;
      value = item;
    } else {
      key = trim(item.substr(0, eq));
      value = trim(item.substr(eq + 1));
    }
    if (key == "rank" || key == "r") {
      const double r = parse_number(item, value);
      if (r < 1 || r > 65536 || r != std::floor(r))
        throw Error(ErrorCode::usage, "--lora", cat("'", item, "': the rank is a whole number from 1"));
      c.rank = int64_t(r);
    } else if (key == "alpha" || key == "lora_alpha") {
      c.alpha = parse_number(item, value);
      if (!(c.alpha > 0))
        throw Error(ErrorCode::usage, "--lora", cat("'", item, "': alpha must be positive"));
      alpha_given = true;
    } else if (key == "dropout" || key == "lora_dropout") {
      c.dropout = parse_number(item, value);
      if (c.dropout < 0 || c.dropout >= 1)
        throw Error(ErrorCode::usage, "--lora", cat("'", item, "': dropout is in [0, 1)"));
    } else if (key == "targets" || key == "target_modules") {
      if (!targets_given) c.targets.clear();
      targets_given = true;
      for (const auto& t : split(value, '+'))
        if (auto name = trim(t); !name.empty()) c.targets.push_back(name);
      key = "targets";
    } else {
      throw Error(ErrorCode::usage, "--lora",
                  cat("'", key, "' is not a LoRA setting (rank, alpha, dropout, targets)"));
    }
    last_key = key;
  }
  if (c.targets.empty()) throw Error(ErrorCode::usage, "--lora", "targets name no module");
  if (!alpha_given) c.alpha = double(c.rank);
  return c;
}

std::string to_string(const LoraConfig& c) {
  std::string targets;
  for (const auto& t : c.targets) targets += (targets.empty() ? "" : "+") + t;
  return cat("rank=", c.rank, ",alpha=", c.alpha, ",dropout=", c.dropout, ",targets=", targets);
}

std::vector<AdaptableLinear> adaptable_linear_shapes(const DiTConfig& c) {
  const int64_t d = c.hidden, mlp = int64_t(c.hidden) * c.mlp_ratio;
  std::vector<AdaptableLinear> out{
      {"t_block.1", d, 6 * d}, {"y_embedder.y_proj.fc1", c.text_dim, d}, {"y_embedder.y_proj.fc2", d, d}};
  const std::pair<const char*, std::pair<int64_t, int64_t>> block[] = {{"attn.qkv", {d, 3 * d}},
                                                                       {"attn.proj", {d, d}},
                                                                       {"cross_attn.q_linear", {d, d}},
                                                                       {"cross_attn.kv_linear", {d, 2 * d}},
                                                                       {"cross_attn.proj", {d, d}},
                                                                       {"mlp.fc1", {d, mlp}},
                                                                       {"mlp.fc2", {mlp, d}}};
  for (int i = 0; i < c.depth; ++i)
    for (const auto& [local, shape] : block)
      out.push_back({cat("blocks.", i, ".", local), shape.first, shape.second});
  out.push_back({"final_layer.linear", d, int64_t(c.patch_t) * c.patch_h * c.patch_w * dit_out_channels(c)});
  return out;
}

std::vector<std::string> resolve_lora_target_paths(const std::vector<std::string>& paths,
                                                   const std::vector<std::string>& targets) {
  std::set<std::string> chosen;
  for (const auto& target : targets) {
    bool any = false;
    for (const auto& path : paths)
      if (target_matches(target, path)) {
        chosen.insert(path);
        any = true;
      }
    if (!any)
      throw Error(
          ErrorCode::invalid_argument, target,
          cat("names no linear LoRA can adapt; use a group (attn, cross, mlp, adaln, text, final, all), "
              "a pattern such as blocks.*.attn.qkv, or a path suffix such as mlp.fc1"));
  }
  std::vector<std::string> out;
  for (const auto& path : paths)
    if (chosen.count(path)) out.push_back(path);
  return out;
}

int64_t lora_parameter_count(const DiTConfig& config, const LoraConfig& lora) {
  const auto linears = adaptable_linear_shapes(config);
  std::vector<std::string> paths;
  for (const auto& l : linears) paths.push_back(l.path);
  const auto chosen = resolve_lora_target_paths(paths, lora.targets);
  const std::set<std::string> wanted(chosen.begin(), chosen.end());
  int64_t n = 0;
  for (const auto& l : linears)
    if (wanted.count(l.path)) n += lora.rank * (l.in + l.out);
  return n;
}

}  // namespace mugv
