#include "service/server.h"

#include "catalog/catalog.h"
#include "catalog/jobs.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/cluster_profiles.h"
#include "service/curve_keys.h"
#include "service/frame_requests.h"
#include "service/home_lock.h"
#include "service/job_files.h"
#include "service/job_json.h"
#include "service/library_requests.h"
#include "service/remote_link.h"
#include "service/reply_pool.h"
#include "service/server_endpoints.h"
#include "service/zap_handler.h"
#include "service/zmq_io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>

namespace mugv {

using protocol::Message;
using protocol::MessageType;
using Clock = std::chrono::steady_clock;

namespace {

struct WorkerEntry {
  int64_t job_id = 0;
  pid_t pid = 0;
  bool child = true;     // false: adopted from a previous server run (not our child)
  std::string identity;  // ROUTER identity once the worker said hello
  // The secret of this attempt's worker (job_files.h); empty for a worker adopted from a server that issued
  // none, which is then taken on its word as before.
  std::string token;
  Clock::time_point started, last_heartbeat;
  std::optional<Clock::time_point> kill_at;  // after a cancel request
  bool cancel_requested = false;
  std::optional<JobState> reported;  // what the worker said in job_finished
  std::string error_code, message;
  Clock::time_point last_progress_event{};
};

// A Slurm job's worker that may connect back over tcp (remote_link.h): admitted by its key, proven by its
// token, bound to the connection it said hello on. Slurm, not the server, decides when it is alive or done.
struct RemoteWorker {
  std::string token, public_key;
  std::string identity;  // ROUTER identity once it said hello
};

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

bool process_alive(int64_t pid) {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0;
}

std::string read_if_exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec) ? read_text_file(path) : std::string();
}

constexpr size_t kMaxHeavyRequests = 16;  // clip_frames decoding or waiting at once; more are told "busy"
constexpr size_t kMaxLogReplyBytes = 128 * 1024;
constexpr size_t kMaxEventPageBytes = 256 * 1024;  // an event's own payload is far smaller than a header
static_assert(kMaxLogReplyBytes * 6 < protocol::kMaxHeaderBytes, "an escaped log tail must fit a header");

std::string tail_lines(const std::string& text, int64_t lines) {
  size_t pos = text.size();
  if (!text.empty() && text.back() == '\n') --pos;
  for (int64_t n = 0; n < lines && pos != std::string::npos && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? text : text.substr(pos + 1);
}

}  // namespace

struct Server::Impl {
  ServerOptions o;
  std::optional<HomeLock> home_lock;  // held while the server runs
  std::optional<PathConfinement> confinement;
  std::optional<ServerEndpoints> net;  // the sockets, once bound
  std::optional<Catalog> catalog;
  // After the catalog: destroyed before it (they hold a reference).
  std::unique_ptr<SlurmExecutor> slurm;
  std::optional<LibraryRequests> library;
  std::optional<FrameRequests> frames;  // after the confinement too
  bool slurm_queued =
      true;  // a Slurm job may wait in the queue (submitted, retried or requeued since the last scan)
  // Heavy requests (decoding frames, probing sample videos) run here; declared after the sockets (net) so
  // that its threads, which never touch a socket, are joined before the sockets close.
  ReplyPool heavy{2, kMaxHeavyRequests};
  std::map<int64_t, WorkerEntry> workers;          // by job id
  std::map<std::string, std::string> peers;        // identity -> role, after hello
  std::map<std::string, int64_t> worker_jobs;      // identity of a worker -> the one job it proved it runs
  std::map<int64_t, RemoteWorker> remote_workers;  // by job id: Slurm workers with a live link
  std::string host = host_name();
  bool stopping = false;

  // Every path a submitted job would touch must be inside home or an allowed root (server.h).
  void check_job_paths(const std::string& kind, const nlohmann::json& params) {
    if (!o.job_paths) return;
    for (const JobPath& p : o.job_paths(kind, params)) confinement->check(p.what, p.path);
  }

  void publish_event(int64_t job_id, const std::string& subtopic, nlohmann::json payload,
                     std::vector<std::string> blobs = {}) {
    std::string topic = subtopic.empty() ? cat("job/", job_id) : cat("job/", job_id, "/", subtopic);
    Message m;
    m.type = MessageType::event;
    payload["topic"] = topic;
    payload["job"] = job_id;
    m.header = std::move(payload);
    m.blobs = std::move(blobs);
    protocol::publish(net->pub(), topic, m);
  }

  void publish_state(const Job& job) {
    nlohmann::json j = to_json(job);
    publish_event(job.id, "", {{"type", "state"}, {"state", to_string(job.state)}, {"job_info", j}});
  }

  // Records and publishes a state change, and the queued dependents a cancellation took along.
  Job transition(int64_t id, JobState to, const JobStateChange& change = {}) {
    const JobTransition t = transition_job(*catalog, id, to, change);
    publish_state(t.job);
    for (const Job& dependent : t.cancelled_dependents) publish_state(dependent);
    // A success may make a waiting Slurm job ready.
    slurm_queued = slurm_queued || to == JobState::succeeded;
    return t.job;
  }

