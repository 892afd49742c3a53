#pragma once
// Captioners turn a clip into a dense caption (MUG-V §1: objects, appearance, motion, background).
// Pluggable: a template filled from metadata, an external command, or an OpenAI-compatible chat endpoint
// with image input (how local vision-language models are served: llama.cpp server, vLLM, Ollama).
//
// A captioner never throws for a clip it cannot caption: it returns a CaptionResult with `error` set
// ("timeout after 30000 ms", "reply has no choices[0].message.content"), so one bad clip or an unreachable
// server never stops a run. caption() may be called from several threads at once on one instance.

#include "media/frame.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

struct CaptionInput {
  int64_t clip_id = 0;
  std::filesystem::path source;  // the video file
  double start_s = 0, end_s = 0;
  std::vector<RgbFrame> keyframes;  // start, middle and end of the clip, longer side <= 512 px
  nlohmann::json metadata = nlohmann::json::object();  // scores, tags, source file name, current caption
};

struct CaptionResult {
  std::optional<std::string> text;  // set on success (non-empty, trimmed)
  std::string error;                // set on failure, in words
  bool retryable = false;           // a timeout or server error: worth another try
};

enum class CaptionerKind { unknown = 0, template_, command, openai };
const char* to_string(CaptionerKind kind);  // "template", "command", "openai"
std::optional<CaptionerKind> captioner_kind_from_string(const std::string& name);

class Captioner {
 public:
  virtual ~Captioner() = default;
  virtual CaptionResult caption(const CaptionInput& input) = 0;
  // Names the model/command in the catalog's caption history ("openai:qwen2-vl@http://127.0.0.1:8080").
  virtual std::string producer() const = 0;
  virtual CaptionerKind kind() const = 0;
};

}  // namespace mugv
