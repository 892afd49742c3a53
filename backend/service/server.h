#pragma once
// `mugv serve`: owns the catalog's job queue, runs jobs as worker processes, answers clients and
// republishes what workers report.
//
//   clients (DEALER) ──requests──► ROUTER ◄──hello/heartbeat/progress/... ── workers (DEALER)
//                                    │
//                          catalog.sqlite (jobs, events)       PUB ──► job/<id>, log/<id>, run/<id>/metrics,
//                                                                       job/<id>/preview
// One thread runs everything (poll loop): requests are answered in order, so no handler needs locks.
// Workers are child processes (`mugv-worker --server EP --job ID`, stdout/stderr appended to
// $MUGV_HOME/jobs/<id>/log.txt): a crash, OOM kill or SIGKILL of a worker never affects the server.
// A worker that misses `missed_heartbeats` heartbeats is killed and its job interrupted; interrupted jobs
// go back to the queue while attempts < max_attempts. On start, jobs whose worker is gone are recovered
// the same way. SIGTERM/stop: the server stops taking work; running workers keep running (they are
// separate processes) and are recovered by the next server start if they have finished or died by then.

#include "core/progress.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace mugv {

struct ServerOptions {
  std::filesystem::path home;               // $MUGV_HOME: catalog.sqlite, jobs/<id>/log.txt
  std::vector<std::string> listen;          // request endpoints; the first is what workers connect to
  std::filesystem::path worker_executable;  // mugv-worker
  int max_local_jobs = 1;
  std::chrono::milliseconds heartbeat_interval{1000};
  int missed_heartbeats = 3;
  std::chrono::milliseconds cancel_grace{5000};  // after a cancel request, SIGKILL when the worker is still alive
  int max_attempts = 3;                          // interrupted jobs are requeued until this many starts
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the sockets (Error(io) naming the endpoint when it cannot), recovers orphaned jobs, then serves
  // until `stop` is cancelled.
  void run(const CancelToken& stop);
  // The PUB endpoint clients subscribe to (valid after run() has bound it; also sent in `welcome`).
  std::vector<std::string> events_endpoints() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
