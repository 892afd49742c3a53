#include "service/request_schema.h"

#include <algorithm>
#include <map>
#include <sstream>

namespace mugv::protocol {
namespace {

FieldRule req(std::string name, FieldType type) {
  return {std::move(name), type, true, {}, {}, {}};
}
FieldRule opt(std::string name, FieldType type) {
  return {std::move(name), type, false, {}, {}, {}};
}
FieldRule ranged(FieldRule rule, std::optional<double> min, std::optional<double> max) {
  rule.min = min;
  rule.max = max;
  return rule;
}
FieldRule one_of(FieldRule rule, std::vector<std::string> choices) {
  rule.choices = std::move(choices);
  return rule;
}

FieldRule job_id() {
  return ranged(req("job", FieldType::integer), 1, {});
}
FieldRule limit() {
  return ranged(opt("limit", FieldType::integer), 1, 10000);
}
FieldRule offset() {
  return ranged(opt("offset", FieldType::integer), 0, {});
}
FieldRule text(std::string name, bool required, double max_len) {
  return ranged(required ? req(std::move(name), FieldType::string) : opt(std::move(name), FieldType::string),
                {}, max_len);
}

std::map<MessageType, MessageSchema> build() {
  using T = MessageType;
  using F = FieldType;
  std::vector<MessageSchema> list = {
      {T::hello,
       {one_of(req("role", F::string), {"client", "worker", "monitor"}),
        ranged(req("version", F::integer), 0, {}), opt("capabilities", F::string_array),
        ranged(opt("job", F::integer), 1, {}), text("name", false, 200), text("token", false, 128)}},
      {T::welcome, {}, true},
      {T::ok, {}, true, 0, kMaxBlobs},
      {T::error, {text("code", true, 100), text("message", true, 10000)}, true},
      {T::submit_job,
       {one_of(req("kind", F::string), job_kinds()), req("params", F::object),
        ranged(opt("priority", F::integer), -100, 100),
        one_of(opt("executor", F::string), {"local", "slurm"}), text("profile", false, 200),
        text("run", false, 200), ranged(opt("depends_on", F::integer_array), 1, double(kMaxDependencies))}},
      {T::cancel_job, {job_id(), opt("force", F::boolean)}},
      {T::pause_job, {job_id()}},
      {T::resume_job, {job_id()}},
      {T::retry_job, {job_id()}},
      {T::reorder_job,
       {job_id(), ranged(opt("position", F::integer), 0, {}),
        ranged(opt("priority", F::integer), -100, 100)}},
      {T::list_jobs, {one_of(opt("state", F::string), job_state_names()), limit(), offset()}},
      {T::get_job,
       {job_id(), ranged(opt("after_event", F::integer), 0, {}), ranged(opt("limit", F::integer), 1, 10000),
        opt("types", F::string_array)}},
      {T::job_logs, {job_id(), ranged(opt("tail_lines", F::integer), 1, 100000)}},
      {T::list_runs, {limit(), offset()}},
      {T::list_datasets, {}},
      {T::list_clips,
       {text("dataset", true, 200), one_of(opt("decision", F::string), {"unknown", "keep", "reject"}),
        text("reason", false, 200), text("tag", false, 200), limit(), offset()}},
      {T::clip_frames,
       {ranged(req("clip", F::integer), 1, {}), ranged(opt("count", F::integer), 1, double(kMaxBlobs)),
        ranged(opt("max_side", F::integer), 16, 1024)}},
      {T::edit_caption, {ranged(req("clip", F::integer), 1, {}), text("text", true, 10000)}},
      {T::list_prompts, {text("query", false, 1000), text("tag", false, 200), limit(), offset()}},
      {T::save_prompt,
       {ranged(opt("id", F::integer), 1, {}), text("text", true, 10000), text("negative", false, 10000),
        opt("tags", F::string_array)}},
      {T::list_generations, {ranged(opt("prompt", F::integer), 1, {}), limit(), offset()}},
      {T::generation_frames,
       {ranged(req("generation", F::integer), 1, {}), ranged(opt("count", F::integer), 1, double(kMaxBlobs)),
        ranged(opt("max_side", F::integer), 16, 1024)}},
      {T::list_preferences, {limit()}},
      {T::label_preference,
       {ranged(opt("id", F::integer), 1, {}), one_of(opt("choice", F::string), {"a", "b", "skip"}),
        opt("undo", F::boolean)}},
      {T::list_run_samples, {text("run", true, 200), limit()}},
      {T::run_sample_frames,
       {text("run", true, 200), ranged(req("step", F::integer), 0, {}), text("file", true, 200),
        ranged(opt("count", F::integer), 1, double(kMaxBlobs)),
        ranged(opt("max_side", F::integer), 16, 1024)}},
      {T::sample_now, {job_id()}},
      {T::save_now, {job_id()}},
      {T::list_clusters, {}},
      {T::list_models, {}},
      {T::list_presets, {text("kind", false, 128)}},
      {T::list_commands, {}},
      {T::check_machine, {opt("quick", F::boolean)}},
      {T::shutdown, {}},
      {T::heartbeat, {job_id(), ranged(opt("pid", F::integer), 1, {}), text("token", false, 128)}},
      {T::progress,
       {job_id(), text("stage", true, 100), ranged(req("done", F::integer), 0, {}),
        ranged(req("total", F::integer), 0, {}), opt("rate", F::number), opt("eta_s", F::number),
        text("unit", false, 50), text("detail", false, 2000)}},
      {T::metrics, {job_id(), ranged(req("step", F::integer), 0, {}), req("values", F::object)}},
      {T::log_line,
       {job_id(), one_of(req("level", F::string), {"debug", "info", "warning", "error"}),
        text("text", true, 65536)}},
      {T::preview,
       {job_id(), ranged(req("step", F::integer), 0, {}), ranged(req("width", F::integer), 1, 16384),
        ranged(req("height", F::integer), 1, 16384), one_of(req("format", F::string), {"rgb24", "png"})},
       false,
       1,
       kMaxBlobs},
      {T::job_finished,
       {job_id(), one_of(req("state", F::string), {"succeeded", "failed", "cancelled"}),
        opt("exit_code", F::integer), text("error_code", false, 100), text("message", false, 10000),
        opt("result", F::object)}},
      {T::control,
       {job_id(), one_of(req("action", F::string), {"cancel", "pause", "resume", "sample_now", "save_now"})}},
      {T::event, {text("topic", true, 200)}, true, 0, kMaxBlobs},
  };
  std::map<MessageType, MessageSchema> by_type;
  for (auto& s : list) by_type[s.type] = std::move(s);
  return by_type;
}

bool has_type(const nlohmann::json& v, FieldType type) {
  switch (type) {
    case FieldType::integer:
      return v.is_number_integer();
    case FieldType::number:
      return v.is_number();
    case FieldType::boolean:
      return v.is_boolean();
    case FieldType::string:
      return v.is_string();
    case FieldType::object:
      return v.is_object();
    case FieldType::string_array:
      if (!v.is_array()) return false;
      for (const auto& item : v)
        if (!item.is_string()) return false;
      return true;
    case FieldType::integer_array:
      if (!v.is_array()) return false;
      for (const auto& item : v)
        if (!item.is_number_integer()) return false;
      return true;
    default:
      return false;
  }
}

std::string describe(const FieldRule& rule) {
  std::ostringstream out;
  if (rule.type == FieldType::integer_array) {
    out << "expected a list of";
    if (rule.max) out << " at most " << *rule.max;
    out << " integers";
    if (rule.min) out << " >= " << *rule.min;
    return out.str();
  }
  out << "expected "
      << (rule.type == FieldType::integer   ? "an integer"
          : rule.type == FieldType::number  ? "a number"
          : rule.type == FieldType::boolean ? "true or false"
          : rule.type == FieldType::string  ? "a string"
          : rule.type == FieldType::object  ? "an object"
                                            : "a list of strings");
  if (rule.type != FieldType::string && (rule.min || rule.max)) {
    if (rule.min) out << " >= " << *rule.min;
    if (rule.min && rule.max) out << " and";
    if (rule.max) out << " <= " << *rule.max;
  }
  return out.str();
}

}  // namespace

const char* to_string(FieldType type) {
  switch (type) {
    case FieldType::integer:
      return "integer";
    case FieldType::number:
      return "number";
    case FieldType::boolean:
      return "boolean";
    case FieldType::string:
      return "string";
    case FieldType::object:
      return "object";
    case FieldType::string_array:
      return "string_array";
    case FieldType::integer_array:
      return "integer_array";
    default:
      return "unknown";
  }
}

const std::vector<std::string>& job_kinds() {
  static const std::vector<std::string> kinds = {"make_dataset", "import",    "curate", "caption",
                                                 "encode",       "train_vae", "train",  "generate",
                                                 "export",       "eval",      "model"};
  return kinds;
}

const std::vector<std::string>& job_state_names() {
  static const std::vector<std::string> states = {"queued",    "starting", "running",   "paused",
                                                  "succeeded", "failed",   "cancelled", "interrupted"};
  return states;
}

const MessageSchema& schema_for(MessageType type) {
  static const std::map<MessageType, MessageSchema> schemas = build();
  static const MessageSchema none{};
  auto it = schemas.find(type);
  return it == schemas.end() ? none : it->second;
}

std::optional<std::string> check(const MessageSchema& schema, const nlohmann::json& header,
                                 size_t blob_count) {
  if (!header.is_object()) return std::string("header is not a JSON object");
  if (blob_count < schema.min_blobs || blob_count > schema.max_blobs) {
    std::ostringstream out;
    out << to_string(schema.type) << " carries " << blob_count << " binary frame(s); allowed "
        << schema.min_blobs << ".." << schema.max_blobs;
    return out.str();
  }
  for (const auto& rule : schema.fields) {
    auto it = header.find(rule.name);
    if (it == header.end() || it->is_null()) {
      if (rule.required) return "header field \"" + rule.name + "\" is required";
      continue;
    }
    const auto& v = *it;
    if (!has_type(v, rule.type)) return "header field \"" + rule.name + "\": " + describe(rule);
    if (rule.type == FieldType::integer || rule.type == FieldType::number) {
      double x = v.get<double>();
      if ((rule.min && x < *rule.min) || (rule.max && x > *rule.max))
        return "header field \"" + rule.name + "\": " + describe(rule);
    }
    if (rule.type == FieldType::integer_array) {
      if (rule.max && v.size() > *rule.max) return "header field \"" + rule.name + "\": " + describe(rule);
      for (const auto& item : v)
        if (rule.min && item.get<double>() < *rule.min)
          return "header field \"" + rule.name + "\": " + item.dump() +
                 " is not >= " + std::to_string(static_cast<long long>(*rule.min));
    }
    if (rule.type == FieldType::string) {
      const auto& s = v.get_ref<const std::string&>();
      if (rule.max && s.size() > *rule.max)
        return "header field \"" + rule.name + "\": longer than " +
               std::to_string(static_cast<long long>(*rule.max)) + " bytes";
      if (!rule.choices.empty() &&
          std::find(rule.choices.begin(), rule.choices.end(), s) == rule.choices.end()) {
        std::string allowed;
        for (const auto& c : rule.choices) allowed += (allowed.empty() ? "" : ", ") + c;
        return "header field \"" + rule.name + "\": '" + s + "' is not one of " + allowed;
      }
    }
  }
  if (!schema.allow_extra_fields) {
    for (auto it = header.begin(); it != header.end(); ++it) {
      bool known = false;
      for (const auto& rule : schema.fields) known = known || rule.name == it.key();
      if (!known) return "header field \"" + it.key() + "\" is not part of " + to_string(schema.type);
    }
  }
  return std::nullopt;
}

}  // namespace mugv::protocol
