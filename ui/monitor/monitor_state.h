#pragma once
// What the monitor knows about one server, folded from replies and events. No GL, no sockets: the
// network thread feeds it, the render thread draws a copy of it, and the unit tests drive it with real
// protocol messages.
//
// Inputs, all in the shapes the server sends (backend/service/server.cpp, job_json.cpp):
// - apply_job_list: the `jobs` array of a list_jobs reply, the table's rows (jobs that vanished are
//   dropped);
// - apply_job_detail: a get_job reply, the job plus its stored events (progress, metrics) for backfill;
// - apply_logs: the `text` of a job_logs reply, the job's last lines;
// - apply_event: one `event` message from the PUB socket (state, progress, metrics, log or preview);
// - apply_stored_sample: a run_sample_frames reply, the newest sample the job's run rendered, shown as its
//   preview until a live one comes (a finished training job still shows what it rendered).
// - apply_machine_check: a check_machine reply, `mugv doctor`'s findings on the server's machine (or why
//   the check could not be made).
// Metric series only grow with the step (a metric already seen for step N is not added again), so a
// backfill that overlaps live events does not plot a point twice. Logs and series are capped.
//
// Not thread-safe; the network thread guards its instance with a mutex and hands out copies (snapshot).
// Copies are cheap enough for ~20 per second: preview frames are shared, not copied.

#include "service/protocol.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv::monitor {

enum class Connection { connecting, connected, lost };
const char* to_string(Connection c);

struct JobRow {
  int64_t id = 0;
  std::string kind;
  std::string state;
  std::string error;  // error_message of a failed job
  std::string stage;  // from the last progress event
  std::string unit;
  int64_t done = 0;
  int64_t total = 0;
  double rate = 0;    // units per second
  double eta_s = -1;  // < 0: unknown
  int64_t created_at_ms = 0;

  // 0..1, or nullopt when nothing says how far the job is (a queued job, a job without progress yet).
  std::optional<double> fraction() const;
  bool terminal() const;
};

struct MetricSeries {
  std::vector<float> steps;
  std::vector<float> values;
};

// The frames of the latest preview event of a job (RGB24, width x height each), or of the newest sample its
// run rendered before (then `run` names the run).
struct PreviewFrames {
  std::string run;  // empty: a live preview event
  int64_t step = 0;
  int width = 0;
  int height = 0;
  std::vector<std::string> frames;
  uint64_t serial = 0;  // changes with every new preview, so a renderer knows when to upload again
};

struct JobDetail {
  std::map<std::string, MetricSeries> metrics;  // by metric name ("loss", "lr", "tokens_per_s", "mfu", ...)
  std::deque<std::string> logs;                 // "[level] text", oldest first
  std::shared_ptr<const PreviewFrames> preview;
  int64_t preview_events = 0;
};

// One finding of the server's machine check (protocol check_machine).
struct MachineFinding {
  std::string check;
  std::string status;  // ok | note | warn | fail
  std::string detail;
  std::string fix;
};

struct Limits {
  size_t max_points = 4000;  // per metric series; the oldest points are dropped
  size_t max_log_lines = 300;
};

class MonitorState {
 public:
  explicit MonitorState(Limits limits = {}) : limits_(limits) {}

  void set_endpoint(std::string endpoint) { endpoint_ = std::move(endpoint); }
  void set_connected(std::string server_version);
  void set_lost(std::string message);

  void apply_job_list(const nlohmann::json& jobs);
  void apply_job_detail(const nlohmann::json& get_job_reply);
  void apply_logs(int64_t job, const std::string& text);
  // False when the message is not an event this state understands (other types are ignored).
  bool apply_event(const protocol::Message& event);
  // False when the reply holds no RGB24 frames, or the job already has a live preview (which is newer).
  bool apply_stored_sample(int64_t job, const protocol::Message& run_sample_frames_reply);
  void apply_machine_check(const nlohmann::json& check_machine_reply);
  void set_machine_check_error(std::string message);

  const std::string& endpoint() const { return endpoint_; }
  Connection connection() const { return connection_; }
  const std::string& server_version() const { return server_version_; }
  const std::string& connection_message() const { return connection_message_; }
  // Rows, newest job first.
  std::vector<JobRow> jobs() const;
  const JobRow* job(int64_t id) const;
  const JobDetail* detail(int64_t id) const;
  uint64_t events_seen() const { return events_seen_; }
  // The server's machine: false until a check came back (or failed: machine_check_error says why).
  bool machine_checked() const { return machine_checked_; }
  const std::vector<MachineFinding>& machine_findings() const { return machine_findings_; }
  int machine_count(const std::string& status) const;  // findings with that status
  const std::string& machine_check_error() const { return machine_check_error_; }

  // A copy holding every row but only the detail of `selected` (what one frame draws).
  MonitorState snapshot(int64_t selected) const;
  // For --dump-state and the tests: connection, jobs, and per job the metric names / counts.
  nlohmann::json to_json() const;

 private:
  JobRow& row(int64_t id);
  JobDetail& detail_of(int64_t id);
  void add_metrics(int64_t job, int64_t step, const nlohmann::json& values);
  void add_log(int64_t job, const std::string& level, const std::string& text);
  void apply_progress(int64_t job, const nlohmann::json& p);
  // The RGB24 frames of a preview event or a frames reply (width, height, step in its header); null when it
  // holds none.
  std::shared_ptr<PreviewFrames> preview_frames(const protocol::Message& m);
  nlohmann::json machine_json() const;

  Limits limits_;
  std::string endpoint_;
  Connection connection_ = Connection::connecting;
  std::string server_version_;
  std::string connection_message_;
  std::map<int64_t, JobRow> jobs_;
  std::map<int64_t, JobDetail> details_;
  uint64_t events_seen_ = 0;
  uint64_t preview_serial_ = 0;
  bool machine_checked_ = false;
  std::vector<MachineFinding> machine_findings_;
  std::string machine_check_error_;
};

}  // namespace mugv::monitor
