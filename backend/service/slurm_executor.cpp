#include "service/slurm_executor.h"

#include "core/error.h"
#include "core/json_io.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/process.h"
#include "core/shell_quote.h"
#include "core/strings.h"
#include "parallel/slurm.h"
#include "service/file_reports.h"
#include "service/job_files.h"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

namespace mugv {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto kQueryInterval = 2s;
constexpr std::chrono::milliseconds kSubmitTimeout = 60s;  // sbatch through ssh to a busy controller
constexpr std::chrono::milliseconds kQueryTimeout = 20s;
constexpr int kMaxMisses = 5;  // queries in a row in which Slurm does not know the job before giving up on it
constexpr size_t kMaxLogBytesPerFile = 1u << 20;

// Slurm's command as this profile runs it. Through ssh the remote login shell reads the arguments as one
// command line, so they are quoted to reach it exactly as given; locally no shell is involved at all.
std::vector<std::string> slurm_argv(const ClusterProfile& profile, const std::vector<std::string>& argv) {
  std::vector<std::string> full = profile.command_prefix();
  if (full.empty()) return argv;
  full.push_back(shell_join(argv));
  return full;
}

std::string said(const ProcessResult& r) {
  return trim(r.err.empty() ? r.out : r.err);
}

// "JobId=5 ArrayTaskId=1 JobState=RUNNING Reason=None ..." (scontrol -o; these values hold no spaces)
std::string field_of(const std::string& line, const std::string& key) {
  const std::string needle = key + "=";
  for (size_t pos = 0; (pos = line.find(needle, pos)) != std::string::npos; pos += needle.size()) {
    if (pos != 0 && line[pos - 1] != ' ') continue;
    const size_t start = pos + needle.size();
    const size_t end = line.find(' ', start);
    return line.substr(start, end == std::string::npos ? std::string::npos : end - start);
  }
  return {};
}

struct TaskState {
  SlurmJobState s;
  int task = -1;  // array task index; -1 for a plain job or a record of several pending tasks
};

struct QueryOutcome {
  std::vector<TaskState> tasks;  // empty: Slurm does not know the job
  std::string error;             // the command could not run (not: the job is unknown)
};

int task_index(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::atoi(text.c_str());
}

QueryOutcome query(const ClusterProfile& profile, const std::string& id) {
  QueryOutcome q;
  try {
    ProcessResult r = run_process(slurm_argv(profile, {"scontrol", "show", "job", "-o", id}), kQueryTimeout);
    if (r.timed_out) {
      q.error = cat("scontrol did not answer within ", kQueryTimeout.count() / 1000, " s");
      return q;
    }
    if (r.exit_code == 0) {
      for (const auto& raw : split(r.out, '\n')) {
        const std::string line = trim(raw);
        if (line.empty()) continue;
        TaskState t{{field_of(line, "JobState"), field_of(line, "ExitCode"), field_of(line, "Reason"),
                     field_of(line, "NodeList")},
                    task_index(field_of(line, "ArrayTaskId"))};
        if (!t.s.state.empty()) q.tasks.push_back(std::move(t));
      }
      if (!q.tasks.empty()) return q;
    }
    // scontrol forgets finished jobs after MinJobAge; accounting, where configured, remembers them.
    ProcessResult acct = run_process(slurm_argv(profile, {"sacct", "-n", "-P", "-X", "-j", id, "-o",
                                                          "JobID,State,ExitCode,NodeList,Reason"}),
                                     kQueryTimeout);
    if (acct.exit_code == 0) {
      for (const auto& raw : split(acct.out, '\n')) {
        const auto cols = split(trim(raw), '|');
        if (cols.size() < 3 || trim(cols[1]).empty()) continue;
        TaskState t;
        const size_t underscore = cols[0].find('_');
        if (underscore != std::string::npos) t.task = task_index(cols[0].substr(underscore + 1));
        t.s.state = split(trim(cols[1]), ' ')[0];  // "CANCELLED by 0"
        t.s.exit_code = cols[2];
        if (cols.size() > 3) t.s.node_list = cols[3];
        if (cols.size() > 4) t.s.reason = cols[4];
        q.tasks.push_back(std::move(t));
      }
    }
  } catch (const Error& e) {
    q.error = e.what();
  }
  return q;
}

// One state for the whole job, array tasks included.
struct Overall {
  enum class Kind { pending, running, completed, failed, cancelled } kind = Kind::pending;
  TaskState deciding;  // the task whose state decided (the first failed one, ...)
};

Overall aggregate(const std::vector<TaskState>& tasks) {
  Overall o;
  bool all_finished = true, any_running = false;
  for (const auto& t : tasks) {
    if (!t.s.finished()) all_finished = false;
    if (starts_with(t.s.state, "RUNNING") || starts_with(t.s.state, "COMPLETING")) {
      any_running = true;
      if (o.deciding.s.state.empty()) o.deciding = t;
    }
  }
  if (!all_finished) {
    o.kind = any_running ? Overall::Kind::running : Overall::Kind::pending;
    if (o.deciding.s.state.empty() && !tasks.empty()) o.deciding = tasks.front();
    return o;
  }
  o.kind = Overall::Kind::completed;
  o.deciding = tasks.front();
  for (const auto& t : tasks) {
    if (starts_with(t.s.state, "COMPLETED")) continue;
    const bool cancelled = starts_with(t.s.state, "CANCELLED");
    if (o.kind == Overall::Kind::completed || (o.kind == Overall::Kind::cancelled && !cancelled)) {
      o.kind = cancelled ? Overall::Kind::cancelled : Overall::Kind::failed;
      o.deciding = t;
    }
  }
  return o;
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

int positive_field(const nlohmann::json& params, const char* key, int max) {
  auto it = params.find(key);
  if (it == params.end() || it->is_null()) return 0;
  if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > max)
    throw Error(ErrorCode::invalid_argument, cat("params.", key), cat("expected an integer from 1 to ", max));
  return static_cast<int>(it->get<int64_t>());
}

}  // namespace

