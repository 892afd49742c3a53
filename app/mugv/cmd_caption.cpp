// mugv caption --dataset NAME --captioner template|command|openai ...: caption a dataset's clips.
#include "command.h"

#include "caption/caption_runner.h"
#include "caption/command_captioner.h"
#include "caption/openai_captioner.h"
#include "caption/template_captioner.h"
#include "core/error.h"
#include "core/paths.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>

namespace mugv::cli {
namespace {

// Splits a command line into arguments: whitespace separates, single or double quotes group.
std::vector<std::string> split_command(const std::string& text) {
  std::vector<std::string> args;
  std::string current;
  bool in_arg = false;
  char quote = 0;
  for (char c : text) {
    if (quote) {
      if (c == quote)
        quote = 0;
      else
        current += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_arg = true;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_arg) args.push_back(current);
      current.clear();
      in_arg = false;
    } else {
      current += c;
      in_arg = true;
    }
  }
  if (quote) throw Error(ErrorCode::usage, "--command", "unterminated quote");
  if (in_arg) args.push_back(current);
  return args;
}

void define(ParamRegistry& r) {
  r.add(param("caption.dataset", "--dataset", ParamType::text, nullptr, "dataset whose clips to caption",
              "caption"));
  auto kind =
      param("caption.captioner", "--captioner", ParamType::choice, "openai", "which captioner", "caption");
  kind.choices = {"template", "command", "openai"};
  r.add(kind);
  auto scope = param("caption.scope", "--scope", ParamType::choice, "missing",
                     "clips to caption: missing (none yet or failed before), not_human, all", "caption");
  scope.choices = {"missing", "not_human", "all"};
  r.add(scope);
  r.add(param("caption.kept_only", "--kept-only", ParamType::boolean, false, "only clips that curation kept",
              "caption"));
  r.add(param("caption.template", "--template", ParamType::text, nullptr,
              "template captioner: text with {metadata} placeholders, e.g. \"a clip from {source_name}\"",
              "template"));
  r.add(param("caption.command", "--command", ParamType::text, nullptr,
              "command captioner: program and arguments; {video} {start} {end} {clip} {frames} are replaced",
              "command"));
  auto endpoint = param("caption.endpoint", "--endpoint", ParamType::text, "http://127.0.0.1:8080/v1",
                        "OpenAI-compatible server base URL (llama.cpp server, vLLM, Ollama)", "openai");
  endpoint.env = "MUGV_CAPTION_ENDPOINT";
  r.add(endpoint);
  auto model = param("caption.model", "--model", ParamType::text, "default", "model name the server expects",
                     "openai");
  model.env = "MUGV_CAPTION_MODEL";
  r.add(model);
  auto key = param("caption.api_key", "--api-key", ParamType::text, nullptr,
                   "bearer token, if the server wants one", "openai");
  key.env = "MUGV_CAPTION_API_KEY";
  r.add(key);
  auto timeout =
      param("caption.timeout_ms", "--timeout-ms", ParamType::integer, 60000, "per-request timeout", "limits");
  timeout.min_value = 100;
  r.add(timeout);
  auto concurrency =
      param("caption.concurrency", "--concurrency", ParamType::integer, 4, "requests in flight", "limits");
  concurrency.min_value = 1;
  concurrency.max_value = 64;
  r.add(concurrency);
  auto retries = param("caption.retries", "--retries", ParamType::integer, 2,
                       "extra tries after a timeout or server error", "limits");
  retries.min_value = 0;
  retries.max_value = 10;
  r.add(retries);
}

std::unique_ptr<Captioner> make_captioner(const ParamValues& v) {
  std::string kind = v.get_text("caption.captioner");
  auto timeout = std::chrono::milliseconds(v.get_int("caption.timeout_ms"));
  if (kind == "template") {
    if (!v.has("caption.template"))
      throw Error(ErrorCode::usage, "--template", "the template captioner needs --template");
    return std::make_unique<TemplateCaptioner>(v.get_text("caption.template"));
  }
  if (kind == "command") {
    if (!v.has("caption.command"))
      throw Error(ErrorCode::usage, "--command", "the command captioner needs --command");
    return std::make_unique<CommandCaptioner>(split_command(v.get_text("caption.command")), timeout);
  }
  OpenAICaptionerOptions o;
  o.endpoint = v.get_text("caption.endpoint");
  o.model = v.get_text("caption.model");
  if (v.has("caption.api_key")) o.api_key = v.get_text("caption.api_key");
  o.timeout = timeout;
  return std::make_unique<OpenAICaptioner>(o);
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  if (!v.has("caption.dataset")) throw Error(ErrorCode::usage, "--dataset", "a dataset is required");
  auto captioner = make_captioner(v);
  CaptionRunOptions o;
  o.dataset = v.get_text("caption.dataset");
  o.scope = *caption_scope_from_string(v.get_text("caption.scope"));
  o.kept_only = v.get_bool("caption.kept_only");
  o.concurrency = static_cast<int>(v.get_int("caption.concurrency"));
  o.retries = static_cast<int>(v.get_int("caption.retries"));
  Catalog catalog = Catalog::open(catalog_path());
  CaptionRunReport r = caption_dataset(catalog, *captioner, o, inv.cancel, inv.progress);
  finish_progress_line();
  if (inv.json) {
    nlohmann::json failures = nlohmann::json::array();
    for (const auto& f : r.failures) failures.push_back({{"clip", f.clip_id}, {"error", f.error}});
    std::cout << nlohmann::json{{"clips", r.clips},           {"captioned", r.captioned},
                                {"kept_human", r.kept_human}, {"uncaptioned", r.failures.size()},
                                {"failures", failures},       {"producer", captioner->producer()}}
                     .dump(2)
              << "\n";
  } else {
    std::printf(
        "%d clip(s): %d captioned, %d human caption(s) kept, %zu uncaptioned (retry with --scope missing)\n",
        r.clips, r.captioned, r.kept_human, r.failures.size());
    for (const auto& f : r.failures)
      std::printf("  clip %lld: %s\n", static_cast<long long>(f.clip_id), f.error.c_str());
  }
  return 0;
}

}  // namespace

Command caption_command() {
  Command c;
  c.words = {"caption"};
  c.summary = "caption a dataset's clips with a template, an external command or a vision-language server";
  c.usage = "--dataset NAME --captioner template|command|openai [options]";
  c.define = define;
  c.run = run;
  c.job_kind = "caption";
  return c;
}

}  // namespace mugv::cli
