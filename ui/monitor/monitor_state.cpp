#include "monitor_state.h"

#include <algorithm>
#include <sstream>

namespace mugv::monitor {

const char* to_string(Connection c) {
  switch (c) {
    case Connection::connecting:
      return "connecting";
    case Connection::connected:
      return "connected";
    case Connection::lost:
      return "lost";
  }
  return "unknown";
}

std::optional<double> JobRow::fraction() const {
  if (state == "succeeded") return 1.0;
  if (total > 0) return std::clamp(double(done) / double(total), 0.0, 1.0);
  return std::nullopt;
}

bool JobRow::terminal() const {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

namespace {

// Fields of a job object (job_json.cpp) that the table shows; progress fields are left alone because a
// job object carries none.
// Stored progress is sampled (about one event a second), so a finished job's last one may stop short.
void settle(JobRow& r) {
  if (r.state == "succeeded") r.done = r.total;
}

void merge_job(JobRow& r, const nlohmann::json& j) {
  r.id = j.value("id", r.id);
  r.kind = j.value("kind", r.kind);
  r.state = j.value("state", r.state);
  r.created_at_ms = j.value("created_at_ms", r.created_at_ms);
  if (j.contains("error_message") && j["error_message"].is_string())
    r.error = j["error_message"].get<std::string>();
  settle(r);
}

template <typename T>
T number_or(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<T>() : fallback;
}

}  // namespace

void MonitorState::set_connected(std::string server_version) {
  connection_ = Connection::connected;
  server_version_ = std::move(server_version);
  connection_message_.clear();
}

void MonitorState::set_lost(std::string message) {
  connection_ = Connection::lost;
  connection_message_ = std::move(message);
}

JobRow& MonitorState::row(int64_t id) {
  JobRow& r = jobs_[id];
  r.id = id;
  return r;
}

JobDetail& MonitorState::detail_of(int64_t id) {
  return details_[id];
}

void MonitorState::apply_job_list(const nlohmann::json& jobs) {
  if (!jobs.is_array()) return;
  std::map<int64_t, JobRow> next;
  for (const auto& j : jobs) {
    if (!j.is_object() || !j.contains("id") || !j["id"].is_number_integer()) continue;
    int64_t id = j["id"].get<int64_t>();
    auto it = jobs_.find(id);
    JobRow r = it != jobs_.end() ? it->second : JobRow{};
    merge_job(r, j);
    next[id] = r;
  }
  jobs_ = std::move(next);
  for (auto it = details_.begin(); it != details_.end();)
    it = jobs_.count(it->first) ? std::next(it) : details_.erase(it);
}

void MonitorState::apply_progress(int64_t job, const nlohmann::json& p) {
  JobRow& r = row(job);
  r.stage = p.value("stage", r.stage);
  r.unit = p.value("unit", r.unit);
  r.done = number_or<int64_t>(p, "done", r.done);
  r.total = number_or<int64_t>(p, "total", r.total);
  r.rate = number_or<double>(p, "rate", 0.0);
  r.eta_s = number_or<double>(p, "eta_s", -1.0);
  settle(r);
}

void MonitorState::add_metrics(int64_t job, int64_t step, const nlohmann::json& values) {
  if (!values.is_object()) return;
  JobDetail& d = detail_of(job);
  for (auto it = values.begin(); it != values.end(); ++it) {
    if (!it.value().is_number() || it.key() == "step") continue;
    MetricSeries& s = d.metrics[it.key()];
    if (!s.steps.empty() && float(step) <= s.steps.back()) continue;  // already plotted (backfill overlap)
    s.steps.push_back(float(step));
    s.values.push_back(it.value().get<float>());
    if (s.values.size() > limits_.max_points) {
      size_t drop = s.values.size() - limits_.max_points;
      s.steps.erase(s.steps.begin(), s.steps.begin() + static_cast<long>(drop));
      s.values.erase(s.values.begin(), s.values.begin() + static_cast<long>(drop));
    }
  }
}

void MonitorState::add_log(int64_t job, const std::string& level, const std::string& text) {
  JobDetail& d = detail_of(job);
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) d.logs.push_back(level.empty() ? line : "[" + level + "] " + line);
  while (d.logs.size() > limits_.max_log_lines) d.logs.pop_front();
}

void MonitorState::apply_job_detail(const nlohmann::json& reply) {
  if (!reply.is_object() || !reply.contains("job") || !reply["job"].is_object()) return;
  const auto& j = reply["job"];
  if (!j.contains("id") || !j["id"].is_number_integer()) return;
  int64_t id = j["id"].get<int64_t>();
  merge_job(row(id), j);
  (void)detail_of(id);
  for (const auto& e : reply.value("events", nlohmann::json::array())) {
    if (!e.is_object() || !e.contains("payload") || !e["payload"].is_object()) continue;
    std::string type = e.value("type", "");
    const auto& p = e["payload"];
    if (type == "progress")
      apply_progress(id, p);
    else if (type == "metrics")
      add_metrics(id, number_or<int64_t>(p, "step", 0), p.value("values", nlohmann::json::object()));
  }
}

void MonitorState::apply_logs(int64_t job, const std::string& text) {
  // The server's log is the whole history: it replaces what live events collected so far.
  detail_of(job).logs.clear();
  add_log(job, "", text);
}

bool MonitorState::apply_event(const protocol::Message& m) {
  if (m.type != protocol::MessageType::event) return false;
  const auto& h = m.header;
  if (!h.contains("job") || !h["job"].is_number_integer()) return false;
  const int64_t job = h["job"].get<int64_t>();
  const std::string type = h.value("type", "");
  if (type == "state") {
    JobRow& r = row(job);
    if (h.contains("job_info") && h["job_info"].is_object()) merge_job(r, h["job_info"]);
    r.state = h.value("state", r.state);
    settle(r);
  } else if (type == "progress") {
    apply_progress(job, h);
  } else if (type == "metrics") {
    (void)row(job);
    add_metrics(job, number_or<int64_t>(h, "step", 0), h.value("values", nlohmann::json::object()));
  } else if (type == "log") {
    (void)row(job);
    add_log(job, h.value("level", ""), h.value("text", ""));
  } else if (type == "preview") {
    (void)row(job);
    auto p = preview_frames(m);
    if (!p) return false;
    JobDetail& d = detail_of(job);
    d.preview = std::move(p);
    ++d.preview_events;
  } else {
    return false;
  }
  ++events_seen_;
  return true;
}

bool MonitorState::apply_stored_sample(int64_t job, const protocol::Message& reply) {
  JobDetail& d = detail_of(job);
  if (d.preview_events > 0) return false;
  auto p = preview_frames(reply);
  if (!p) return false;
  p->run = reply.header.value("run", "");
  d.preview = std::move(p);
  return true;
}

std::shared_ptr<PreviewFrames> MonitorState::preview_frames(const protocol::Message& m) {
  const auto& h = m.header;
  auto p = std::make_shared<PreviewFrames>();
  p->step = number_or<int64_t>(h, "step", 0);
  p->width = number_or<int>(h, "width", 0);
  p->height = number_or<int>(h, "height", 0);
  if (p->width <= 0 || p->height <= 0 || h.value("format", "rgb24") != "rgb24") return nullptr;
  const size_t bytes = size_t(p->width) * size_t(p->height) * 3;
  for (const auto& b : m.blobs)
    if (b.size() == bytes)
      p->frames.push_back(b);  // a frame of another size is not an RGB24 frame of this one
  if (p->frames.empty()) return nullptr;
  p->serial = ++preview_serial_;
  return p;
}

std::vector<JobRow> MonitorState::jobs() const {
  std::vector<JobRow> out;
  out.reserve(jobs_.size());
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) out.push_back(it->second);
  return out;
}