  // Jobs whose worker is gone (a crash of the server, a reboot) become interrupted and, by policy, queued.
  void recover() {
    for (JobState s : {JobState::starting, JobState::running, JobState::paused}) {
      for (const Job& job : list_jobs(*catalog, s)) {
        if (is_slurm_job(job)) {
          if (slurm->reattach(job)) continue;
          JobStateChange c;
          c.error_code = ErrorCode::internal;
          c.error_message = "the server restarted before Slurm took the job";
          interrupt(job.id, c);
          continue;
        }
        if (job.worker_pid && process_alive(*job.worker_pid) && job.host == host) {
          WorkerEntry w;
          w.job_id = job.id;
          w.pid = static_cast<pid_t>(*job.worker_pid);
          w.child = false;
          w.token = read_worker_token(o.home, job.id).value_or("");
          w.started = w.last_heartbeat = Clock::now();
          workers[job.id] = w;
          log_info(cat("job ", job.id, ": worker ", w.pid, " still running; waiting for it to reconnect"));
          continue;
        }
        if (auto r = current_result(job.id, read_worker_token(o.home, job.id).value_or(""))) {
          apply_result(job.id, *r, std::nullopt);
          continue;
        }
        JobStateChange c;
        c.error_code = ErrorCode::internal;
        c.error_message = "the worker is gone (the server restarted while it ran)";
        interrupt(job.id, c);
      }
    }
  }

  void interrupt(int64_t id, const JobStateChange& change) {
    Job job = transition(id, JobState::interrupted, change);
    if (job.attempts < o.max_attempts) {
      transition(id, JobState::queued);
      slurm_queued = slurm_queued || is_slurm_job(job);
      log_info(
          cat("job ", id, ": interrupted, requeued (attempt ", job.attempts, " of ", o.max_attempts, ")"));
    }
  }

  // The job's result file when the worker holding `token` wrote it; a result stamped by another attempt's
  // worker (a stale one that outlived its turn) is ignored.
  std::optional<JobResult> current_result(int64_t job_id, const std::string& token) {
    auto r = read_job_result(o.home, job_id);
    if (r && !token.empty() && !secrets_equal(r->worker_token, token)) {
      log_warning(cat("job ", job_id, ": ignoring a result written by a superseded worker"));
      return std::nullopt;
    }
    return r;
  }

  // Whether a message carries `token` (a worker's proof of the job it runs).
  static bool shows_token(const Message& m, const std::string& token) {
    const auto it = m.header.find("token");
    return it != m.header.end() && it->is_string() && secrets_equal(it->get<std::string>(), token);
  }
  // Whether a worker's message carries the token of the job's current worker.
  static bool proves(const WorkerEntry& w, const Message& m) {
    return w.token.empty() || shows_token(m, w.token);  // empty: adopted from a server that issued no tokens
  }

  void refuse_worker(const std::string& identity, int64_t job_id) {
    log_warning(cat("job ", job_id, ": refused a worker without this attempt's token (stale or foreign)"));
    protocol::send(
        net->router(), {identity},
        protocol::make_error(kSupersededCode,
                             cat("job ", job_id, " is run by another worker; this one must stop")));
  }

  void spawn(const Job& job) {
    std::error_code ec;
    fs::create_directories(job_dir(o.home, job.id), ec);
    fs::remove(job_result_path(o.home, job.id),
               ec);  // a previous attempt's result must not answer for this one
    std::string token;
    try {
      token = issue_worker_token(o.home, job.id);  // fences off any worker of an earlier attempt
    } catch (const Error& e) {
      JobStateChange c;
      c.error_code = e.code();
      c.error_message = e.what();
      transition(job.id, JobState::failed, c);
      return;
    }
    std::string log_path = job_log_path(o.home, job.id).string();
    std::string exe = o.worker_executable.string();
    std::string endpoint = net->worker_endpoint();
    std::string id = std::to_string(job.id);
    std::string home = o.home.string();
    const std::string roots = confinement->to_json().dump();
    pid_t pid = ::fork();
    if (pid == 0) {
      ::setsid();  // workers outlive a server stopped from a terminal
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      ::setenv("MUGV_HOME", home.c_str(), 1);
      ::setenv(kWorkerTokenEnv, token.c_str(), 1);
      ::setenv(kJobRootsEnv, roots.c_str(), 1);
      ::execl(exe.c_str(), exe.c_str(), "--server", endpoint.c_str(), "--job", id.c_str(),
              static_cast<char*>(nullptr));
      std::fprintf(stderr, "cannot start the worker %s\n", exe.c_str());
      ::_exit(127);
    }
    if (pid < 0) {
      JobStateChange c;
      c.error_code = ErrorCode::io;
      c.error_message = "cannot fork a worker process";
      transition(job.id, JobState::failed, c);
      return;
    }
    WorkerEntry w;
    w.job_id = job.id;
    w.pid = pid;
    w.token = std::move(token);
    w.started = w.last_heartbeat = Clock::now();
    workers[job.id] = w;
    log_info(cat("job ", job.id, " (", to_string(job.kind), "): worker pid ", pid));
  }

  // A job whose params name any executor but "local" is the Slurm executor's: a damaged row then fails there
  // with the reason rather than running here by mistake.
  static bool is_slurm_job(const Job& job) {
    auto it = job.params.find("executor");
    return (it != job.params.end() && *it != "local") || job.params.contains("cluster");
  }