std::optional<SlurmRequest> slurm_request_of(const nlohmann::json& params) {
  if (!params.is_object()) return std::nullopt;
  auto executor = params.find("executor");
  if (executor == params.end() || executor->is_null()) {
    if (params.contains("cluster"))
      throw Error(ErrorCode::invalid_argument, "params.cluster", "given without \"executor\": \"slurm\"");
    return std::nullopt;
  }
  if (!executor->is_string() || (*executor != "local" && *executor != "slurm"))
    throw Error(ErrorCode::invalid_argument, "params.executor", "expected \"local\" or \"slurm\"");
  if (*executor == "local") return std::nullopt;
  SlurmRequest r;
  auto cluster = params.find("cluster");
  if (cluster == params.end() || !cluster->is_string() || cluster->get<std::string>().empty())
    throw Error(ErrorCode::invalid_argument, "params.cluster",
                "a Slurm job needs the name of a cluster profile");
  r.cluster = cluster->get<std::string>();
  r.nodes = positive_field(params, "nodes", 10000);
  r.tasks_per_node = positive_field(params, "tasks_per_node", 1024);
  r.array = positive_field(params, "array", 10000);
  if (auto gpus = params.find("gpus_per_node"); gpus != params.end() && !gpus->is_null()) {
    if (!gpus->is_number_integer() || gpus->get<int64_t>() < 0 || gpus->get<int64_t>() > 1024)
      throw Error(ErrorCode::invalid_argument, "params.gpus_per_node", "expected an integer from 0 to 1024");
    r.gpus_per_node = static_cast<int>(gpus->get<int64_t>());
  }
  return r;
}

fs::path slurm_job_dir(const ClusterProfile& profile, int64_t job_id) {
  return profile.shared_dir / "slurm-jobs" / std::to_string(job_id);
}

struct SlurmExecutor::Impl {
  // Work runs on the helper thread and returns what to apply on the loop thread.
  using Work = std::function<std::function<void()>()>;

  struct Tracked {
    int64_t job_id = 0;
    ClusterProfile profile;
    fs::path dir;
    int array = 0;
    std::string slurm_id;  // empty while sbatch runs
    bool linked = false;   // a live link was granted (close_link when the job leaves)
    bool cancel_requested = false, cancel_sent = false, busy = false, query_warned = false;
    Clock::time_point next_query{};
    int misses = 0;
    std::string last_state;
    std::vector<EventsFileTail> tails;      // one per array task, or one
    std::map<int, nlohmann::json> results;  // the workers' result lines, by task (0 for a plain job)
    Clock::time_point last_progress_record{};
    int64_t last_metrics_step = -1;
  };

