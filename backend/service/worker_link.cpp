#include "service/worker_link.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/job_files.h"
#include "service/zmq_io.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

namespace mugv {

using protocol::Message;
using protocol::MessageType;
using Clock = std::chrono::steady_clock;

struct WorkerLink::Impl {
  std::string endpoint;
  int64_t job_id = 0;
  std::string token;        // proves to the server that this process runs the job (job_files.h)
  bool superseded = false;  // the server gave the job to a newer worker: report nothing more
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::dealer};
  std::chrono::milliseconds heartbeat{1000};
  CancelToken cancel;
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Message> outbox;
  bool paused = false, stop = false, sample_request = false, save_request = false;
  std::thread io;
  Clock::time_point last_progress{};

  Message make(MessageType type, nlohmann::json header, std::vector<std::string> blobs = {}) {
    Message m;
    m.type = type;
    header["job"] = job_id;
    m.header = std::move(header);
    m.blobs = std::move(blobs);
    return m;
  }

  // Wakes every 100 ms as well: a cancellation can come from a signal handler (a Slurm worker's SIGTERM sets
  // the shared token), which cannot notify the condition variable.
  void wait_while_paused() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!changed.wait_for(lock, std::chrono::milliseconds(100),
                             [&] { return !paused || cancel.cancel_requested() || stop; })) {
    }
  }

  void post(Message m) {
    std::lock_guard<std::mutex> lock(mutex);
    outbox.push_back(std::move(m));
  }

  void on_control(const Message& m) {
    if (m.type == MessageType::error && m.header.value("code", "") == kSupersededCode) {
      // An adopted worker whose job has moved on to a newer attempt: stop at once, write nothing.
      std::lock_guard<std::mutex> lock(mutex);
      superseded = true;
      cancel.request_cancel();
      changed.notify_all();
      return;
    }
    if (m.type != MessageType::control) return;
    std::string action = m.header["action"];
    std::lock_guard<std::mutex> lock(mutex);
    if (action == "cancel")
      cancel.request_cancel();
    else if (action == "pause")
      paused = true;
    else if (action == "resume")
      paused = false;
    else if (action == "sample_now")
      sample_request = true;
    else if (action == "save_now")
      save_request = true;
    changed.notify_all();
  }

  void loop() {
    auto next_heartbeat = Clock::now();
    while (true) {
      std::deque<Message> batch;
      bool stopping;
      {
        std::lock_guard<std::mutex> lock(mutex);
        batch.swap(outbox);
        stopping = stop;
      }
      for (const auto& m : batch) protocol::send(socket, {}, m);
      if (stopping) break;
      if (Clock::now() >= next_heartbeat) {
        protocol::send(
            socket, {},
            make(MessageType::heartbeat, {{"pid", static_cast<int64_t>(::getpid())}, {"token", token}}));
        next_heartbeat = Clock::now() + heartbeat;
      }
      if (auto in = protocol::receive(socket, 0, std::chrono::milliseconds(20)))
        if (auto* m = std::get_if<Message>(&in->content)) on_control(*m);
    }
  }
};

WorkerLink::WorkerLink(const std::string& endpoint, int64_t job_id, std::chrono::milliseconds timeout,
                       WorkerLinkSecrets secrets)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.endpoint = endpoint;
  s.job_id = job_id;
  s.token = std::move(secrets.token);
  if (const char* token = std::getenv(kWorkerTokenEnv); token && s.token.empty()) {
    s.token = token;
    ::unsetenv(kWorkerTokenEnv);  // the job's own child processes (ffmpeg, srun) have no use for it
  }
  protocol::apply_common_options(s.socket);
  protocol::apply_curve_client(s.socket, endpoint, secrets.curve);
  s.socket.set(zmq::sockopt::linger, 2000);  // let the last reports (job_finished) reach the server
  s.socket.connect(endpoint);
  Message hello;
  hello.type = MessageType::hello;
  hello.header = {{"role", "worker"},
                  {"version", protocol::kVersion},
                  {"job", job_id},
                  {"token", s.token},
                  {"name", cat("pid ", ::getpid())}};
  protocol::send(s.socket, {}, hello);
  auto reply = protocol::receive(s.socket, 0, timeout);
  if (!reply)
    throw Error(ErrorCode::timeout, endpoint,
                cat("no answer from the server within ", timeout.count(), " ms"));
  if (auto* err = std::get_if<protocol::ProtocolError>(&reply->content))
    throw Error(ErrorCode::protocol, endpoint, err->message);
  const Message& m = std::get<Message>(reply->content);
  if (m.type == MessageType::error)
    throw Error(ErrorCode::protocol, endpoint, m.header.value("message", "refused"));
  s.heartbeat = std::chrono::milliseconds(m.header.value("heartbeat_ms", 1000));
  s.io = std::thread([&s] { s.loop(); });
}

