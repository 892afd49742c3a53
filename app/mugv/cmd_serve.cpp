// mugv serve [--listen ENDPOINT]... [--home DIR] [--allow-root DIR]... [--max-jobs N]: the headless backend
// server. This layer knows the commands, so it tells the server which of a job's parameters are files, and
// how a job is split into the tasks of a Slurm array.
#include "command.h"

#include "core/error.h"
#include "core/log.h"
#include "core/param_schema.h"
#include "core/path_confinement.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/strings.h"
#include "core/utf8.h"
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
  throw Error(ErrorCode::not_found, beside.string(),
              "the worker program is missing (set MUGV_WORKER to its path)");
}

std::string joined(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

// The files a submitted job names: its command's path parameters and, unless the command says they are
// names, its positional arguments. Refuses a job whose command is not a job of that kind (`serve`,
// `launch` or `keys` queued as an "import" would otherwise run with the server's rights), and values its
// command would reject, before they reach the queue.
std::vector<JobPath> job_paths(const std::string& kind, const nlohmann::json& params) {
  auto words_json = params.find("command");
  if (words_json == params.end() || !words_json->is_array() || words_json->empty())
    throw Error(ErrorCode::invalid_argument, "params.command",
                "expected the command's words, e.g. [\"dataset\", \"import\"]");
  std::vector<std::string> words;
  for (const auto& w : *words_json) {
    if (!w.is_string())
      throw Error(ErrorCode::invalid_argument, "params.command", "expected a list of strings");
    words.push_back(w.get<std::string>());
  }
  const Command* command = find_command(words);
  if (!command)
    throw Error(ErrorCode::not_found, cat("command '", joined(words), "'"), "no such command on this server");
  if (command->job_kind != kind)
    throw Error(ErrorCode::forbidden, cat("command '", joined(words), "'"),
                command->job_kind.empty() ? std::string("cannot run as a job")
                                          : cat("runs as a ", command->job_kind, " job, not as ", kind));
  const ParamRegistry registry = command_registry(*command);
  std::vector<JobPath> paths;
  const nlohmann::json values = params.value("values", nlohmann::json::object());
  if (!values.is_object()) throw Error(ErrorCode::invalid_argument, "params.values", "expected an object");
  for (auto it = values.begin(); it != values.end(); ++it) {
    const ParamSpec* spec = registry.find_by_key(it.key());
    if (!spec)
      throw Error(ErrorCode::invalid_argument, it.key(), cat("not a parameter of mugv ", joined(words)));
    ValueCheck checked = check_param_value(*spec, it.value(), ValueForm::json);
    if (!checked.problem.empty())
      throw Error(ErrorCode::invalid_argument, spec->flag.empty() ? spec->key : spec->flag, checked.problem);
    if (spec->type == ParamType::path)
      paths.push_back({spec->flag, resolve_path_value(*spec, checked.value.get<std::string>())});
    if (spec->type == ParamType::list && spec->item_type == ParamType::path)
      for (const auto& item : checked.value) paths.push_back({spec->flag, item.get<std::string>()});
  }
  const nlohmann::json positional = params.value("positional", nlohmann::json::array());
  if (!positional.is_array())
    throw Error(ErrorCode::invalid_argument, "params.positional", "expected a list of strings");
  for (size_t i = 0; i < positional.size(); ++i) {
    if (!positional[i].is_string())
      throw Error(ErrorCode::invalid_argument, "params.positional", "expected a list of strings");
    if (command->positional_type == ParamType::path)
      paths.push_back({cat("argument ", i + 1), positional[i].get<std::string>()});
  }
  return paths;
}

// Every command that runs as a job, with its parameters: what `list_commands` answers, so the studio's forms
// take their bounds, defaults and help from the same registry as the command line.
nlohmann::json job_commands() {
  nlohmann::json commands = nlohmann::json::array();
  for (const Command& command : all_commands()) {
    if (command.job_kind.empty()) continue;
    commands.push_back({{"command", command.words},
                        {"job_kind", command.job_kind},
                        {"summary", command.summary},
                        {"params", param_registry_to_json(command_registry(command))}});
  }
  return commands;
}

// Sharded curation on Slurm: task i curates slice i of n (--shard i/n) into its own catalog in the job
// folder, because one SQLite file must not be written from several nodes; once every task succeeded the
// server queues `curate merge` of the shard catalogs into the catalog the job named ($MUGV_HOME's when none).
ShardPlan plan_shards(const std::string& kind, const nlohmann::json& params, int shards,
                      const fs::path& job_dir) {
  std::vector<std::string> words = params.value("command", std::vector<std::string>{});
  if (kind != "curate" || words != std::vector<std::string>{"curate"})
    throw Error(ErrorCode::unsupported, cat("command '", joined(words), "'"),
                "cannot run as a Slurm array; only `curate` is sharded (each task takes --shard i/n)");
  const nlohmann::json values = params.value("values", nlohmann::json::object());
  if (values.contains("curate.shard"))
    throw Error(ErrorCode::invalid_argument, "--shard",
                "an array job gives every task its own shard; leave --shard out");
  if (!values.contains("curate.dataset") || !values["curate.dataset"].is_string())
    throw Error(ErrorCode::usage, "--dataset", "a dataset name is required");
  ShardPlan plan;
  std::vector<std::string> catalogs;
  for (int i = 0; i < shards; ++i) {
    catalogs.push_back((job_dir / cat("shard-", i, ".sqlite")).string());
    plan.task_values.push_back({{"curate.shard", cat(i, "/", shards)}, {"curate.catalog", catalogs.back()}});
  }
  nlohmann::json merge = {{"curate.dataset", values["curate.dataset"]}, {"merge.from", catalogs}};
  if (values.contains("curate.catalog")) merge["curate.catalog"] = values["curate.catalog"];
  plan.follow_up = {
      {"kind", "curate"},
      {"params",
       {{"command", {"curate", "merge"}}, {"values", merge}, {"positional", nlohmann::json::array()}}}};
  return plan;
}

void define(ParamRegistry& r) {
  auto listen =
      param("serve.listen", "--listen", ParamType::list, nullptr,
            "endpoints to serve: ipc://PATH or tcp://HOST:PORT (CURVE keys required; see `mugv keys`) "
            "(default: an ipc socket in the runtime dir)",
            "server");
  listen.item_type = ParamType::text;
  r.add(listen);
  r.add(
      param("serve.home", "--home", ParamType::path, nullptr, "data folder (default $MUGV_HOME)", "server"));
  auto roots =
      param("serve.allow_root", "--allow-root", ParamType::list, nlohmann::json::array(),
            "a folder (besides the home) whose files jobs may read and write; repeat for more", "server");
  roots.item_type = ParamType::path;
  r.add(roots);
  auto jobs = param("serve.max_jobs", "--max-jobs", ParamType::integer, 1,
                    "jobs running at once on this machine", "server");
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

// `mugv doctor --json` (cmd_doctor.cpp) in a process of its own: its GEMM measurement and a GPU context must
// not live in the server, whose workers train beside it. It exits 1 when a check fails, with its report.
nlohmann::json check_machine(bool quick) {
  std::vector<std::string> argv = {executable_path().string(), "doctor", "--json"};
  if (quick) argv.push_back("--quick");
  const ProcessResult r = run_process(argv, std::chrono::seconds(120));
  if (r.timed_out) throw Error(ErrorCode::timeout, "mugv doctor", "took more than 120 s");
  try {
    return nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::internal, "mugv doctor",
                cat("exited ", r.exit_code, ": ", valid_utf8(trim(r.err))));
  }
}

int run(const Invocation& inv) {
  const auto& v = inv.values;
  ServerOptions o;
  o.home = v.has("serve.home") ? fs::path(v.get_text("serve.home")) : mugv_home();
  if (v.has("serve.home")) ::setenv("MUGV_HOME", o.home.c_str(), 1);
  o.listen = v.has("serve.listen")
                 ? v.get_text_list("serve.listen")
                 : std::vector<std::string>{"ipc://" + (runtime_dir() / "mugv.sock").string()};
  o.worker_executable = worker_executable();
  o.max_local_jobs = static_cast<int>(v.get_int("serve.max_jobs"));
  o.heartbeat_interval = std::chrono::milliseconds(v.get_int("serve.heartbeat_ms"));
  o.max_attempts = static_cast<int>(v.get_int("serve.max_attempts"));
  for (const auto& root : v.get_text_list("serve.allow_root")) {
    std::error_code ec;
    if (!fs::is_directory(root, ec))
      throw Error(ErrorCode::not_found, cat("--allow-root ", root), "not a folder");
    o.allowed_roots.emplace_back(root);
  }
  o.job_paths = job_paths;
  o.plan_shards = plan_shards;
  o.commands = job_commands();
  o.check_machine = check_machine;
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
  c.summary =
      "run the backend server: job queue, local worker processes, Slurm jobs, events (headless; stops "
      "cleanly "
      "on SIGTERM)";
  c.usage = "[--listen ENDPOINT]... [--home DIR] [--allow-root DIR]... [--max-jobs N]";
  c.define = define;
  c.run = run;
  return c;
}

}  // namespace mugv::cli
