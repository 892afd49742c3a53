// mugv serve [--listen ENDPOINT]... [--home DIR] [--max-jobs N]: the headless backend server.
#include "command.h"

#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/server.h"

#include <csignal>
#include <cstdlib>

namespace mugv::cli {
namespace {

CancelToken* g_stop = nullptr;

extern "C" void on_stop_signal(int) {
  if (g_stop) g_stop->request_cancel();  // an atomic store: safe in a signal handler
}

fs::path worker_executable() {
  if (const char* env = std::getenv("MUGV_WORKER"); env && *env) return env;
  fs::path beside = executable_path().parent_path() / "mugv-worker";
  if (fs::exists(beside)) return beside;
  throw Error(ErrorCode::not_found, beside.string(), "the worker program is missing (set MUGV_WORKER to its path)");
}

void define(ParamRegistry& r) {
  auto listen = param("serve.listen", "--listen", ParamType::list, nullptr,
                      "endpoints to serve: ipc://PATH or tcp://HOST:PORT (default: an ipc socket in the runtime dir)",
                      "server");
  listen.item_type = ParamType::text;
  r.add(listen);
  r.add(param("serve.home", "--home", ParamType::path, nullptr, "data folder (default $MUGV_HOME)", "server"));
  auto jobs = param("serve.max_jobs", "--max-jobs", ParamType::integer, 1, "jobs running at once on this machine", "server");
  jobs.min_value = 1;
  jobs.max_value = 256;
  r.add(jobs);
  auto heartbeat = param("serve.heartbeat_ms", "--heartbeat-ms", ParamType::integer, 1000,
                         "worker heartbeat interval; 3 missed heartbeats mark a worker dead", "server");
  heartbeat.min_value = 50;
  r.add(heartbeat);
  auto attempts = param("serve.max_attempts", "--max-attempts", ParamType::integer, 3,
                        "starts per job before an interrupted job is no longer requeued", "server");
  attempts.min_value = 1;
  r.add(attempts);
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  ServerOptions o;
  o.home = v.has("serve.home") ? fs::path(v.get_text("serve.home")) : mugv_home();
  if (v.has("serve.home")) ::setenv("MUGV_HOME", o.home.c_str(), 1);
  o.listen = v.has("serve.listen") ? v.get_text_list("serve.listen")
                                   : std::vector<std::string>{"ipc://" + (runtime_dir() / "mugv.sock").string()};
  o.worker_executable = worker_executable();
  o.max_local_jobs = static_cast<int>(v.get_int("serve.max_jobs"));
  o.heartbeat_interval = std::chrono::milliseconds(v.get_int("serve.heartbeat_ms"));
  o.max_attempts = static_cast<int>(v.get_int("serve.max_attempts"));
  ensure_private_dir(o.home);
  CancelToken stop = inv.cancel;
  g_stop = &stop;
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  Server server(o);
  server.run(stop);
  g_stop = nullptr;
  return 0;
}

}  // namespace

Command serve_command() {
  Command c;
  c.words = {"serve"};
  c.summary = "run the backend server: job queue, worker processes, events (headless; stops cleanly on SIGTERM)";
  c.usage = "[--listen ENDPOINT]... [--home DIR] [--max-jobs N]";
  c.define = define;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