WorkerLink::~WorkerLink() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
    impl_->changed.notify_all();
  }
  if (impl_->io.joinable()) impl_->io.join();
}

const CancelToken& WorkerLink::cancel_token() const {
  return impl_->cancel;
}

ProgressFn WorkerLink::progress_fn() {
  return [this](const Progress& p) {
    Impl& s = *impl_;
    auto now = Clock::now();
    bool last = p.total > 0 && p.done >= p.total;
    if (last || now - s.last_progress >= std::chrono::milliseconds(100)) {
      s.last_progress = now;
      s.post(s.make(MessageType::progress, {{"stage", p.stage.empty() ? "work" : p.stage},
                                            {"done", std::max<int64_t>(0, p.done)},
                                            {"total", std::max<int64_t>(0, p.total)},
                                            {"rate", p.rate_per_s},
                                            {"eta_s", p.eta_s},
                                            {"unit", p.unit},
                                            {"detail", p.detail.substr(0, 2000)}}));
    }
    s.wait_while_paused();
  };
}

ProgressFn WorkerLink::pause_gate() {
  return [this](const Progress&) { impl_->wait_while_paused(); };
}

LogSink WorkerLink::log_sink(LogSink previous) {
  return [this, previous](LogLevel level, std::string_view text) {
    if (previous) previous(level, text);
    std::string line(text.substr(0, 65536));
    impl_->post(impl_->make(MessageType::log_line, {{"level", to_string(level)}, {"text", line}}));
  };
}

void WorkerLink::metrics(int64_t step, const nlohmann::json& values) {
  impl_->post(impl_->make(MessageType::metrics, {{"step", step}, {"values", values}}));
}

void WorkerLink::preview(int64_t step, const std::vector<RgbFrame>& frames) {
  if (frames.empty()) return;
  std::vector<std::string> blobs;
  for (const auto& f : frames) blobs.emplace_back(reinterpret_cast<const char*>(f.rgb.data()), f.rgb.size());
  impl_->post(impl_->make(
      MessageType::preview,
      {{"step", step}, {"width", frames[0].width}, {"height", frames[0].height}, {"format", "rgb24"}},
      std::move(blobs)));
}

bool WorkerLink::take_sample_request() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return std::exchange(impl_->sample_request, false);
}

bool WorkerLink::take_save_request() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return std::exchange(impl_->save_request, false);
}

void WorkerLink::finish(JobState state, const std::string& error_code, const std::string& message,
                        const nlohmann::json& result) {
  nlohmann::json h = {{"state", to_string(state)}};
  if (!error_code.empty()) h["error_code"] = error_code.substr(0, 100);
  if (!message.empty()) h["message"] = message.substr(0, 10000);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->superseded) return;  // the job's result belongs to its newer worker
  }
  Message m = impl_->make(MessageType::job_finished, h);
  if (result.is_object()) m.header["result"] = result;
  impl_->post(std::move(m));
  try {
    write_job_result(mugv_home(), impl_->job_id, JobResult{state, error_code, message, result, impl_->token});
  } catch (const Error& e) {
    log_warning(cat("cannot write the job result file: ", e.what()));
  }
  // Give the I/O thread a moment to put it on the wire before the process exits.
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      if (impl_->outbox.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace mugv
