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
//
// Security (docs/SECURITY.md): every tcp:// endpoint, the request ROUTER and its events PUB alike, requires
// CURVE with the server key in keys_dir (made on first use) and accepts only the client keys in
// keys_dir/authorized_keys (ZapHandler). ipc:// sockets live in a directory of mode 0700 owned by this
// user. Workers always connect over ipc (a private socket in home/ipc when no ipc endpoint is listed), so
// they need no keys. A submitted job's files (ServerOptions::job_paths) must lie inside home or an
// allowed root, and never inside keys_dir; otherwise the request gets Error(forbidden).
//
// Dependencies: a queued job is taken, by either executor, only once every job it depends on has succeeded
// (catalog/jobs.h); a job that ends cancelled cancels its queued dependents, and each of those is published.
//
// Executors: a job runs locally (a worker process, above) unless its params say {"executor": "slurm",
// "cluster": NAME}; then the Slurm executor (slurm_executor.h) submits it with the cluster profile
// home/clusters/NAME.toml, follows it through Slurm and publishes what its workers report through files.
// Slurm jobs take no local slot. `list_clusters` answers with the profiles (cluster_profiles.h);
// `list_models` with the released models installed under home/models (model/release_files.h); `list_presets`
// with the presets its jobs would use (core/presets.h describe_presets).

#include "core/path_confinement.h"
#include "core/progress.h"
#include "service/slurm_executor.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mugv {

struct ServerOptions {
  std::filesystem::path home;       // $MUGV_HOME: catalog.sqlite, jobs/<id>/log.txt
  std::vector<std::string> listen;  // request endpoints: ipc://PATH, tcp://HOST:PORT (events on PORT+1)
  std::filesystem::path worker_executable;  // mugv-worker
  int max_local_jobs = 1;
  std::chrono::milliseconds heartbeat_interval{1000};
  // A worker that exits is seen at once (its exit status), so the silence only has to catch a hung one; a
  // busy machine can keep a healthy worker's link thread from running for seconds (three trainings on two
  // cores did, with 3), so it takes ten missed heartbeats.
  int missed_heartbeats = 10;
  std::chrono::milliseconds cancel_grace{
      5000};                       // after a cancel request, SIGKILL when the worker is still alive
  int max_attempts = 3;            // interrupted jobs are requeued until this many starts
  std::filesystem::path keys_dir;  // CURVE keys and authorized_keys; empty: home/keys
  std::vector<std::filesystem::path> allowed_roots;  // besides home: folders a job's files may be in
  // The files a submitted job would read or write, from its kind and params (the `mugv` command layer knows
  // which parameters are paths). Throws Error for a job that must be refused outright (e.g. a command that
  // is not a job of that kind). Empty: jobs are not inspected (tests of the queue only).
  std::function<std::vector<JobPath>(const std::string& kind, const nlohmann::json& params)> job_paths;
  // What `list_commands` answers: the job commands and their parameters (the `mugv` command layer knows
  // them); empty: an empty list.
  nlohmann::json commands = nlohmann::json::array();
  // What `check_machine` answers: the findings of `mugv doctor` on this server's machine, where its jobs run
  // (the command layer runs them, in a process of their own). Called on the reply pool; may take seconds.
  // Empty: the request is refused as unsupported.
  // `quick`: skip its measurements.
  std::function<nlohmann::json(bool quick)> check_machine;
  // How a job runs as a Slurm array ({"array": N} in its params); empty: arrays are refused.
  ShardPlanner plan_shards;
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
  // The PUB endpoints clients subscribe to, one per listen endpoint in the same order (valid after run()
  // has bound them; also sent in `welcome`).
  std::vector<std::string> events_endpoints() const;
  // The ipc endpoint workers connect to (valid after run() has bound it).
  std::string worker_endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
