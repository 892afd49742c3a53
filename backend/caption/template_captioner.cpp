#include "caption/template_captioner.h"

#include "core/error.h"
#include "core/strings.h"

namespace mugv {
namespace {

const nlohmann::json* lookup(const nlohmann::json& root, const std::string& dotted) {
  const nlohmann::json* node = &root;
  for (const auto& part : split(dotted, '.')) {
    if (!node->is_object() || !node->contains(part)) return nullptr;
    node = &(*node)[part];
  }
  return node;
}

}  // namespace

TemplateCaptioner::TemplateCaptioner(std::string pattern) : pattern_(std::move(pattern)) {
  if (trim(pattern_).empty())
    throw Error(ErrorCode::invalid_argument, "--template", "the caption template is empty");
}

CaptionResult TemplateCaptioner::caption(const CaptionInput& input) {
  CaptionResult result;
  std::string out;
  for (size_t i = 0; i < pattern_.size(); ++i) {
    if (pattern_[i] != '{') {
      out += pattern_[i];
      continue;
    }
    size_t close = pattern_.find('}', i);
    if (close == std::string::npos) {
      result.error = "template has an unclosed '{'";
      return result;
    }
    std::string key = pattern_.substr(i + 1, close - i - 1);
    const nlohmann::json* value = lookup(input.metadata, key);
    if (!value || value->is_null()) {
      result.error = cat("template key {", key, "} is not in the clip's metadata");
      return result;
    }
    out += value->is_string() ? value->get<std::string>() : value->dump();
    i = close;
  }
  out = trim(out);
  if (out.empty())
    result.error = "template produced an empty caption";
  else
    result.text = out;
  return result;
}

}  // namespace mugv