const JobRow* MonitorState::job(int64_t id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const JobDetail* MonitorState::detail(int64_t id) const {
  auto it = details_.find(id);
  return it == details_.end() ? nullptr : &it->second;
}

MonitorState MonitorState::snapshot(int64_t selected) const {
  MonitorState s(limits_);
  s.endpoint_ = endpoint_;
  s.connection_ = connection_;
  s.server_version_ = server_version_;
  s.connection_message_ = connection_message_;
  s.jobs_ = jobs_;
  if (auto it = details_.find(selected); it != details_.end()) s.details_.insert(*it);
  s.events_seen_ = events_seen_;
  s.preview_serial_ = preview_serial_;
  s.machine_checked_ = machine_checked_;
  s.machine_findings_ = machine_findings_;
  s.machine_check_error_ = machine_check_error_;
  return s;
}

void MonitorState::apply_machine_check(const nlohmann::json& reply) {
  machine_findings_.clear();
  for (const auto& c : reply.value("checks", nlohmann::json::array()))
    machine_findings_.push_back(
        {c.value("check", ""), c.value("status", ""), c.value("detail", ""), c.value("fix", "")});
  machine_checked_ = true;
  machine_check_error_.clear();
}

void MonitorState::set_machine_check_error(std::string message) {
  machine_findings_.clear();
  machine_checked_ = true;
  machine_check_error_ = std::move(message);
}

int MonitorState::machine_count(const std::string& status) const {
  return static_cast<int>(std::count_if(machine_findings_.begin(), machine_findings_.end(),
                                        [&](const MachineFinding& f) { return f.status == status; }));
}

nlohmann::json MonitorState::machine_json() const {
  nlohmann::json checks = nlohmann::json::object();
  for (const MachineFinding& f : machine_findings_) checks[f.check] = f.status;
  return {{"checked", machine_checked_},
          {"warnings", machine_count("warn")},
          {"failures", machine_count("fail")},
          {"error", machine_check_error_},
          {"checks", checks}};
}

nlohmann::json MonitorState::to_json() const {
  nlohmann::json jobs = nlohmann::json::array();
  for (const JobRow& r : this->jobs()) {
    auto f = r.fraction();
    nlohmann::json j = {{"id", r.id},       {"kind", r.kind},
                        {"state", r.state}, {"stage", r.stage},
                        {"done", r.done},   {"total", r.total},
                        {"eta_s", r.eta_s}, {"progress", f ? nlohmann::json(*f) : nlohmann::json(nullptr)}};
    if (const JobDetail* d = detail(r.id)) {
      nlohmann::json metrics = nlohmann::json::object();
      for (const auto& [name, s] : d->metrics) metrics[name] = s.values.size();
      j["metrics"] = metrics;
      j["log_lines"] = d->logs.size();
      j["preview_events"] = d->preview_events;
      j["preview_frames"] = d->preview ? d->preview->frames.size() : 0;
    }
    jobs.push_back(std::move(j));
  }
  return {{"endpoint", endpoint_},
          {"connection", to_string(connection_)},
          {"server_version", server_version_},
          {"message", connection_message_},
          {"events_seen", events_seen_},
          {"machine", machine_json()},
          {"jobs", jobs}};
}

}  // namespace mugv::monitor