  Catalog& catalog;
  fs::path home, worker_executable;
  ShardPlanner planner;
  Hooks hooks;
  std::map<int64_t, Tracked> tracked;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Work> work;
  std::deque<std::function<void()>> done;
  bool stop = false;
  std::thread helper;

  Impl(Catalog& c, fs::path h, fs::path exe, ShardPlanner p, Hooks k)
      : catalog(c),
        home(std::move(h)),
        worker_executable(std::move(exe)),
        planner(std::move(p)),
        hooks(std::move(k)) {
    helper = std::thread([this] { helper_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    wake.notify_all();
    helper.join();
  }

  void helper_loop() {
    while (true) {
      Work next;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stop || !work.empty(); });
        if (stop) return;
        next = std::move(work.front());
        work.pop_front();
      }
      std::function<void()> apply = next();
      std::lock_guard<std::mutex> lock(mutex);
      done.push_back(std::move(apply));
    }
  }

  void post(Work w) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      work.push_back(std::move(w));
    }
    wake.notify_one();
  }

  // A line in the job's log (jobs/<id>/log.txt) and the server's log; also published as a log event.
  void note(int64_t job_id, const std::string& text, const char* level = "info") {
    std::error_code ec;
    fs::create_directories(job_dir(home, job_id), ec);
    std::ofstream(job_log_path(home, job_id), std::ios::app) << "[" << now_text() << "] " << text << "\n";
    log_info(cat("job ", job_id, ": ", text));
    hooks.publish(job_id, "log", {{"type", "log"}, {"level", level}, {"text", text}});
  }

  void check_fits(const ClusterProfile& p, const SlurmRequest& r) const {
    if (p.report == ReportMode::tcp) {
      if (!hooks.check_link || !hooks.open_link)
        throw Error(ErrorCode::unsupported, p.file.string(),
                    "key 'report': this server takes no live links; use \"files\"");
      hooks.check_link(p);
    }
    const int nodes = r.nodes ? r.nodes : p.nodes,
              tasks = r.tasks_per_node ? r.tasks_per_node : p.tasks_per_node;
    if (r.array > 0 && nodes * tasks > 1)
      throw Error(
          ErrorCode::invalid_argument, "params.array",
          cat("an array task is one process; this asks for ", nodes, " node(s) x ", tasks, " task(s)"));
  }

  ShardPlan plan(const std::string& kind, const nlohmann::json& params, int shards,
                 const fs::path& dir) const {
    if (!planner) throw Error(ErrorCode::unsupported, "params.array", "this server cannot shard jobs");
    ShardPlan p = planner(kind, params, shards, dir);
    if (static_cast<int>(p.task_values.size()) != shards)
      throw Error(ErrorCode::internal, "shard plan",
                  cat(p.task_values.size(), " task(s) planned for ", shards, " shards"));
    return p;
  }

  // Stops tracking a job; its live link, if any, is closed.
  void forget(int64_t job_id) {
    auto it = tracked.find(job_id);
    if (it == tracked.end()) return;
    const bool linked = it->second.linked;
    tracked.erase(it);
    if (linked && hooks.close_link) hooks.close_link(job_id);
  }

  Tracked* find(int64_t job_id) {
    auto it = tracked.find(job_id);
    return it == tracked.end() ? nullptr : &it->second;
  }

  void make_tails(Tracked& t) {
    t.tails.clear();
    if (t.array == 0) {
      t.tails.emplace_back(events_file(t.dir));
    } else {
      for (int i = 0; i < t.array; ++i) t.tails.emplace_back(events_file(t.dir / cat("task-", i)));
    }
  }

  void start(const Job& job) {
    JobStateChange starting;
    const auto cluster = job.params.find("cluster");
    starting.host = cluster != job.params.end() && cluster->is_string()
                        ? cat("slurm:", cluster->get<std::string>())
                        : "slurm";
    if (job.state == JobState::queued) hooks.transition(job.id, JobState::starting, starting);
    try {
      const auto request = slurm_request_of(job.params);
      if (!request) throw Error(ErrorCode::invalid_argument, "params.executor", "this is not a Slurm job");
      const SlurmRequest& req = *request;
      ClusterProfile p = find_cluster_profile(home, req.cluster);
      check_fits(p, req);
      const fs::path dir = slurm_job_dir(p, job.id);
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) throw Error(ErrorCode::io, dir.string(), cat("cannot create the job folder: ", ec.message()));
      // A retried job starts from clean reports; Slurm's logs of earlier attempts stay (they have other ids).
      fs::remove(events_file(dir), ec);
      for (int i = 0; i < std::max(req.array, 1); ++i) fs::remove_all(dir / cat("task-", i), ec);

      nlohmann::json file = {{"job", job.id},
                             {"command", job.params.at("command")},
                             {"values", job.params.value("values", nlohmann::json::object())},
                             {"positional", job.params.value("positional", nlohmann::json::array())}};
      if (req.array > 0) file["array"] = plan(to_string(job.kind), job.params, req.array, dir).task_values;
      // A live link for this submission only: a retry gets a new key and token, which fences off the
      // workers of earlier ones.
      fs::remove(remote_link_file(dir), ec);
      const bool link = p.report == ReportMode::tcp && req.array == 0;
      if (link) {
        write_remote_link_file(remote_link_file(dir), hooks.open_link(job.id, p));
        file["link"] = true;
      }
      write_json_atomic(dir / "job.json", file);

      SlurmJob sj;
      sj.name = cat("mugv-", job.id);
      sj.nodes = req.nodes ? req.nodes : p.nodes;
      sj.tasks_per_node = req.tasks_per_node ? req.tasks_per_node : p.tasks_per_node;
      sj.gpus_per_node = req.gpus_per_node.value_or(p.gpus_per_node);
      sj.cpus_per_task = p.cpus_per_task;
      sj.partition = p.partition;
      sj.account = p.account;
      sj.time = p.time;
      sj.output = dir / (req.array > 0 ? "slurm-%A_%a.out" : "slurm-%j.out");
      sj.working_dir = dir;
      sj.environment["MUGV_HOME"] = fs::absolute(home).string();
      sj.setup_lines = p.setup_lines;
      sj.command = {fs::absolute(worker_executable).string(), "--job-file", (dir / "job.json").string(),
                    "--report-dir", dir.string()};
      const fs::path script = dir / "job.sbatch";
      write_text_atomic(script, sbatch_script(sj));

      Tracked t;
      t.job_id = job.id;
      t.profile = p;
      t.dir = dir;
      t.array = req.array;
      t.linked = link;
      make_tails(t);
      tracked[job.id] = std::move(t);
      note(job.id, cat("submitting to Slurm (cluster ", p.name, ", ", sj.nodes, " node(s) x ",
                       sj.tasks_per_node, " task(s)",
                       req.array ? cat(", array of ", req.array) : std::string(), "): ", script.string()));
      submit(job.id, p, script, req.array);
    } catch (const Error& e) {
      if (!find(job.id) && hooks.close_link) hooks.close_link(job.id);  // a grant made before the failure
      fail(job.id, e.code(), e.what());
    }
  }

  void submit(int64_t job_id, const ClusterProfile& p, const fs::path& script, int array) {
    post([this, job_id, p, script, array]() -> std::function<void()> {
      std::vector<std::string> argv = {"sbatch", "--parsable"};
      if (array > 0) argv.push_back(cat("--array=0-", array - 1));
      argv.push_back(script.string());
      std::string id, problem;
      ErrorCode code = ErrorCode::invalid_argument;
      try {
        ProcessResult r = run_process(slurm_argv(p, argv), kSubmitTimeout);
        if (r.timed_out) {
          code = ErrorCode::timeout;
          problem = cat("sbatch did not answer within ", kSubmitTimeout.count() / 1000, " s");
        } else if (r.exit_code != 0) {
          problem = cat("sbatch refused ", script.string(), ": ", said(r));
        } else {
          id = trim(r.out);
          if (auto semicolon = id.find(';'); semicolon != std::string::npos)
            id = id.substr(0, semicolon);  // "id;cluster"
          if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
            code = ErrorCode::protocol;
            problem = cat("sbatch answered '", trim(r.out), "' instead of a job id");
          }
        }
      } catch (const Error& e) {
        code = e.code();
        problem = e.what();
      }
      return [this, job_id, id, problem, code] {
        if (problem.empty())
          submitted(job_id, id);
        else
          fail(job_id, code, problem);
      };
    });
  }

  void submitted(int64_t job_id, const std::string& slurm_id) {
    Tracked* t = find(job_id);
    if (!t) return;
    t->slurm_id = slurm_id;
    t->next_query = Clock::now();
    const auto job = get_job(catalog, job_id);
    (void)append_job_event(catalog, job_id, "slurm",
                           {{"slurm_job", slurm_id},
                            {"cluster", t->profile.name},
                            {"dir", t->dir.string()},
                            {"array", t->array},
                            {"attempt", job ? job->attempts : 0}});
    note(job_id, cat("Slurm job ", slurm_id, " submitted; its output: ",
                     (t->dir / cat("slurm-", slurm_id, t->array ? "_*" : "", ".out")).string()));
    if (t->cancel_requested) send_cancel(*t);
  }

  // Ends a job that never reached Slurm, or that Slurm lost.
  void fail(int64_t job_id, ErrorCode code, const std::string& message) {
    Tracked* t = find(job_id);
    const bool cancelled = t && t->cancel_requested;
    forget(job_id);
    auto job = get_job(catalog, job_id);
    if (!job || is_terminal(job->state)) return;
    JobStateChange c;
    if (!cancelled) {
      c.error_code = code;
      c.error_message = message;
    }
    note(job_id, cancelled ? std::string("cancelled before Slurm took it") : message,
         cancelled ? "info" : "error");
    hooks.transition(job_id, cancelled ? JobState::cancelled : JobState::failed, c);
  }

  void send_cancel(Tracked& t) {
    t.cancel_sent = true;
    const int64_t job_id = t.job_id;
    const ClusterProfile p = t.profile;
    const std::string id = t.slurm_id;
    post([this, job_id, p, id]() -> std::function<void()> {
      std::string problem;
      try {
        ProcessResult r = run_process(slurm_argv(p, {"scancel", id}), kQueryTimeout);
        if (r.timed_out)
          problem = "scancel did not answer in time";
        else if (r.exit_code != 0)
          problem = cat("scancel ", id, ": ", said(r));
      } catch (const Error& e) {
        problem = e.what();
      }
      return [this, job_id, problem] {
        Tracked* t = find(job_id);
        if (!t) return;
        t->next_query = Clock::now();
        if (problem.empty()) {
          note(job_id, cat("scancel ", t->slurm_id, " sent"));
        } else {
          t->cancel_sent = false;  // a second cancel request tries again
          note(job_id, problem, "error");
        }
      };
    });
  }

  void send_query(Tracked& t) {
    t.busy = true;
    const int64_t job_id = t.job_id;
    const ClusterProfile p = t.profile;
    const std::string id = t.slurm_id;
    post([this, job_id, p, id]() -> std::function<void()> {
      QueryOutcome q = query(p, id);
      return [this, job_id, q] { queried(job_id, q); };
    });
  }

  void queried(int64_t job_id, const QueryOutcome& q) {
    Tracked* t = find(job_id);
    if (!t) return;
    t->busy = false;
    t->next_query = Clock::now() + kQueryInterval;
    if (!q.error.empty()) {
      if (!t->query_warned)
        note(job_id, cat("cannot ask Slurm about job ", t->slurm_id, ": ", q.error), "warning");
      t->query_warned = true;
      return;
    }
    if (q.tasks.empty()) {
      if (++t->misses >= kMaxMisses) lost(*t);
      return;
    }
    t->misses = 0;
    const Overall o = aggregate(q.tasks);
    // One word for a job; for an array, how many tasks are in each state (an array may have thousands).
    std::string summary;
    if (t->array == 0) {
      summary = q.tasks.front().s.state;
    } else {
      std::map<std::string, int> count;
      for (const auto& task : q.tasks) count[task.s.state] += task.task >= 0 ? 1 : 0;
      for (const auto& [state, n] : count)
        summary += cat(summary.empty() ? "" : ", ", state, n ? cat(" ", n) : std::string(),
                       n == 1 ? " task"
                       : n    ? " tasks"
                              : "");
    }
    if (summary != t->last_state) {
      const std::string& reason = o.deciding.s.reason;
      note(job_id, cat("Slurm job ", t->slurm_id, ": ", summary,
                       reason.empty() || reason == "None" ? std::string() : cat(" (", reason, ")"),
                       o.deciding.s.node_list.empty() || o.deciding.s.node_list == "(null)"
                           ? std::string()
                           : cat(" on ", o.deciding.s.node_list)));
      t->last_state = summary;
    }
    if (o.kind == Overall::Kind::pending) return;
    auto job = get_job(catalog, job_id);
    if (!job || is_terminal(job->state)) {
      forget(job_id);
      return;
    }
    if (job->state == JobState::starting &&
        (o.kind == Overall::Kind::running || o.kind == Overall::Kind::completed)) {
      JobStateChange c;
      c.host = cat("slurm:", t->profile.name, ":", o.deciding.s.node_list);
      hooks.transition(job_id, JobState::running, c);
    }
    if (o.kind != Overall::Kind::running) finish(*t, o);
  }

  // Slurm ended the job: drain the workers' last lines, then decide.
  void finish(Tracked& t, const Overall& o) {
    read_events(t, false);
    const int64_t job_id = t.job_id;
    // A job paused over its live link can still end (a time limit, scancel): a paused job ends as running.
    if (auto job = get_job(catalog, job_id); job && job->state == JobState::paused)
      hooks.transition(job_id, JobState::running, {});
    JobStateChange c;
    const std::string code_text = o.deciding.s.exit_code;
    if (!code_text.empty()) c.exit_code = std::atoi(code_text.c_str());
    if (o.kind == Overall::Kind::completed) {
      if (t.array > 0) queue_follow_up(t);
      hooks.transition(job_id, JobState::succeeded, c);
    } else if (o.kind == Overall::Kind::cancelled) {
      hooks.transition(job_id, JobState::cancelled, c);
    } else {
      const std::string& state = o.deciding.s.state;
      std::string message = cat(
          "Slurm job ", t.slurm_id, o.deciding.task >= 0 ? cat(" task ", o.deciding.task) : "", " ", state,
          " (exit code ", code_text.empty() ? "?" : code_text,
          o.deciding.s.reason.empty() || o.deciding.s.reason == "None" ? "" : cat(", ", o.deciding.s.reason),
          ")");
      c.error_code = starts_with(state, "TIMEOUT")         ? ErrorCode::timeout
                     : starts_with(state, "OUT_OF_MEMORY") ? ErrorCode::out_of_memory
                                                           : ErrorCode::internal;
      // The worker's own words say why, where it got to say them.
      auto result = t.results.find(std::max(o.deciding.task, 0));
      if (result != t.results.end() && result->second.value("state", "") != "succeeded") {
        message += cat(": ", result->second.value("message", ""));
        c.error_code = error_code_from_string(result->second.value("error_code", "")).value_or(*c.error_code);
      }
      c.error_message = message;
      hooks.transition(job_id, JobState::failed, c);
    }
    forget(job_id);
  }

  // Every task of an array succeeded: queue the job that brings the shards together.
  void queue_follow_up(Tracked& t) {
    auto job = get_job(catalog, t.job_id);
    if (!job) return;
    try {
      ShardPlan p = plan(to_string(job->kind), job->params, t.array, t.dir);
      if (p.follow_up.is_null()) return;
      Job next;
      next.kind = job_kind_from_string(p.follow_up.at("kind").get<std::string>()).value_or(JobKind::unknown);
      next.params = p.follow_up.at("params");
      next.priority = job->priority;
      next = hooks.enqueue(next);
      (void)append_job_event(catalog, t.job_id, "result", {{"shards", t.array}, {"follow_up_job", next.id}});
      note(t.job_id, cat("all ", t.array, " shards done; job ", next.id, " merges them"));
    } catch (const std::exception& e) {
      note(t.job_id, cat("all shards done, but the merge job could not be queued: ", e.what()), "error");
    }
  }

  // Slurm no longer knows the job (purged, or a different controller): the workers' result lines decide.
  void lost(Tracked& t) {
    read_events(t, false);
    std::vector<TaskState> tasks;
    for (int i = 0; i < std::max(t.array, 1); ++i) {
      auto r = t.results.find(i);
      if (r == t.results.end()) {
        fail(t.job_id, ErrorCode::internal,
             cat("Slurm no longer knows job ", t.slurm_id, " and its worker",
                 t.array ? cat(" for task ", i) : "", " left no result in ", t.dir.string()));
        return;
      }
      const std::string state = r->second.value("state", "");
      TaskState ts;
      ts.task = t.array ? i : -1;
      ts.s.state = state == "succeeded" ? "COMPLETED" : state == "cancelled" ? "CANCELLED" : "FAILED";
      tasks.push_back(ts);
    }
    auto job = get_job(catalog, t.job_id);
    if (job && job->state == JobState::starting) hooks.transition(t.job_id, JobState::running, {});
    finish(t, aggregate(tasks));
  }

  void read_events(Tracked& t, bool catching_up) {
    for (size_t i = 0; i < t.tails.size(); ++i)
      for (auto& e : t.tails[i].read_new())
        on_event(t, t.array ? static_cast<int>(i) : -1, std::move(e), catching_up);
  }

  // One line a worker appended. While catching up after a restart, what subscribers saw live (progress, logs)
  // is not replayed and metrics already recorded are not recorded twice.
  void on_event(Tracked& t, int task, nlohmann::json e, bool catching_up) {
    const std::string type = e.value("type", "");
    e.erase("time_ms");
    if (task >= 0) e["task"] = task;
    if (type == "progress") {
      if (catching_up) return;
      hooks.publish(t.job_id, "", e);
      if (Clock::now() - t.last_progress_record > 1s) {
        (void)append_job_event(catalog, t.job_id, "progress", e);
        t.last_progress_record = Clock::now();
      }
    } else if (type == "metrics") {
      const int64_t step = e.value("step", int64_t(0));
      if (catching_up && step <= t.last_metrics_step) return;
      t.last_metrics_step = std::max(t.last_metrics_step, step);
      nlohmann::json payload = {{"step", step}, {"values", e.value("values", nlohmann::json::object())}};
      (void)append_job_event(catalog, t.job_id, "metrics", payload);
      payload["type"] = "metrics";
      hooks.publish(t.job_id, "metrics", payload);
    } else if (type == "log") {
      if (catching_up) return;
      const std::string text = e.value("text", "");
      hooks.publish(t.job_id, "log",
                    {{"type", "log"},
                     {"level", e.value("level", "info")},
                     {"text", task >= 0 ? cat("[task ", task, "] ", text) : text}});
    } else if (type == "result") {
      t.results[std::max(task, 0)] = e;
      if (e.contains("result") && e["result"].is_object() && !catching_up)
        (void)append_job_event(catalog, t.job_id, "result", e["result"]);
    }
  }

  bool reattach(const Job& job) {
    std::optional<SlurmRequest> req;
    try {
      req = slurm_request_of(job.params);
    } catch (const Error&) {
    }
    if (!req) return false;
    std::optional<nlohmann::json> submission;
    int64_t last_metrics_step = -1;
    for (const auto& e : list_job_events(catalog, job.id)) {
      if (e.type == "slurm" && e.payload.value("attempt", -1) == job.attempts) submission = e.payload;
      if (e.type == "metrics")
        last_metrics_step = std::max(last_metrics_step, e.payload.value("step", int64_t(-1)));
    }
    if (!submission) return false;
    Tracked t;
    t.job_id = job.id;
    try {
      t.profile = find_cluster_profile(home, req->cluster);
    } catch (const Error& e) {
      // Still followed with Slurm's commands run here; the stored folder says where its reports are.
      log_warning(cat("job ", job.id, ": ", e.what()));
      t.profile.name = req->cluster;
    }
    t.dir = submission->value("dir", "");
    t.slurm_id = submission->value("slurm_job", "");
    t.array = submission->value("array", 0);
    t.last_metrics_step = last_metrics_step;
    t.next_query = Clock::now();
    std::error_code ec;
    if (fs::exists(remote_link_file(t.dir), ec) && hooks.readmit_link) {
      try {
        hooks.readmit_link(job.id, read_remote_link_file(remote_link_file(t.dir)));
        t.linked = true;
      } catch (const Error& e) {
        note(job.id, cat("its worker's live link cannot be taken back (", e.what(), "); files only"),
             "warning");
      }
    }
    make_tails(t);
    read_events(t, true);
    tracked[job.id] = std::move(t);
    note(job.id, cat("server restarted; following Slurm job ", submission->value("slurm_job", ""), " again"));
    return true;
  }

  void poll() {
    std::deque<std::function<void()>> ready;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ready.swap(done);
    }
    // A failure here is one job's problem (a damaged catalog row, a conflicting state): it is logged and the
    // loop goes on, so one job can never stop the server.
    for (auto& apply : ready) {
      try {
        apply();
      } catch (const std::exception& e) {
        log_error(cat("Slurm executor: ", e.what()));
      }
    }
    const auto now = Clock::now();
    for (auto& [id, t] : tracked) {
      try {
        read_events(t, false);
        if (!t.slurm_id.empty() && !t.busy && now >= t.next_query) send_query(t);
      } catch (const std::exception& e) {
        log_error(cat("job ", id, ": Slurm executor: ", e.what()));
      }
    }
  }

  std::string slurm_output(const Job& job) const {
    std::optional<nlohmann::json> submission;
    for (const auto& e : list_job_events(catalog, job.id))
      if (e.type == "slurm") submission = e.payload;
    if (!submission) return {};
    const fs::path dir = submission->value("dir", "");
    const std::string prefix = cat("slurm-", submission->value("slurm_job", ""));
    std::vector<fs::path> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (starts_with(name, prefix) && ends_with(name, ".out") &&
          (name.size() == prefix.size() + 4 || name[prefix.size()] == '_'))
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& f : files) {
      std::string body;
      try {
        body = read_text_file(f);
      } catch (const Error& e) {
        body = cat(e.what(), "\n");
      }
      if (body.size() > kMaxLogBytesPerFile) body = body.substr(body.size() - kMaxLogBytesPerFile);
      text += cat("==> ", f.string(), " <==\n", body);
      if (!body.empty() && body.back() != '\n') text += "\n";
    }
    return text;
  }
};

