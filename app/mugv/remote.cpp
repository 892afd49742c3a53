// `mugv --server ENDPOINT ...`: the client commands. Every message goes through the client library that the
// studio and the monitor use too.
#include "command.h"

#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/client.h"
#include "service/curve_keys.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

namespace mugv::cli {
namespace {

using protocol::MessageType;

const char* kRemoteUsage =
    "Usage: mugv --server ENDPOINT [--server-key KEY|FILE.pub] [--client-key FILE.key] COMMAND\n\n"
    "  tcp:// servers require CURVE: --server-key is the server's public key (printed when it starts;\n"
    "  `mugv keys list` on the server; or $MUGV_SERVER_KEY); the client key pair defaults to\n"
    "  $MUGV_HOME/keys/client.key (made on first use), and the server must authorise its public key.\n\n"
    "  submit [--priority N] COMMAND ARGS...   queue a command as a job (same options as running it here)\n"
    "    [--after JOB[,JOB...]]                start it only once those jobs have succeeded\n"
    "    [--cluster NAME]                      run it on Slurm with the server's cluster profile NAME\n"
    "                                          (default: built in, the Slurm of the server's machine)\n"
    "    [--nodes N] [--tasks-per-node K]      the Slurm job's size (default: the profile's)\n"
    "    [--gpus-per-node G]                   GPUs per node, 0 for none (default: the profile's)\n"
    "    [--shards N]                          curate only: an array of N tasks (--shard i/N each), merged "
    "after\n"
    "  clusters [--json]                       the server's cluster profiles\n"
    "  presets [KIND] [--json]                 the presets the server's jobs use (its own and its users')\n"
    "  doctor [--json]                         mugv doctor on the server's machine (exit 1 on a failure)\n"
    "  jobs [--state S] [--json]               the queue and recent jobs\n"
    "  show ID [--json]                        one job with its events\n"
    "  watch ID                                live progress, metrics and logs until the job ends\n"
    "  cancel ID [--force] | pause ID | resume ID | retry ID\n"
    "  logs ID [--tail N]                      the job's log\n";

int64_t job_id_of(const std::string& text) {
  char* end = nullptr;
  long long id = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || !end || *end || id <= 0) throw Error(ErrorCode::usage, text, "not a job id");
  return id;
}

int64_t job_id_arg(const std::vector<std::string>& args, size_t i) {
  if (i >= args.size()) throw Error(ErrorCode::usage, "a job id is required");
  return job_id_of(args[i]);
}

// "--after 12,13": the jobs a submitted job waits for.
std::vector<int64_t> job_ids_of(const std::string& list) {
  std::vector<int64_t> ids;
  for (const auto& item : split(list, ',')) ids.push_back(job_id_of(trim(item)));
  return ids;
}

// "  (after #12, #13)" for a queued job that waits, "  (blocked by #12)" while a dependency has failed.
std::string waiting_note(const nlohmann::json& j) {
  auto list = [](const nlohmann::json& ids) {
    std::string text;
    for (const auto& id : ids) text += cat(text.empty() ? "#" : ", #", id.get<int64_t>());
    return text;
  };
  const auto blocked = j.value("blocked_by", nlohmann::json::array());
  if (!blocked.empty()) return "  (blocked by " + list(blocked) + ")";
  const auto waiting = j.value("waiting_on", nlohmann::json::array());
  return waiting.empty() ? std::string() : "  (after " + list(waiting) + ")";
}

bool has_flag(const std::vector<std::string>& args, const std::string& flag) {
  return std::find(args.begin(), args.end(), flag) != args.end();
}

std::optional<std::string> flag_value(const std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) return args[i + 1];
  return std::nullopt;
}

void print_job_line(const nlohmann::json& j) {
  std::string err = j.value("error_message", "");
  std::printf("%6lld  %-12s %-11s prio %-4d attempts %d  %s%s%s\n",
              static_cast<long long>(j["id"].get<int64_t>()), j["kind"].get<std::string>().c_str(),
              j["state"].get<std::string>().c_str(), j["priority"].get<int>(), j["attempts"].get<int>(),
              j["params"].value("command", nlohmann::json::array()).dump().c_str(), waiting_note(j).c_str(),
              err.empty() ? "" : ("  — " + err).c_str());
}

int exit_code_of_state(const std::string& state) {
  if (state == "succeeded") return 0;
  if (state == "cancelled") return 3;
  return 1;
}

