#include "network.h"

#include "core/error.h"
#include "service/client.h"
#include "service/job_json.h"

namespace mugv::monitor {

using protocol::MessageType;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Frames of a stored sample shown side by side in the preview strip, as a live preview's are.
constexpr int kStoredSampleFrames = 8;

Network::Network(std::string endpoint, std::chrono::milliseconds timeout,
                 std::optional<CurveClientKeys> curve)
    : endpoint_(std::move(endpoint)), timeout_(timeout), curve_(std::move(curve)) {
  state_.set_endpoint(endpoint_);
}

Network::~Network() {
  stop();
}

void Network::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  // After the network thread: it is the one that starts machine checks.
  if (machine_thread_.joinable()) machine_thread_.join();
}

void Network::connect(std::function<void()> wake) {
  wake_ = std::move(wake);
  (void)open_connection_or_throw();
  thread_ = std::thread([this] { run(); });
}

void Network::select(int64_t job) {
  selected_ = job;
}

MonitorState Network::snapshot(int64_t selected) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_.snapshot(selected);
}

nlohmann::json Network::state_json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_.to_json();
}

bool Network::open_connection_or_throw() {
  auto client = std::make_unique<Client>(endpoint_, timeout_, curve_);
  std::unique_ptr<EventSubscriber> subscriber;
  // Without an events endpoint the table still updates from the job list; plots and logs stay empty.
  if (!client->events_endpoints().empty())
    subscriber = std::make_unique<EventSubscriber>(client->events_endpoints().front(),
                                                   std::vector<std::string>{"job/"}, curve_);
  std::string version = client->server_info().value("server", "");
  client_ = std::move(client);
  subscriber_ = std::move(subscriber);
  progress_fetched_.clear();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.set_connected(version);
  }
  check_machine();
  return true;
}

void Network::check_machine() {
  if (machine_check_running_.exchange(true)) return;
  if (machine_thread_.joinable()) machine_thread_.join();  // the previous check, already finished
  machine_thread_ = std::thread([this] {
    try {
      Client client(endpoint_, std::chrono::seconds(20), curve_);  // a quick check takes 1-3 s
      const auto reply = client.request(MessageType::check_machine, {{"quick", true}});
      std::lock_guard<std::mutex> lock(mutex_);
      state_.apply_machine_check(reply);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      state_.set_machine_check_error(e.what());
    }
    machine_check_running_ = false;
    if (wake_) wake_();
  });
}

void Network::drop_connection(const std::string& message) {
  client_.reset();
  subscriber_.reset();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.set_lost(message);
  }
  if (wake_) wake_();
}

void Network::poll_jobs() {
  auto reply = client_->request(MessageType::list_jobs, {{"limit", 500}});
  std::vector<int64_t> unknown_progress;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.apply_job_list(reply.value("jobs", nlohmann::json::array()));
    for (const JobRow& r : state_.jobs())
      if ((r.state == "running" || r.state == "paused") && r.total == 0 && !progress_fetched_.count(r.id))
        unknown_progress.push_back(r.id);
  }
  // A job that was running before the monitor attached: its stored events say how far it is.
  for (int64_t id : unknown_progress) {
    progress_fetched_.insert(id);
    auto detail = get_job_with_events(*client_, id, {"progress"});
    std::lock_guard<std::mutex> lock(mutex_);
    state_.apply_job_detail(detail);
  }
}

std::string Network::state_of(int64_t job) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const JobRow* r = state_.job(job);
  return r ? r->state : "";
}

void Network::backfill(int64_t job) {
  auto detail = get_job_with_events(*client_, job);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.apply_job_detail(detail);
  }
  try {
    auto logs = client_->request(MessageType::job_logs, {{"job", job}, {"tail_lines", 300}});
    std::lock_guard<std::mutex> lock(mutex_);
    state_.apply_logs(job, logs.value("text", ""));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::timeout) throw;
    // A job that has not started has no log yet; its live log events fill the pane later.
  }
  show_stored_sample(job, training_run(detail.value("job", nlohmann::json::object())));
}

void Network::show_stored_sample(int64_t job, const std::string& run) {
  if (run.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const JobDetail* d = state_.detail(job);
    if (d && d->preview_events > 0) return;  // a live preview is newer than anything stored
  }
  try {
    const auto listing = client_->request(MessageType::list_run_samples, {{"run", run}, {"limit", 1}});
    for (const auto& sample : listing.value("samples", nlohmann::json::array())) {
      if (sample.contains("error")) continue;
      protocol::Message reply;
      reply.header = client_->request(MessageType::run_sample_frames,
                                      {{"run", run},
                                       {"step", sample.value("step", int64_t(0))},
                                       {"file", sample.value("file", "")},
                                       {"count", kStoredSampleFrames},
                                       {"max_side", 128}},
                                      &reply.blobs);
      std::lock_guard<std::mutex> lock(mutex_);
      (void)state_.apply_stored_sample(job, reply);
      return;  // the first readable video of the newest step, as the live preview showed it
    }
  } catch (const Error& e) {
    if (e.code() == ErrorCode::timeout) throw;
    // A run that rendered nothing yet, or was deleted: the pane says there is no preview.
  }
}

bool Network::drain_events(std::chrono::milliseconds wait) {
  if (!subscriber_) {
    std::this_thread::sleep_for(wait);
    return false;
  }
  bool changed = false;
  auto m = subscriber_->next(wait);
  // Take what has queued up in one go (a burst of progress events), but give the job list its turn.
  for (int i = 0; m && i < 500; ++i) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      changed |= state_.apply_event(*m);
    }
    m = subscriber_->next(0ms);
  }
  return changed;
}

void Network::run() {
  auto next_poll = Clock::now();
  auto next_retry = Clock::now();
  int64_t backfilled = 0;
  std::string backfilled_state;  // the selected job's state at its backfill; a change (it started, it ended)
                                 // refreshes it
  while (!stop_) {
    try {
      if (!client_) {
        if (Clock::now() < next_retry) {
          std::this_thread::sleep_for(50ms);
          continue;
        }
        next_retry = Clock::now() + 2s;
        (void)open_connection_or_throw();
        next_poll = Clock::now();
        backfilled = 0;
      }
      bool changed = false;
      if (Clock::now() >= next_poll) {
        poll_jobs();
        next_poll = Clock::now() + 1s;
        changed = true;
      }
      const int64_t selected = selected_;
      if (selected != backfilled || (selected > 0 && state_of(selected) != backfilled_state)) {
        backfilled = selected;  // also after a refused request: one try per selection and state
        if (selected > 0) backfill(selected);
        backfilled_state = selected > 0 ? state_of(selected) : "";
        changed = true;
      }
      changed |= drain_events(50ms);
      if (changed && wake_) wake_();
    } catch (const Error& e) {
      // A request the server refused (a job removed between two polls) is not a lost connection.
      if (e.code() == ErrorCode::timeout || !client_) drop_connection(e.what());
    } catch (const std::exception& e) {
      drop_connection(e.what());
    }
  }
}

}  // namespace mugv::monitor