  // False when the job could not even leave the queue (the caller stops scheduling for this turn).
  bool start_slurm(const Job& job) {
    try {
      slurm->start(job);
      return true;
    } catch (const std::exception& e) {
      log_error(cat("job ", job.id, ": cannot start on Slurm: ", e.what()));
      return false;
    }
  }

  void schedule() {
    if (stopping) return;
    // Slurm jobs take no local slot: they leave the queue as soon as they are ready (their dependencies have
    // succeeded), whatever runs here.
    if (slurm_queued) {
      slurm_queued = false;
      for (const Job& job : list_ready_jobs(*catalog))
        if (is_slurm_job(job) && !start_slurm(job)) {
          slurm_queued = true;  // try again next turn
          break;
        }
    }
    while (static_cast<int>(workers.size()) < o.max_local_jobs) {
      auto next = next_queued_job(*catalog);
      if (!next) return;
      if (is_slurm_job(*next)) {
        if (!start_slurm(*next)) return;
        continue;
      }
      auto job = claim_next_job(*catalog, 0, host);
      if (!job) return;
      publish_state(*job);
      spawn(*job);
    }
  }

  void apply_result(int64_t id, const JobResult& r, std::optional<int> exit_code) {
    JobStateChange c;
    c.exit_code = exit_code;
    if (r.state != JobState::succeeded) {
      c.error_code = error_code_from_string(r.error_code).value_or(ErrorCode::unknown);
      c.error_message = r.message;
    }
    transition(id, r.state, c);
  }

  // Decides a job's final state from what its worker reported (message or result file) and how it ended.
  void finish(WorkerEntry& w, std::optional<int> exit_code, std::optional<int> signal) {
    auto job = get_job(*catalog, w.job_id);
    if (!job || is_terminal(job->state)) return;
    if (!w.reported) {
      if (auto r = current_result(w.job_id, w.token)) {
        w.reported = r->state;
        w.error_code = r->error_code;
        w.message = r->message;
      }
    }
    JobStateChange c;
    c.exit_code = exit_code;
    if (w.reported) {
      apply_result(w.job_id, JobResult{*w.reported, w.error_code, w.message, nullptr, w.token}, exit_code);
    } else if (w.cancel_requested) {
      transition(w.job_id, JobState::cancelled, c);
    } else if (signal || !exit_code) {
      c.error_code = ErrorCode::internal;
      c.error_message = signal ? cat("the worker was killed by signal ", *signal,
                                     *signal == SIGKILL ? " (SIGKILL: out of memory, or killed)" : "")
                               : std::string("the worker disappeared without a result");
      interrupt(w.job_id, c);
    } else {
      c.error_code = ErrorCode::internal;
      c.error_message = cat("the worker exited with code ", exit_code.value_or(-1),
                            " without reporting a result; see the job log");
      transition(w.job_id, JobState::failed, c);
    }
  }

