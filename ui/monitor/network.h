#pragma once
// The monitor's network side: one thread that owns the mugv::Client and the "job/" event subscriber and
// folds everything into a MonitorState, so the render loop never waits on a socket. The render thread
// asks for a snapshot (a copy taken under the mutex) once per frame and tells which job is selected.
//
// connect() runs the first handshake on the caller's thread, before any window exists, so an unreachable
// server is reported at once (Error naming the endpoint). After that the thread polls the job list every
// second, drains events every 50 ms, backfills the selected job (stored metrics, progress, the log tail, and
// for a training job without a live preview so far, the newest sample its run rendered) when the
// selection or that job's state changes, and after a lost connection reconnects every two seconds. On each
// connection a second thread asks the server for the quick form of its machine check (`mugv doctor --quick`
// there, about a second: longer than a job poll may wait, so on its own client with a longer timeout).
// `wake` is called (from the network thread) when something changed; the monitor passes
// glfwPostEmptyEvent, which is safe to call from any thread.

#include "monitor_state.h"
#include "service/curve_keys.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

namespace mugv {
class Client;
class EventSubscriber;
}  // namespace mugv

namespace mugv::monitor {

class Network {
 public:
  // `curve`: the credentials for a tcp:// server (client.h); reconnections use them too.
  Network(std::string endpoint, std::chrono::milliseconds timeout = std::chrono::milliseconds(3000),
          std::optional<CurveClientKeys> curve = std::nullopt);
  ~Network();  // stop()
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // First handshake (throws mugv::Error when nobody answers), then starts the thread.
  void connect(std::function<void()> wake = {});
  // Stops and joins the thread (idempotent); the last state stays readable.
  void stop();
  // The selected job's detail is kept and backfilled; 0 selects nothing.
  void select(int64_t job);
  MonitorState snapshot(int64_t selected) const;
  // The whole state (all details), for --dump-state.
  nlohmann::json state_json() const;

 private:
  void run();
  bool open_connection_or_throw();  // handshake + subscription; throws mugv::Error when nobody answers
  void drop_connection(const std::string& message);
  void poll_jobs();
  void backfill(int64_t job);
  // While `job` has had no live preview: the newest sample `run` rendered becomes its preview (nothing when
  // the run has none).
  void show_stored_sample(int64_t job, const std::string& run);
  std::string state_of(int64_t job) const;
  // Starts the machine check's thread unless one still runs.
  void check_machine();
  bool drain_events(std::chrono::milliseconds wait);

  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  std::optional<CurveClientKeys> curve_;
  std::function<void()> wake_;
  std::unique_ptr<Client> client_;               // used by the network thread only (after connect())
  std::unique_ptr<EventSubscriber> subscriber_;  // likewise
  std::set<int64_t> progress_fetched_;  // running jobs whose stored progress was read (network thread)
  mutable std::mutex mutex_;
  MonitorState state_;  // guarded by mutex_
  std::atomic<int64_t> selected_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::thread machine_thread_;
  std::atomic<bool> machine_check_running_{false};
};

}  // namespace mugv::monitor