SlurmExecutor::SlurmExecutor(Catalog& catalog, fs::path home, fs::path worker_executable,
                             ShardPlanner planner, Hooks hooks)
    : impl_(std::make_unique<Impl>(catalog, std::move(home), std::move(worker_executable), std::move(planner),
                                   std::move(hooks))) {}

SlurmExecutor::~SlurmExecutor() = default;

void SlurmExecutor::check(const std::string& kind, const nlohmann::json& params) const {
  auto req = slurm_request_of(params);
  if (!req) return;
  const ClusterProfile p = find_cluster_profile(impl_->home, req->cluster);
  impl_->check_fits(p, *req);
  if (req->array > 0) (void)impl_->plan(kind, params, req->array, slurm_job_dir(p, 0));
}

void SlurmExecutor::start(const Job& job) {
  impl_->start(job);
}

bool SlurmExecutor::cancel(int64_t job_id) {
  Impl::Tracked* t = impl_->find(job_id);
  if (!t) return false;
  t->cancel_requested = true;
  if (!t->slurm_id.empty() && !t->cancel_sent) impl_->send_cancel(*t);
  return true;
}

bool SlurmExecutor::tracks(int64_t job_id) const {
  return impl_->tracked.count(job_id) > 0;
}

bool SlurmExecutor::reattach(const Job& job) {
  return impl_->reattach(job);
}

void SlurmExecutor::poll() {
  impl_->poll();
}

std::string SlurmExecutor::slurm_output(const Job& job) const {
  return impl_->slurm_output(job);
}

size_t SlurmExecutor::tracked_count() const {
  return impl_->tracked.size();
}

}  // namespace mugv