int watch(Client& client, int64_t id) {
  auto events = client.events_endpoints();
  if (events.empty())
    throw Error(ErrorCode::protocol, client.endpoint(), "the server published no event endpoint");
  EventSubscriber sub(events.front(), {cat("job/", id)}, client.curve());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the subscription reach the server
  auto state = client.request(MessageType::get_job, {{"job", id}})["job"]["state"].get<std::string>();
  std::printf("job %lld: %s\n", static_cast<long long>(id), state.c_str());
  bool terminal =
      state == "succeeded" || state == "failed" || state == "cancelled" || (state == "interrupted");
  while (!terminal) {
    auto event = sub.next(std::chrono::milliseconds(1000));
    if (!event) continue;
    const auto& h = event->header;
    std::string type = h.value("type", "");
    if (type == "progress") {
      Progress p;
      p.stage = h.value("stage", "");
      p.unit = h.value("unit", "");
      p.done = h.value("done", int64_t(0));
      p.total = h.value("total", int64_t(0));
      p.rate_per_s = h.value("rate", 0.0);
      p.eta_s = h.value("eta_s", -1.0);
      p.detail = h.value("detail", "");
      std::fprintf(stderr, "\r\033[K%s", render_progress_line(p).c_str());
    } else if (type == "log") {
      std::fprintf(stderr, "\r\033[K[%s] %s\n", h.value("level", "").c_str(), h.value("text", "").c_str());
    } else if (type == "metrics") {
      std::fprintf(stderr, "\r\033[Kstep %lld %s\n", static_cast<long long>(h.value("step", int64_t(0))),
                   h["values"].dump().c_str());
    } else if (type == "state") {
      state = h.value("state", "");
      std::fprintf(stderr, "\r\033[Kjob %lld: %s\n", static_cast<long long>(id), state.c_str());
      terminal = state == "succeeded" || state == "failed" || state == "cancelled";
      if (state == "failed") std::fprintf(stderr, "  %s\n", h["job_info"].value("error_message", "").c_str());
    }
  }
  return exit_code_of_state(state);
}

int positive_int(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (!end || *end || n < 1 || n > 100000)
    throw Error(ErrorCode::usage, flag, cat("'", text, "' is not a positive integer"));
  return static_cast<int>(n);
}

