#include "service/job_json.h"

namespace mugv {
namespace {

template <typename T>
nlohmann::json optional_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json to_json(const Job& job) {
  return {
      {"id", job.id},
      {"kind", to_string(job.kind)},
      {"state", to_string(job.state)},
      {"priority", job.priority},
      {"position", job.queue_position},
      {"params", job.params},
      {"created_at_ms", job.created_at_ms},
      {"started_at_ms", optional_json(job.started_at_ms)},
      {"finished_at_ms", optional_json(job.finished_at_ms)},
      {"exit_code", optional_json(job.exit_code)},
      {"error_code", job.error_code ? nlohmann::json(to_string(*job.error_code)) : nlohmann::json(nullptr)},
      {"error_message", job.error_message},
      {"worker_pid", optional_json(job.worker_pid)},
      {"host", job.host},
      {"attempts", job.attempts},
      {"depends_on", job.depends_on},
      {"waiting_on", job.waiting_on},
      {"blocked_by", job.blocked_by}};
}

nlohmann::json to_json(const JobEvent& e) {
  return {{"id", e.id}, {"job", e.job_id}, {"time_ms", e.time_ms}, {"type", e.type}, {"payload", e.payload}};
}

nlohmann::json to_json(const Clip& c, const std::optional<Caption>& caption) {
  nlohmann::json scores = {{"sharpness", optional_json(c.scores.sharpness)},
                           {"motion", optional_json(c.scores.motion)},
                           {"aesthetic", optional_json(c.scores.aesthetic)},
                           {"artifact_score", optional_json(c.scores.artifact_score)},
                           {"artifact_flags", c.scores.artifact_flags},
                           {"extra", c.scores.extra}};
  return {{"id", c.id},
          {"dataset", c.dataset_id},
          {"source", c.source_id},
          {"start_s", c.start_s},
          {"end_s", c.end_s},
          {"start_frame", c.start_frame},
          {"end_frame", c.end_frame},
          {"fps", c.fps},
          {"width", c.width},
          {"height", c.height},
          {"scores", scores},
          {"decision", to_string(c.decision)},
          {"reason", c.reason},
          {"tags", c.tags},
          {"caption", caption ? caption->text : ""},
          {"caption_origin", caption ? to_string(caption->origin) : ""}};
}

std::string training_run(const nlohmann::json& job) {
  if (!job.is_object() || job.value("kind", "") != "train") return {};
  const auto params = job.value("params", nlohmann::json::object());
  if (!params.is_object() || !params.contains("values") || !params["values"].is_object()) return {};
  const auto& values = params["values"];
  for (auto it = values.begin(); it != values.end(); ++it) {
    const std::string& key = it.key();
    if (key.substr(key.rfind('.') + 1) == "run" && it->is_string()) return it->get<std::string>();
  }
  return {};
}

}  // namespace mugv
