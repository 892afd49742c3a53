#include "service/protocol.h"

#include "service/request_schema.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

namespace mugv::protocol {
namespace {

constexpr std::pair<MessageType, const char*> kTypeNames[] = {
    {MessageType::hello, "hello"},
    {MessageType::welcome, "welcome"},
    {MessageType::ok, "ok"},
    {MessageType::error, "error"},
    {MessageType::submit_job, "submit_job"},
    {MessageType::cancel_job, "cancel_job"},
    {MessageType::pause_job, "pause_job"},
    {MessageType::resume_job, "resume_job"},
    {MessageType::retry_job, "retry_job"},
    {MessageType::reorder_job, "reorder_job"},
    {MessageType::list_jobs, "list_jobs"},
    {MessageType::get_job, "get_job"},
    {MessageType::job_logs, "job_logs"},
    {MessageType::list_runs, "list_runs"},
    {MessageType::list_datasets, "list_datasets"},
    {MessageType::list_clips, "list_clips"},
    {MessageType::clip_frames, "clip_frames"},
    {MessageType::edit_caption, "edit_caption"},
    {MessageType::list_prompts, "list_prompts"},
    {MessageType::save_prompt, "save_prompt"},
    {MessageType::list_generations, "list_generations"},
    {MessageType::generation_frames, "generation_frames"},
    {MessageType::list_preferences, "list_preferences"},
    {MessageType::label_preference, "label_preference"},
    {MessageType::list_run_samples, "list_run_samples"},
    {MessageType::run_sample_frames, "run_sample_frames"},
    {MessageType::sample_now, "sample_now"},
    {MessageType::save_now, "save_now"},
    {MessageType::list_clusters, "list_clusters"},
    {MessageType::list_models, "list_models"},
    {MessageType::list_presets, "list_presets"},
    {MessageType::list_commands, "list_commands"},
    {MessageType::check_machine, "check_machine"},
    {MessageType::shutdown, "shutdown"},
    {MessageType::heartbeat, "heartbeat"},
    {MessageType::progress, "progress"},
    {MessageType::metrics, "metrics"},
    {MessageType::log_line, "log_line"},
    {MessageType::preview, "preview"},
    {MessageType::job_finished, "job_finished"},
    {MessageType::control, "control"},
    {MessageType::event, "event"},
};

ProtocolError fail(ProtocolErrorCode code, std::string message) {
  return {code, std::move(message)};
}

}  // namespace

const char* to_string(MessageType type) {
  for (const auto& [t, name] : kTypeNames)
    if (t == type) return name;
  return "unknown";
}

std::optional<MessageType> message_type_from_string(std::string_view name) {
  for (const auto& [t, n] : kTypeNames)
    if (t != MessageType::unknown && name == n) return t;
  return std::nullopt;
}

bool is_client_request(MessageType type) {
  return type >= MessageType::submit_job && type <= MessageType::shutdown;
}

const char* to_string(ProtocolErrorCode code) {
  switch (code) {
    case ProtocolErrorCode::bad_magic:
      return "bad_magic";
    case ProtocolErrorCode::version_mismatch:
      return "version_mismatch";
    case ProtocolErrorCode::unknown_type:
      return "unknown_type";
    case ProtocolErrorCode::malformed:
      return "malformed";
    case ProtocolErrorCode::too_large:
      return "too_large";
    case ProtocolErrorCode::invalid_request:
      return "invalid_request";
    default:
      return "unknown";
  }
}

std::optional<ProtocolErrorCode> protocol_error_code_from_string(std::string_view name) {
  for (auto c :
       {ProtocolErrorCode::bad_magic, ProtocolErrorCode::version_mismatch, ProtocolErrorCode::unknown_type,
        ProtocolErrorCode::malformed, ProtocolErrorCode::too_large, ProtocolErrorCode::invalid_request})
    if (name == to_string(c)) return c;
  return std::nullopt;
}

std::vector<std::string> encode(const Message& message) {
  std::vector<std::string> frames;
  frames.reserve(4 + message.blobs.size());
  frames.emplace_back(kMagic);
  frames.push_back(std::to_string(kVersion));
  frames.emplace_back(to_string(message.type));
  // Text from files (logs, file names) need not be UTF-8: invalid bytes become U+FFFD rather than failing
  // the whole message.
  frames.push_back(message.header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  for (const auto& b : message.blobs) frames.push_back(b);
  return frames;
}

namespace {

// The deepest nesting of arrays and objects in JSON text (brackets inside strings do not count).
size_t json_nesting_depth(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{')
      deepest = std::max(deepest, ++depth);
    else if ((c == ']' || c == '}') && depth > 0)
      --depth;
  }
  return deepest;
}

}  // namespace

std::variant<Message, ProtocolError> decode(const std::vector<std::string_view>& frames) {
  if (frames.empty() || frames[0] != kMagic)
    return fail(ProtocolErrorCode::bad_magic, "not a MUG-V protocol message (first frame is not \"MUGV\")");
  if (frames.size() < 4)
    return fail(ProtocolErrorCode::malformed, "a message needs magic, version, type and header frames; got " +
                                                  std::to_string(frames.size()));
  if (frames.size() - 4 > kMaxBlobs)
    return fail(ProtocolErrorCode::too_large, "too many binary frames: " + std::to_string(frames.size() - 4));
  size_t total = 0;
  for (const auto& f : frames) total += f.size();
  if (total > kMaxMessageBytes)
    return fail(ProtocolErrorCode::too_large, "message of " + std::to_string(total) + " bytes");

  int version = -1;
  auto [end, ec] = std::from_chars(frames[1].data(), frames[1].data() + frames[1].size(), version);
  if (ec != std::errc() || end != frames[1].data() + frames[1].size() || version < 0)
    return fail(ProtocolErrorCode::malformed, "version frame is not a number");
  if (version != kVersion)
    return fail(ProtocolErrorCode::version_mismatch, "peer speaks protocol version " +
                                                         std::to_string(version) + ", this build speaks " +
                                                         std::to_string(kVersion));
  auto type = message_type_from_string(frames[2]);
  if (!type) {
    std::string shown(frames[2].substr(0, 40));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) c = '?';
    return fail(ProtocolErrorCode::unknown_type, "unknown message type \"" + shown + "\"");
  }
  if (frames[3].size() > kMaxHeaderBytes)
    return fail(ProtocolErrorCode::too_large, "header of " + std::to_string(frames[3].size()) + " bytes");
  for (size_t i = 4; i < frames.size(); ++i)
    if (frames[i].size() > kMaxBlobBytes)
      return fail(ProtocolErrorCode::too_large,
                  "binary frame of " + std::to_string(frames[i].size()) + " bytes");

  if (const size_t depth = json_nesting_depth(frames[3]); depth > kMaxHeaderDepth)
    return fail(ProtocolErrorCode::too_large, "header nests arrays and objects " + std::to_string(depth) +
                                                  " deep; at most " + std::to_string(kMaxHeaderDepth));

  Message message;
  message.type = *type;
  message.header = nlohmann::json::parse(frames[3].begin(), frames[3].end(), nullptr, false);
  if (message.header.is_discarded()) return fail(ProtocolErrorCode::malformed, "header is not valid JSON");
  if (!message.header.is_object()) return fail(ProtocolErrorCode::malformed, "header is not a JSON object");
  if (auto problem = check(schema_for(*type), message.header, frames.size() - 4))
    return fail(ProtocolErrorCode::invalid_request, std::string(to_string(*type)) + ": " + *problem);
  for (size_t i = 4; i < frames.size(); ++i) message.blobs.emplace_back(frames[i]);
  return message;
}

Message make_ok(nlohmann::json payload) {
  Message m;
  m.type = MessageType::ok;
  m.header = payload.is_object() ? std::move(payload) : nlohmann::json{{"value", std::move(payload)}};
  return m;
}

Message make_error(std::string code, std::string message) {
  Message m;
  m.type = MessageType::error;
  m.header = {{"code", std::move(code)}, {"message", std::move(message)}};
  return m;
}

Message make_error(const ProtocolError& error) {
  return make_error(to_string(error.code), error.message);
}

}  // namespace mugv::protocol
