#pragma once
// Captions from an OpenAI-compatible chat-completions endpoint with image input: POST {endpoint}/chat/
// completions (endpoint e.g. "http://127.0.0.1:8080/v1") with the keyframes as base64 PNG data URLs and an
// instruction asking for a dense caption. Works with llama.cpp server, vLLM and Ollama's OpenAI API.
// A timeout, an unreachable server or a 5xx/429 reply is retryable; a malformed reply is not.

#include "caption/captioner.h"

#include <chrono>

namespace mugv {

struct OpenAICaptionerOptions {
  std::string endpoint;  // base URL ending in /v1
  std::string model;     // model name the server expects
  std::string api_key;   // optional; sent as "Authorization: Bearer ..."
  std::string instruction =
      "Describe this video clip in one dense paragraph for training a video generator: the main subjects and "
      "their appearance, what moves and how, the camera motion, and the background. Answer with the caption "
      "only.";
  std::chrono::milliseconds timeout{60000};
  int max_tokens = 300;
};

class OpenAICaptioner final : public Captioner {
 public:
  explicit OpenAICaptioner(OpenAICaptionerOptions options);
  CaptionResult caption(const CaptionInput& input) override;
  std::string producer() const override { return "openai:" + options_.model + "@" + options_.endpoint; }
  CaptionerKind kind() const override { return CaptionerKind::openai; }

  // The request body for `input` (exposed for tests).
  std::string request_body(const CaptionInput& input) const;

 private:
  OpenAICaptionerOptions options_;
};

// Extracts choices[0].message.content from a chat-completions reply; the problem in words otherwise.
CaptionResult parse_chat_reply(const std::string& body);

}  // namespace mugv
