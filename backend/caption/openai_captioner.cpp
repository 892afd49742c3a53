#include "caption/openai_captioner.h"

#include "caption/http_client.h"
#include "core/base64.h"
#include "core/error.h"
#include "core/strings.h"
#include "media/image.h"

namespace mugv {

OpenAICaptioner::OpenAICaptioner(OpenAICaptionerOptions options) : options_(std::move(options)) {
  if (!starts_with(options_.endpoint, "http://") && !starts_with(options_.endpoint, "https://"))
    throw Error(ErrorCode::invalid_argument, "--endpoint",
                "expected an http:// or https:// URL ending in /v1, got '" + options_.endpoint + "'");
  if (options_.model.empty()) throw Error(ErrorCode::invalid_argument, "--model", "a model name is required");
  while (ends_with(options_.endpoint, "/")) options_.endpoint.pop_back();
}

std::string OpenAICaptioner::request_body(const CaptionInput& input) const {
  nlohmann::json content = nlohmann::json::array();
  content.push_back({{"type", "text"}, {"text", options_.instruction}});
  for (const auto& frame : input.keyframes)
    content.push_back(
        {{"type", "image_url"},
         {"image_url", {{"url", "data:image/png;base64," + base64_encode(encode_png(frame))}}}});
  nlohmann::json body = {{"model", options_.model},
                         {"messages", {{{"role", "user"}, {"content", content}}}},
                         {"max_tokens", options_.max_tokens},
                         {"temperature", 0.2}};
  return body.dump();
}

CaptionResult parse_chat_reply(const std::string& body) {
  CaptionResult result;
  nlohmann::json reply = nlohmann::json::parse(body, nullptr, false);
  if (reply.is_discarded()) {
    result.error = "malformed reply: not JSON";
    return result;
  }
  const nlohmann::json* content = nullptr;
  if (reply.contains("choices") && reply["choices"].is_array() && !reply["choices"].empty()) {
    const auto& choice = reply["choices"][0];
    if (choice.contains("message") && choice["message"].contains("content"))
      content = &choice["message"]["content"];
  }
  if (!content || !content->is_string()) {
    result.error = "malformed reply: no choices[0].message.content";
    return result;
  }
  std::string text = trim(content->get<std::string>());
  if (text.empty())
    result.error = "the model returned an empty caption";
  else
    result.text = text;
  return result;
}

CaptionResult OpenAICaptioner::caption(const CaptionInput& input) {
  CaptionResult result;
  std::vector<std::string> headers;
  if (!options_.api_key.empty()) headers.push_back("Authorization: Bearer " + options_.api_key);
  HttpResponse response;
  try {
    response = http_post_json(options_.endpoint + "/chat/completions", request_body(input), headers,
                              options_.timeout);
  } catch (const Error& e) {
    result.error = e.what();
    return result;
  }
  if (response.outcome != HttpOutcome::ok) {
    result.error = cat(to_string(response.outcome), ": ", response.error);
    result.retryable = true;
    return result;
  }
  if (response.status != 200) {
    result.error = cat("HTTP ", response.status, ": ", trim(response.body.substr(0, 200)));
    result.retryable = response.status == 429 || response.status >= 500;
    return result;
  }
  return parse_chat_reply(response.body);
}

}  // namespace mugv