  void reap() {
    for (auto it = workers.begin(); it != workers.end();) {
      WorkerEntry& w = it->second;
      bool gone = false;
      std::optional<int> code, sig;
      if (w.child) {
        int status = 0;
        pid_t r = ::waitpid(w.pid, &status, WNOHANG);
        if (r == w.pid) {
          gone = true;
          if (WIFEXITED(status)) code = WEXITSTATUS(status);
          if (WIFSIGNALED(status)) sig = WTERMSIG(status);
        }
      } else {
        int status = 0;
        pid_t r = ::waitpid(w.pid, &status, WNOHANG);  // our child after all (same process), or ECHILD
        if (r == w.pid || !process_alive(w.pid)) {
          gone = true;
          if (r == w.pid && WIFEXITED(status))
            code = WEXITSTATUS(status);
          else if (r == w.pid && WIFSIGNALED(status))
            sig = WTERMSIG(status);
        }
      }
      if (gone) {
        finish(w, code, sig);
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
  }

  void check_liveness() {
    auto now = Clock::now();
    auto silence_limit = o.heartbeat_interval * o.missed_heartbeats;
    auto startup_limit = std::max<Clock::duration>(silence_limit, std::chrono::seconds(60));
    for (auto& [id, w] : workers) {
      bool silent =
          w.identity.empty() ? now - w.started > startup_limit : now - w.last_heartbeat > silence_limit;
      bool overdue = w.kill_at && now > *w.kill_at;
      if (silent || overdue) {
        if (silent && !w.cancel_requested)
          log_warning(cat("job ", id, ": worker ", w.pid, " missed ", o.missed_heartbeats,
                          " heartbeats; killing it"));
        ::kill(w.pid, SIGKILL);
        w.kill_at.reset();
        w.last_heartbeat = now;  // one kill per silence
      }
    }
  }

  void control(const std::string& identity, int64_t job_id, const std::string& action) {
    if (identity.empty()) return;
    Message m;
    m.type = MessageType::control;
    m.header = {{"job", job_id}, {"action", action}};
    protocol::send(net->router(), {identity}, m);
  }
  void control(WorkerEntry& w, const std::string& action) { control(w.identity, w.job_id, action); }

  // --- Live links of Slurm workers (remote_link.h) ---

  // Throws unless workers of `profile` can connect back: a tcp endpoint (so CURVE and ZAP are running) on the
  // port of the profile's server_endpoint.
  void check_link(const ClusterProfile& profile) {
    const int port =
        check_tcp_endpoint(profile.server_endpoint, cat(profile.file.string(), ": key 'server_endpoint'"));
    std::string tcp;
    for (const auto& ep : o.listen) {
      if (!starts_with(ep, "tcp://")) continue;
      if (std::atoi(ep.c_str() + ep.rfind(':') + 1) == port && net->zap()) return;
      tcp += cat(tcp.empty() ? "" : ", ", ep);
    }
    throw Error(
        ErrorCode::unsupported, profile.file.string(),
        tcp.empty()
            ? std::string("key 'report': \"tcp\" needs a server that listens on tcp (mugv serve "
                          "--listen tcp://HOST:PORT); this one listens on none")
            : cat("key 'server_endpoint': port ", port, " is not one this server listens on (", tcp, ")"));
  }

  void admit_remote(int64_t job_id, const RemoteLinkGrant& grant) {
    if (!net->zap() || !net->server_keys())
      throw Error(ErrorCode::unsupported, cat("job ", job_id), "this server listens on no tcp endpoint");
    close_remote(job_id);  // a new submission's grant replaces the last one's
    net->zap()->admit(grant.worker.public_key, job_id);
    remote_workers[job_id] = RemoteWorker{grant.token, grant.worker.public_key, ""};
  }

  RemoteLinkGrant open_remote(int64_t job_id, const ClusterProfile& profile) {
    check_link(profile);
    RemoteLinkGrant grant = make_remote_link_grant(profile.server_endpoint, net->server_keys()->public_key);
    admit_remote(job_id, grant);
    return grant;
  }

  void close_remote(int64_t job_id) {
    auto it = remote_workers.find(job_id);
    if (it == remote_workers.end()) return;
    if (net->zap()) net->zap()->forget(it->second.public_key);
    if (!it->second.identity.empty()) {
      peers.erase(it->second.identity);
      worker_jobs.erase(it->second.identity);
    }
    remote_workers.erase(it);
  }

  // The job's remote worker when it is connected.
  RemoteWorker* linked_remote(int64_t job_id) {
    auto it = remote_workers.find(job_id);
    return it == remote_workers.end() || it->second.identity.empty() ? nullptr : &it->second;
  }

  // A remote worker's hello, or its heartbeat on a new connection (a server restarted while it ran).
  void bind_remote(const std::string& identity, int64_t job_id, RemoteWorker& r) {
    if (!r.identity.empty() && r.identity != identity) {
      peers.erase(r.identity);
      worker_jobs.erase(r.identity);
    }
    r.identity = identity;
    peers[identity] = "remote-worker";
    worker_jobs[identity] = job_id;
    log_info(cat("job ", job_id, ": its Slurm worker is linked over tcp"));
  }

  // What a linked Slurm worker sends: heartbeats and previews. Progress, metrics, logs and the result travel
  // in its events file, the durable record the Slurm executor reads, so they are not taken twice from here.
  void handle_remote_worker(const std::string& identity, const Message& m) {
    const auto bound = worker_jobs.find(identity);
    if (bound == worker_jobs.end()) return;
    const int64_t job_id = bound->second;
    auto it = remote_workers.find(job_id);
    if (it == remote_workers.end()) return;  // the job has left Slurm
    if (it->second.identity != identity || m.header.value("job", int64_t(0)) != job_id) {
      refuse_worker(identity, job_id);
      return;
    }
    if (m.type == MessageType::preview) {
      nlohmann::json payload = m.header;
      payload["type"] = "preview";
      publish_event(job_id, "preview", payload, m.blobs);
    }
  }

  WorkerEntry* worker_of(int64_t job_id) {
    auto it = workers.find(job_id);
    return it == workers.end() ? nullptr : &it->second;
  }

  Job job_or_throw(int64_t id) {
    auto job = get_job(*catalog, id);
    if (!job) throw Error(ErrorCode::not_found, cat("job ", id), "no such job");
    return *job;
  }

  // Requests, one handler each (request_routes below says which).
  Message on_submit_job(const Message& m) {
    const auto& h = m.header;
    nlohmann::json params = h["params"];
    if (h.contains("executor") && !params.contains("executor")) params["executor"] = h["executor"];
    check_job_paths(h["kind"].get<std::string>(), params);
    slurm->check(h["kind"].get<std::string>(), params);
    Job job;
    job.kind = *job_kind_from_string(h["kind"].get<std::string>());
    job.params = params;
    job.priority = h.value("priority", 0);
    if (h.contains("depends_on")) job.depends_on = h["depends_on"].get<std::vector<int64_t>>();
    for (int64_t dependency : job.depends_on)
      if (!get_job(*catalog, dependency))
        throw Error(ErrorCode::not_found, "depends_on", cat("job ", dependency, " does not exist"));
    job = enqueue_job(*catalog, job);
    slurm_queued = slurm_queued || is_slurm_job(job);
    publish_state(job);
    return protocol::make_ok({{"job", to_json(job)}});
  }

  Message on_cancel_job(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    if (job.state == JobState::queued)
      return protocol::make_ok({{"job", to_json(transition(job.id, JobState::cancelled))}});
    if (is_terminal(job.state))
      throw Error(ErrorCode::conflict, cat("job ", job.id), cat("already ", to_string(job.state)));
    if (slurm->cancel(job.id)) return protocol::make_ok({{"job", to_json(job)}, {"cancelling", true}});
    if (WorkerEntry* w = worker_of(job.id)) {
      w->cancel_requested = true;
      w->kill_at = Clock::now() + (h.value("force", false) ? std::chrono::milliseconds(0) : o.cancel_grace);
      control(*w, "cancel");
    }
    return protocol::make_ok({{"job", to_json(job)}, {"cancelling", true}});
  }

  // Where a control for the job goes: its local worker, or its Slurm worker's live link; "" when neither is
  // connected. A Slurm job without a link cannot be controlled beyond scancel, which the error says.
  std::string control_identity(const Job& job) {
    if (WorkerEntry* w = worker_of(job.id)) return w->identity;
    if (!is_slurm_job(job)) return {};
    if (RemoteWorker* r = linked_remote(job.id)) return r->identity;
    throw Error(
        ErrorCode::unsupported, cat("job ", job.id),
        "this Slurm job has no live link (its cluster profile reports through files, or its worker has "
        "not connected yet); it can only be cancelled");
  }

  Message on_pause_or_resume_job(const Message& m) {
    const auto& h = m.header;
    bool pause = m.type == MessageType::pause_job;
    Job job = job_or_throw(h["job"]);
    const std::string identity = control_identity(job);
    if (identity.empty() || job.state != (pause ? JobState::running : JobState::paused))
      throw Error(ErrorCode::conflict, cat("job ", job.id),
                  cat("is ", to_string(job.state), "; only a ", pause ? "running" : "paused", " job can be ",
                      pause ? "paused" : "resumed"));
    control(identity, job.id, pause ? "pause" : "resume");
    return protocol::make_ok(
        {{"job", to_json(transition(job.id, pause ? JobState::paused : JobState::running))}});
  }

  Message on_retry_job(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    if (!is_terminal(job.state) || job.state == JobState::succeeded)
      throw Error(
          ErrorCode::conflict, cat("job ", job.id),
          cat("is ", to_string(job.state), "; only failed, cancelled or interrupted jobs can be retried"));
    slurm_queued = slurm_queued || is_slurm_job(job);
    return protocol::make_ok({{"job", to_json(transition(job.id, JobState::queued))}});
  }

  Message on_reorder_job(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    if (h.contains("priority")) set_job_priority(*catalog, job.id, h["priority"]);
    if (h.contains("position")) set_job_queue_position(*catalog, job.id, h["position"]);
    return protocol::make_ok({{"job", to_json(job_or_throw(job.id))}});
  }

  Message on_list_jobs(const Message& m) {
    const auto& h = m.header;
    std::optional<JobState> state;
    if (h.contains("state")) state = job_state_from_string(h["state"].get<std::string>());
    nlohmann::json list = nlohmann::json::array();
    auto jobs = list_jobs(*catalog, state);
    size_t offset = h.value("offset", 0), limit = h.value("limit", 1000);
    for (size_t i = offset; i < jobs.size() && list.size() < limit; ++i) list.push_back(to_json(jobs[i]));
    return protocol::make_ok({{"jobs", list}, {"total", jobs.size()}});
  }

  // The job and one page of its stored events, oldest first after `after_event`, of the `types` asked for:
  // at most `limit` events and about kMaxEventPageBytes of JSON, so that a training job with a hundred
  // thousand metrics events is read in pages (`more`, `next_after`) rather than in one reply no client
  // could receive.
  Message on_get_job(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    std::set<std::string> types;
    for (const auto& t : h.value("types", nlohmann::json::array())) types.insert(t.get<std::string>());
    const int64_t limit = h.value("limit", int64_t(1000));
    int64_t after = h.value("after_event", int64_t(0));
    nlohmann::json events = nlohmann::json::array();
    size_t bytes = 0;
    bool more = false;
    constexpr int64_t kBatch = 1000;
    while (!more) {
      const auto batch = list_job_events(*catalog, job.id, after, kBatch);
      for (const auto& e : batch) {
        if (!types.empty() && !types.count(e.type)) {
          after = e.id;
          continue;
        }
        nlohmann::json j = to_json(e);
        const size_t size = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
        if (static_cast<int64_t>(events.size()) >= limit ||
            (!events.empty() && bytes + size > kMaxEventPageBytes)) {
          more = true;
          break;
        }
        bytes += size;
        after = e.id;
        events.push_back(std::move(j));
      }
      if (static_cast<int64_t>(batch.size()) < kBatch) break;
    }
    return protocol::make_ok(
        {{"job", to_json(job)}, {"events", events}, {"more", more}, {"next_after", after}});
  }

  Message on_job_logs(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    // A Slurm job's log is the server's notes on it followed by Slurm's output files (the workers' stdout
    // and stderr, srun's and slurmstepd's messages), read where Slurm writes them.
    std::string text = read_if_exists(job_log_path(o.home, job.id));
    if (is_slurm_job(job)) text += slurm->slurm_output(job);
    text = tail_lines(text, h.value("tail_lines", 200));
    // Progress bars redrawn with \r make "lines" of megabytes: the reply keeps the last kMaxLogReplyBytes
    // from a line start, so that even escaped as JSON (at most 6 bytes a byte) it fits a message header.
    const bool truncated = text.size() > kMaxLogReplyBytes;
    if (truncated) {
      const size_t cut = text.size() - kMaxLogReplyBytes;
      const size_t line = text.find_first_of("\r\n", cut);
      text = line == std::string::npos ? std::string() : text.substr(line + 1);
    }
    return protocol::make_ok({{"job", job.id}, {"text", text}, {"truncated", truncated}});
  }

  Message on_list_commands(const Message&) {
    return protocol::make_ok({{"commands", o.commands.is_array() ? o.commands : nlohmann::json::array()}});
  }

  Message on_sample_or_save_now(const Message& m) {
    const auto& h = m.header;
    Job job = job_or_throw(h["job"]);
    const std::string identity = job.kind == JobKind::train ? control_identity(job) : std::string();
    if (identity.empty())
      throw Error(ErrorCode::conflict, cat("job ", job.id),
                  "only a running training job can sample or save now");
    control(identity, job.id, m.type == MessageType::sample_now ? "sample_now" : "save_now");
    return protocol::make_ok({{"job", job.id}});
  }

  Message on_shutdown(const Message&) {
    stopping = true;
    return protocol::make_ok({{"stopping", true}});
  }

  // The requests a client may send and their handlers: the jobs' here, the library's in library_routes and
  // the pictures' (on the reply pool) in deferred_routes; anything else is a protocol error.
  using RequestHandler = Message (Impl::*)(const Message&);
  static const std::map<MessageType, RequestHandler>& request_routes() {
    static const std::map<MessageType, RequestHandler> routes = {
        {MessageType::submit_job, &Impl::on_submit_job},
        {MessageType::cancel_job, &Impl::on_cancel_job},
        {MessageType::pause_job, &Impl::on_pause_or_resume_job},
        {MessageType::resume_job, &Impl::on_pause_or_resume_job},
        {MessageType::retry_job, &Impl::on_retry_job},
        {MessageType::reorder_job, &Impl::on_reorder_job},
        {MessageType::list_jobs, &Impl::on_list_jobs},
        {MessageType::get_job, &Impl::on_get_job},
        {MessageType::job_logs, &Impl::on_job_logs},
        {MessageType::list_commands, &Impl::on_list_commands},
        {MessageType::sample_now, &Impl::on_sample_or_save_now},
        {MessageType::save_now, &Impl::on_sample_or_save_now},
        {MessageType::shutdown, &Impl::on_shutdown},
    };
    return routes;
  }

  using LibraryHandler = Message (LibraryRequests::*)(const Message&) const;
  static const std::map<MessageType, LibraryHandler>& library_routes() {
    static const std::map<MessageType, LibraryHandler> routes = {
        {MessageType::list_clusters, &LibraryRequests::on_list_clusters},
        {MessageType::list_models, &LibraryRequests::on_list_models},
        {MessageType::list_presets, &LibraryRequests::on_list_presets},
        {MessageType::list_runs, &LibraryRequests::on_list_runs},
        {MessageType::list_datasets, &LibraryRequests::on_list_datasets},
        {MessageType::list_clips, &LibraryRequests::on_list_clips},
        {MessageType::edit_caption, &LibraryRequests::on_edit_caption},
        {MessageType::list_prompts, &LibraryRequests::on_list_prompts},
        {MessageType::save_prompt, &LibraryRequests::on_save_prompt},
        {MessageType::list_generations, &LibraryRequests::on_list_generations},
        {MessageType::list_preferences, &LibraryRequests::on_list_preferences},
        {MessageType::label_preference, &LibraryRequests::on_label_preference},
    };
    return routes;
  }

  // Requests whose work runs on the reply pool: the handler checks the request here and returns the rest.
  using DeferredHandler = ReplyPool::Work (FrameRequests::*)(const Message&) const;
  static const std::map<MessageType, DeferredHandler>& deferred_routes() {
    static const std::map<MessageType, DeferredHandler> routes = {
        {MessageType::clip_frames, &FrameRequests::on_clip_frames},
        {MessageType::generation_frames, &FrameRequests::on_generation_frames},
        {MessageType::list_run_samples, &FrameRequests::on_list_run_samples},
        {MessageType::run_sample_frames, &FrameRequests::on_run_sample_frames},
    };
    return routes;
  }

  // The work of a request answered on the reply pool; nullopt for one answered on the server thread.
  std::optional<ReplyPool::Work> deferred_work(const Message& m) {
    if (const auto deferred = deferred_routes().find(m.type); deferred != deferred_routes().end())
      return (*frames.*(deferred->second))(m);
    if (m.type == MessageType::check_machine) {
      if (!o.check_machine)
        throw Error(ErrorCode::unsupported, to_string(m.type), "this server cannot check its machine");
      return [check = o.check_machine, quick = m.header.value("quick", false)] {
        return protocol::make_ok(check(quick));
      };
    }
    return std::nullopt;
  }

  Message handle_request(const Message& m) {
    if (const auto route = request_routes().find(m.type); route != request_routes().end())
      return (this->*(route->second))(m);
    if (const auto route = library_routes().find(m.type); route != library_routes().end())
      return (*library.*(route->second))(m);
    throw Error(ErrorCode::protocol, to_string(m.type), "not a request a client can send");
  }

  // A report of a worker that proved, at hello or at adoption, that it runs the job it is bound to.
  void handle_worker(const std::string& identity, const Message& m) {
    const auto bound = worker_jobs.find(identity);
    if (bound == worker_jobs.end()) return;
    const int64_t job_id = bound->second;
    WorkerEntry* w = worker_of(job_id);
    if (!w) return;  // a worker of a job this server no longer tracks (already finished)
    if (w->identity != identity || m.header.value("job", int64_t(0)) != job_id) {
      // A connection of a replaced attempt, or a report about another job: fenced off.
      refuse_worker(identity, job_id);
      return;
    }
    w->last_heartbeat = Clock::now();
    switch (m.type) {
      case MessageType::heartbeat:
        if (!w->child && m.header.contains("pid"))
          w->pid = static_cast<pid_t>(m.header["pid"].get<int64_t>());
        break;
      case MessageType::progress: {
        nlohmann::json payload = m.header;
        payload["type"] = "progress";
        publish_event(job_id, "", payload);
        if (Clock::now() - w->last_progress_event > std::chrono::seconds(1)) {
          (void)append_job_event(*catalog, job_id, "progress", m.header);
          w->last_progress_event = Clock::now();
        }
        break;
      }
      case MessageType::metrics:
        (void)append_job_event(*catalog, job_id, "metrics", m.header);
        publish_event(job_id, "metrics",
                      {{"type", "metrics"}, {"step", m.header["step"]}, {"values", m.header["values"]}});
        break;
      case MessageType::log_line:
        publish_event(job_id, "log",
                      {{"type", "log"}, {"level", m.header["level"]}, {"text", m.header["text"]}});
        break;
      case MessageType::preview: {
        nlohmann::json payload = m.header;
        payload["type"] = "preview";
        publish_event(job_id, "preview", payload, m.blobs);
        break;
      }
      case MessageType::job_finished:
        w->reported = job_state_from_string(m.header["state"].get<std::string>());
        w->error_code = m.header.value("error_code", "");
        w->message = m.header.value("message", "");
        if (m.header.contains("result"))
          (void)append_job_event(*catalog, job_id, "result", m.header["result"]);
        break;
      default:
        break;
    }
  }

  void on_hello(const std::string& identity, const Message& m) {
    std::string role = m.header["role"];
    if (m.header["version"].get<int>() != protocol::kVersion) {
      protocol::send(net->router(), {identity},
                     protocol::make_error("version_mismatch",
                                          cat("peer speaks protocol version ", m.header["version"].get<int>(),
                                              ", this server speaks ", protocol::kVersion)));
      return;
    }
    if (role == "worker") {
      int64_t job_id = m.header.value("job", int64_t(0));
      WorkerEntry* w = worker_of(job_id);
      if (auto remote = remote_workers.find(job_id); !w && remote != remote_workers.end()) {
        if (!shows_token(m, remote->second.token)) return refuse_worker(identity, job_id);
        bind_remote(identity, job_id, remote->second);
        return send_welcome(identity);
      }
      if (!w) {
        protocol::send(net->router(), {identity},
                       protocol::make_error("not_found", cat("job ", job_id, " is not running here")));
        return;
      }
      if (!proves(*w, m)) return refuse_worker(identity, job_id);
      peers[identity] = role;
      worker_jobs[identity] = job_id;
      w->identity = identity;
      w->last_heartbeat = Clock::now();
      auto job = get_job(*catalog, job_id);
      if (job && job->state == JobState::starting) {
        JobStateChange c;
        c.worker_pid = m.header.value("pid", int64_t(w->pid));
        c.host = host;
        transition(job_id, JobState::running, c);
      }
    }
    peers[identity] = role;
    send_welcome(identity);
  }

  void send_welcome(const std::string& identity) {
    Message welcome;
    welcome.type = MessageType::welcome;
    welcome.header = {{"protocol", protocol::kVersion},
                      {"server", MUGV_SERVICE_VERSION},
                      {"events", net->events()},
                      {"heartbeat_ms", o.heartbeat_interval.count()}};
    protocol::send(net->router(), {identity}, welcome);
  }

  void on_message(protocol::Incoming& in) {
    if (in.envelope.empty()) return;
    const std::string& identity = in.envelope.front();
    if (auto* err = std::get_if<protocol::ProtocolError>(&in.content)) {
      protocol::send(net->router(), in.envelope, protocol::make_error(*err));
      return;
    }
    Message& m = std::get<Message>(in.content);
    // A connection made with a Slurm worker's key speaks for that one job's worker and nothing else.
    if (const int64_t keyed_job = ZapHandler::job_of_user_id(in.user_id);
        keyed_job > 0 &&
        (protocol::is_client_request(m.type) || m.header.value("job", int64_t(0)) != keyed_job ||
         (m.type == MessageType::hello && m.header.value("role", "") != "worker"))) {
      protocol::send(
          net->router(), in.envelope,
          protocol::make_error("forbidden", cat("this connection may only report for job ", keyed_job)));
      return;
    }
    if (m.type == MessageType::hello) return on_hello(identity, m);
    auto peer = peers.find(identity);
    if (peer == peers.end()) {
      // A worker that outlived a server restart reconnects and resumes heartbeats: adopt it once it
      // shows the token of the job's current attempt.
      const int64_t job_id = m.header.value("job", int64_t(0));
      if (auto remote = remote_workers.find(job_id);
          m.type == MessageType::heartbeat && remote != remote_workers.end() && !workers.count(job_id)) {
        if (!shows_token(m, remote->second.token)) return refuse_worker(identity, job_id);
        return bind_remote(identity, job_id, remote->second);
      }
      WorkerEntry* w = m.type == MessageType::heartbeat ? worker_of(job_id) : nullptr;
      // The token is the proof, the connection only a route: a worker whose connection was remade (a new
      // identity) is bound again. Without a token (an older server's worker) only a first binding is taken.
      if (w && proves(*w, m) && (w->identity.empty() || !w->token.empty())) {
        peers[identity] = "worker";
        worker_jobs[identity] = job_id;
        w->identity = identity;
      } else if (w) {
        return refuse_worker(identity, job_id);
      } else {
        protocol::send(net->router(), in.envelope, protocol::make_error("protocol", "say hello first"));
        return;
      }
    }
    if (peers[identity] == "worker") return handle_worker(identity, m);
    if (peers[identity] == "remote-worker") return handle_remote_worker(identity, m);
    if (!protocol::is_client_request(m.type)) {
      protocol::send(net->router(), in.envelope,
                     protocol::make_error("protocol", cat(to_string(m.type), " is not a client request")));
      return;
    }
    try {
      if (auto work = deferred_work(m)) {
        if (!heavy.submit(in.envelope, std::move(*work)))
          throw Error(
              ErrorCode::conflict, to_string(m.type),
              cat("the server is busy with ", kMaxHeavyRequests, " such requests; ask again shortly"));
        return;
      }
      protocol::send(net->router(), in.envelope, handle_request(m));
    } catch (const Error& e) {
      protocol::send(net->router(), in.envelope, protocol::make_error(to_string(e.code()), e.what()));
    } catch (const std::exception& e) {
      protocol::send(net->router(), in.envelope, protocol::make_error("internal", e.what()));
    }
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->o = std::move(options);
  if (impl_->o.listen.empty())
    throw Error(ErrorCode::invalid_argument, "--listen", "no endpoint to listen on");
  if (impl_->o.worker_executable.empty())
    throw Error(ErrorCode::invalid_argument, "worker", "no worker executable");
}

Server::~Server() = default;

std::vector<std::string> Server::events_endpoints() const {
  return impl_->net ? impl_->net->events() : std::vector<std::string>();
}
std::string Server::worker_endpoint() const {
  return impl_->net ? impl_->net->worker_endpoint() : std::string();
}

void Server::run(const CancelToken& stop) {
  Impl& s = *impl_;
  const size_t files = raise_open_file_limit();
  s.home_lock.emplace(s.o.home, s.o.listen);
  s.catalog.emplace(Catalog::open(s.o.home / "catalog.sqlite"));
  std::vector<fs::path> roots = {s.o.home};
  roots.insert(roots.end(), s.o.allowed_roots.begin(), s.o.allowed_roots.end());
  s.confinement.emplace(roots,
                        std::vector<fs::path>{s.o.keys_dir.empty() ? keys_dir(s.o.home) : s.o.keys_dir});
  SlurmExecutor::Hooks hooks;
  hooks.transition = [&s](int64_t id, JobState to, const JobStateChange& c) {
    return s.transition(id, to, c);
  };
  hooks.publish = [&s](int64_t id, const std::string& subtopic, nlohmann::json payload) {
    s.publish_event(id, subtopic, std::move(payload));
  };
  hooks.enqueue = [&s](Job job) {
    job = enqueue_job(*s.catalog, job);
    s.publish_state(job);
    return job;
  };
  hooks.check_link = [&s](const ClusterProfile& p) { s.check_link(p); };
  hooks.open_link = [&s](int64_t job, const ClusterProfile& p) { return s.open_remote(job, p); };
  hooks.readmit_link = [&s](int64_t job, const RemoteLinkGrant& g) { s.admit_remote(job, g); };
  hooks.close_link = [&s](int64_t job) { s.close_remote(job); };
  s.library.emplace(*s.catalog, s.o.home);
  s.frames.emplace(*s.catalog, *s.confinement);
  s.slurm =
      std::make_unique<SlurmExecutor>(*s.catalog, s.o.home, s.o.worker_executable, s.o.plan_shards, hooks);
  s.net.emplace(s.o.listen, s.o.home, s.o.keys_dir);
  s.recover();
  for (size_t i = 0; i < s.o.listen.size(); ++i)
    log_info(cat("serving on ", s.o.listen[i], " (events on ", s.net->events()[i], ")"));
  log_info(cat("home ", s.o.home.string(), "; jobs may use files in ", s.confinement->describe_roots(),
               "; up to ", files, " open files"));
  while (!stop.cancel_requested() && !s.stopping) {
    if (auto in =
            protocol::receive(s.net->router(), 1, std::chrono::milliseconds(s.heavy.pending() ? 5 : 50)))
      s.on_message(*in);
    s.heavy.drain([&s](const std::vector<std::string>& envelope, const Message& reply) {
      protocol::send(s.net->router(), envelope, reply);
    });
    s.net->guard_descriptors();
    s.reap();
    s.check_liveness();
    s.slurm->poll();
    s.schedule();
  }
  s.slurm.reset();  // stops its helper thread; Slurm jobs stay in Slurm and in the catalog for the next start
  log_info("server stopping; running workers keep running and are picked up by the next start");
  s.home_lock.reset();  // the next server of this home may start
}

}  // namespace mugv