// The submit options that say where a job runs. Before the command they are always submit's; after it, only
// when the command has no option of that name (`mugv train` has its own --nodes for `--slurm`).
struct Placement {
  std::string cluster;
  int nodes = 0, tasks_per_node = 0, shards = 0;
  std::optional<int> gpus_per_node;  // absent: the profile's
  // Takes the option at args[i] (and its value) if it is one; true when it did.
  bool take(std::vector<std::string>& args, size_t i) {
    static const char* kFlags[] = {"--cluster", "--nodes", "--tasks-per-node", "--gpus-per-node", "--shards"};
    std::string flag = args[i], value;
    bool inline_value = false;
    if (auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (std::find(std::begin(kFlags), std::end(kFlags), flag) == std::end(kFlags)) return false;
    if (!inline_value) {
      if (i + 1 >= args.size()) throw Error(ErrorCode::usage, flag, "needs a value");
      value = args[i + 1];
    }
    args.erase(args.begin() + static_cast<long>(i),
               args.begin() + static_cast<long>(i + (inline_value ? 1 : 2)));
    if (flag == "--cluster")
      cluster = value;
    else if (flag == "--nodes")
      nodes = positive_int(flag, value);
    else if (flag == "--tasks-per-node")
      tasks_per_node = positive_int(flag, value);
    else if (flag == "--gpus-per-node")
      gpus_per_node = value == "0" ? 0 : positive_int(flag, value);
    else
      shards = positive_int(flag, value);
    return true;
  }
  void apply(nlohmann::json& params) const {
    if (cluster.empty()) {
      if (nodes || tasks_per_node || gpus_per_node || shards)
        throw Error(
            ErrorCode::usage, "--cluster",
            "--nodes, --tasks-per-node, --gpus-per-node and --shards are for Slurm jobs: name a cluster "
            "profile (\"default\": the server's own Slurm)");
      return;
    }
    params["executor"] = "slurm";
    params["cluster"] = cluster;
    if (nodes) params["nodes"] = nodes;
    if (tasks_per_node) params["tasks_per_node"] = tasks_per_node;
    if (gpus_per_node) params["gpus_per_node"] = *gpus_per_node;
    if (shards) params["array"] = shards;
  }
};

int dispatch(Client& client, const std::vector<std::string>& args) {
  const std::string& verb = args[0];
  bool json = has_flag(args, "--json");
  if (verb == "clusters") {
    auto reply = client.request(MessageType::list_clusters);
    if (json) {
      std::cout << reply.dump(2) << "\n";
      return 0;
    }
    if (reply["clusters"].empty()) std::printf("no cluster profiles in %s\n", reply.value("dir", "").c_str());
    for (const auto& c : reply["clusters"])
      std::printf(
          "%-16s partition %-10s account %-10s time %-10s %d node(s) x %d task(s), %d GPU(s)/node%s%s%s\n",
          c["name"].get<std::string>().c_str(),
          c.value("partition", "").empty() ? "-" : c.value("partition", "").c_str(),
          c.value("account", "").empty() ? "-" : c.value("account", "").c_str(),
          c.value("time", "").empty() ? "-" : c.value("time", "").c_str(), c.value("nodes", 1),
          c.value("tasks_per_node", 1), c.value("gpus_per_node", 0),
          c.value("ssh_host", "").empty() ? "" : (", via ssh " + c.value("ssh_host", "")).c_str(),
          c.value("report", "files") == "files"
              ? ""
              : (", live link via " + c.value("server_endpoint", "")).c_str(),
          c.value("builtin", false) ? " (built in: the Slurm of the server's machine)" : "");
    for (const auto& p : reply["problems"])
      std::printf("unusable: %s\n", p["error"].get<std::string>().c_str());
    return 0;
  }
  if (verb == "presets") {
    nlohmann::json h = nlohmann::json::object();
    for (size_t i = 1; i < args.size(); ++i)
      if (!starts_with(args[i], "--")) h["kind"] = args[i];  // `presets --json models` as well
    auto reply = client.request(MessageType::list_presets, h);
    if (json)
      std::cout << reply["presets"].dump(2) << "\n";
    else
      print_presets(reply["presets"]);
    return 0;
  }
  if (verb == "doctor") {
    const auto reply = client.request(MessageType::check_machine);
    if (json)
      std::cout << reply.dump(2) << "\n";
    else
      print_doctor_report(reply);
    return reply.value("failures", 0) > 0 ? 1 : 0;
  }
  if (verb == "submit") {
    std::vector<std::string> rest(args.begin() + 1, args.end());
    JobSubmission submission;
    Placement placement;
    while (!rest.empty()) {
      if (rest[0] == "--priority" && rest.size() > 1) {
        submission.priority = std::atoi(rest[1].c_str());
        rest.erase(rest.begin(), rest.begin() + 2);
      } else if (rest[0] == "--after" && rest.size() > 1) {
        const auto ids = job_ids_of(rest[1]);
        submission.depends_on.insert(submission.depends_on.end(), ids.begin(), ids.end());
        rest.erase(rest.begin(), rest.begin() + 2);
      } else if (!placement.take(rest, 0)) {
        break;
      }
    }
    size_t used = 0;
    const Command* command = match_command(rest, &used);
    if (!command)
      throw Error(ErrorCode::usage, "submit needs a command, e.g. `submit make-dataset shapes --out DIR`");
    if (command->job_kind.empty()) {
      std::string name;
      for (const auto& w : command->words) name += (name.empty() ? "" : " ") + w;
      throw Error(ErrorCode::usage, name, "runs locally only; it cannot be submitted as a job");
    }
    std::vector<std::string> command_args(rest.begin() + static_cast<long>(used), rest.end());
    const ParamRegistry registry = command_registry(*command);
    for (size_t k = 0; k < command_args.size();) {
      const std::string flag = command_args[k].substr(0, command_args[k].find('='));
      if (starts_with(flag, "--") && !registry.find_by_flag(flag) && placement.take(command_args, k))
        continue;
      ++k;
    }
    auto arguments = parse_command_arguments(*command, command_args);
    placement.apply(arguments);
    submission.kind = command->job_kind;
    submission.params = arguments;
    const nlohmann::json job = submit_job(client, submission);
    if (json)
      std::cout << job.dump(2) << "\n";
    else
      std::printf("queued job %lld%s%s\n", static_cast<long long>(job["id"].get<int64_t>()),
                  placement.cluster.empty() ? "" : (" for Slurm cluster " + placement.cluster).c_str(),
                  waiting_note(job).c_str());
    return 0;
  }
  if (verb == "jobs") {
    nlohmann::json h = nlohmann::json::object();
    if (auto s = flag_value(args, "--state")) h["state"] = *s;
    auto reply = client.request(MessageType::list_jobs, h);
    if (json)
      std::cout << reply["jobs"].dump(2) << "\n";
    else
      for (const auto& j : reply["jobs"]) print_job_line(j);
    return 0;
  }
  if (verb == "show") {
    auto reply = get_job_with_events(client, job_id_arg(args, 1));
    if (json)
      std::cout << reply.dump(2) << "\n";
    else {
      print_job_line(reply["job"]);
      for (const auto& e : reply["events"])
        std::printf("  %-9s %s\n", e["type"].get<std::string>().c_str(), e["payload"].dump().c_str());
    }
    return 0;
  }
  if (verb == "watch") return watch(client, job_id_arg(args, 1));
  if (verb == "logs") {
    nlohmann::json h = {{"job", job_id_arg(args, 1)}};
    if (auto n = flag_value(args, "--tail")) h["tail_lines"] = std::atoll(n->c_str());
    std::cout << client.request(MessageType::job_logs, h)["text"].get<std::string>();
    return 0;
  }
  static const std::map<std::string, MessageType> simple = {{"cancel", MessageType::cancel_job},
                                                            {"pause", MessageType::pause_job},
                                                            {"resume", MessageType::resume_job},
                                                            {"retry", MessageType::retry_job}};
  auto it = simple.find(verb);
  if (it == simple.end())
    throw Error(ErrorCode::usage, verb, "unknown server command; see `mugv --server EP --help`");
  nlohmann::json h = {{"job", job_id_arg(args, 1)}};
  if (verb == "cancel" && has_flag(args, "--force")) h["force"] = true;
  auto reply = client.request(it->second, h);
  if (json)
    std::cout << reply.dump(2) << "\n";
  else
    std::printf("job %lld: %s%s\n", static_cast<long long>(reply["job"]["id"].get<int64_t>()),
                reply["job"]["state"].get<std::string>().c_str(),
                reply.value("cancelling", false) ? " (cancelling)" : "");
  return 0;
}

struct KeyOptions {
  std::optional<std::string> server_key, client_key;
};

// Takes the leading --server-key / --client-key options out of `args`.
KeyOptions take_key_options(std::vector<std::string>& args) {
  KeyOptions o;
  while (!args.empty() && (args[0] == "--server-key" || args[0] == "--client-key")) {
    if (args.size() < 2) throw Error(ErrorCode::usage, args[0], "needs a value");
    (args[0] == "--server-key" ? o.server_key : o.client_key) = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  return o;
}

// The CURVE credentials for a tcp:// endpoint; nullopt for other endpoints.
std::optional<CurveClientKeys> curve_credentials(const std::string& endpoint, KeyOptions o) {
  if (!starts_with(endpoint, "tcp://")) {
    if (o.server_key || o.client_key)
      throw Error(ErrorCode::usage, endpoint, "--server-key and --client-key are for tcp:// endpoints");
    return std::nullopt;
  }
  if (!o.server_key) {
    if (const char* env = std::getenv("MUGV_SERVER_KEY"); env && *env) o.server_key = env;
  }
  if (!o.server_key)
    throw Error(ErrorCode::usage, endpoint,
                "tcp:// servers require CURVE: pass --server-key KEY (the server prints its public key when "
                "it starts; "
                "`mugv keys list` on the server shows it)");
  CurveClientKeys keys;
  keys.server_public_key = public_key_from_text_or_file(*o.server_key, "--server-key");
  if (o.client_key) {
    keys.client = read_keypair(*o.client_key);
  } else {
    bool created = false;
    const fs::path dir = keys_dir(mugv_home());
    keys.client = load_or_create_keypair(dir, KeyRole::client, &created);
    if (created)
      std::cerr << "mugv: made a client key pair in " << secret_key_path(dir, KeyRole::client).string()
                << "; the server's owner authorises it with: mugv keys authorize " << keys.client.public_key
                << "\n";
  }
  return keys;
}

}  // namespace

int run_remote(const std::string& endpoint, const std::vector<std::string>& arguments) {
  std::vector<std::string> args = arguments;
  try {
    KeyOptions key_options = take_key_options(args);
    if (args.empty() || args[0] == "--help") {
      std::cout << kRemoteUsage;
      return args.empty() ? 2 : 0;
    }
    // The machine check measures for seconds on a server whose workers may be busy.
    const auto timeout = std::chrono::milliseconds(args[0] == "doctor" ? 120000 : 5000);
    Client client(endpoint, timeout, curve_credentials(endpoint, key_options));
    return dispatch(client, args);
  } catch (const Error& e) {
    std::cerr << "mugv --server " << endpoint << (args.empty() ? "" : " " + args[0]) << ": " << e.what()
              << "\n";
    return exit_code_for(e.code());
  }
}

}  // namespace mugv::cli
