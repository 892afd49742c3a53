#include "service/server.h"

#include "catalog/captions.h"
#include "catalog/catalog.h"
#include "catalog/clips.h"
#include "catalog/datasets.h"
#include "catalog/generations.h"
#include "catalog/jobs.h"
#include "catalog/preferences.h"
#include "catalog/prompts.h"
#include "catalog/runs.h"
#include "catalog/sources.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "media/decoder.h"
#include "media/image.h"
#include "media/probe.h"
#include "model/release_files.h"
#include "service/cluster_profiles.h"
#include "service/curve_keys.h"
#include "service/home_lock.h"
#include "service/job_files.h"
#include "service/job_json.h"
#include "service/remote_link.h"
#include "service/reply_pool.h"
#include "service/zap_handler.h"
#include "service/zmq_io.h"
#include "train/checkpoint_store.h"
#include "train/run_layout.h"
#include "train/run_samples.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <fstream>
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

constexpr int kTcpHandshakeMs = 5000;

// The soft limit on open files, raised to the hard one (a server holds one descriptor per connection).
size_t raise_open_file_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  if (r.rlim_cur < r.rlim_max) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return static_cast<size_t>(r.rlim_cur);
}

size_t open_file_limit() {
  rlimit r{};
  return ::getrlimit(RLIMIT_NOFILE, &r) == 0 ? static_cast<size_t>(r.rlim_cur) : 1024;
}

size_t open_file_count() {
  std::error_code ec;
  size_t n = 0;
  for (auto it = fs::directory_iterator("/proc/self/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    ++n;
  return n;
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

// Unix socket paths are limited to 107 bytes; a deep home gets its worker socket in the runtime dir instead,
// named after the home so that a restarted server finds its workers at the same place.
std::string private_worker_endpoint(const fs::path& home) {
  fs::path in_home = home / "ipc" / "workers.sock";
  if (in_home.string().size() < 100) return "ipc://" + in_home.string();
  return "ipc://" +
         (runtime_dir() / cat("workers-", std::hash<std::string>{}(home.string()), ".sock")).string();
}

}  // namespace

struct Server::Impl {
  ServerOptions o;
  std::optional<HomeLock> home_lock;  // held while the server runs
  zmq::context_t context{1};
  // Declared before the sockets so that it is destroyed after them: libzmq lets every CURVE client in
  // while no ZAP handler is bound.
  std::unique_ptr<ZapHandler> zap;
  std::optional<PathConfinement> confinement;
  std::string worker_endpoint;
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t pub{context, zmq::socket_type::pub};
  std::optional<Catalog> catalog;
  // After the catalog: destroyed before it (it holds a reference).
  std::unique_ptr<SlurmExecutor> slurm;
  bool slurm_queued =
      true;  // a Slurm job may wait in the queue (submitted, retried or requeued since the last scan)
  // Heavy requests (decoding frames, probing sample videos) run here; declared after the sockets so that its
  // threads, which never touch a socket, are joined before the sockets close.
  ReplyPool heavy{2, kMaxHeavyRequests};
  std::map<int64_t, WorkerEntry> workers;          // by job id
  std::map<std::string, std::string> peers;        // identity -> role, after hello
  std::map<std::string, int64_t> worker_jobs;      // identity of a worker -> the one job it proved it runs
  std::map<int64_t, RemoteWorker> remote_workers;  // by job id: Slurm workers with a live link
  std::optional<CurveKeyPair> server_keys;         // once a tcp endpoint requires CURVE
  std::vector<std::string> events;
  std::string host = host_name();
  bool stopping = false;

  void bind() {
    protocol::apply_common_options(router);
    protocol::apply_common_options(pub);
    // An endpoint takes the socket's options as they are when it is bound: ipc endpoints are bound first,
    // before the CURVE options are set for the tcp ones.
    std::map<std::string, std::string> events_of;
    std::vector<std::string> secure;
    for (const auto& ep : o.listen) {
      if (starts_with(ep, "tcp://")) {
        secure.push_back(ep);
        continue;
      }
      if (starts_with(ep, "ipc://")) {
        ensure_private_dir(fs::path(ep.substr(6)).parent_path());
        if (worker_endpoint.empty()) worker_endpoint = ep;
      }
      events_of[ep] = bind_pair(ep);
    }
    if (worker_endpoint.empty()) {
      worker_endpoint = private_worker_endpoint(o.home);
      ensure_private_dir(fs::path(worker_endpoint.substr(6)).parent_path());
      bind_one(router, worker_endpoint);
    }
    if (!secure.empty()) {
      require_curve();
      for (const auto& ep : secure) {
        events_of[ep] = bind_pair(ep);
        tcp_bound.push_back({&router, ep, true});
        tcp_bound.push_back({&pub, events_of[ep], true});
      }
    }
    for (const auto& ep : o.listen) events.push_back(events_of[ep]);
  }

  void bind_one(zmq::socket_t& socket, const std::string& ep) {
    try {
      socket.bind(ep);
    } catch (const zmq::error_t& e) {
      throw Error(ErrorCode::io, ep, cat("cannot listen: ", e.what()));
    }
  }

  // File descriptors. libzmq aborts the process when accepting a connection finds none left, so the server
  // never lets a flood of tcp connections get there: when the open descriptors come within a reserve of
  // the limit it stops listening on tcp (which also drops the connections accepted there; authorised
  // clients reconnect by themselves) and listens again once the descriptors are back below twice the
  // reserve. ipc endpoints, the studio's and the workers', keep working throughout.
  struct TcpEndpoint {
    zmq::socket_t* socket;
    std::string endpoint;
    bool bound = true;
  };
  std::vector<TcpEndpoint> tcp_bound;
  bool tcp_paused = false;
  Clock::time_point next_fd_check{};

  void guard_descriptors() {
    if (tcp_bound.empty() || Clock::now() < next_fd_check) return;
    next_fd_check = Clock::now() + std::chrono::milliseconds(20);
    const size_t limit = open_file_limit(), open = open_file_count();
    // A quarter of the limit: with the 65,536 of the shipped systemd unit, a flood would have to open
    // 16,000 connections between two checks (at most one loop turn, 50 ms) to get past it.
    const size_t reserve = std::max<size_t>(32, limit / 4);
    if (!tcp_paused && open + reserve >= limit) {
      log_warning(
          cat(open, " of ", limit, " file descriptors in use: not accepting tcp connections for now"));
      for (auto& t : tcp_bound) {
        try {
          t.socket->unbind(t.endpoint);
        } catch (const zmq::error_t&) {
        }
        t.bound = false;
      }
      tcp_paused = true;
    } else if (tcp_paused && open + 2 * reserve < limit) {
      for (auto& t : tcp_bound) {
        if (t.bound) continue;
        try {
          t.socket->bind(t.endpoint);
          t.bound = true;
        } catch (const zmq::error_t& e) {
          log_warning(cat(t.endpoint, ": cannot listen again yet: ", e.what()));
          return;  // the rest at the next check
        }
      }
      tcp_paused = false;
      log_info(cat(open, " of ", limit, " file descriptors in use: accepting tcp connections again"));
    }
  }

  // Binds a request endpoint and its events endpoint; returns the latter.
  std::string bind_pair(const std::string& ep) {
    bind_one(router, ep);
    std::string events_ep = protocol::events_endpoint_for(ep);
    bind_one(pub, events_ep);
    return events_ep;
  }

  // The server key (made on first use), the ZAP handler, and CURVE on both sockets for what is bound next.
  void require_curve() {
    const fs::path dir = o.keys_dir.empty() ? keys_dir(o.home) : o.keys_dir;
    bool created = false;
    const CurveKeyPair keys = load_or_create_keypair(dir, KeyRole::server, &created);
    server_keys = keys;
    const fs::path authorized = dir / "authorized_keys";
    const size_t clients = read_authorized_keys(authorized).size();  // a malformed file stops the start here
    zap = std::make_unique<ZapHandler>(context, authorized);
    for (zmq::socket_t* s : {&router, &pub}) {
      // A peer that has not finished the CURVE handshake within this time is dropped, so idle unauthenticated
      // connections cannot pile up (libzmq's default waits 30 s).
      s->set(zmq::sockopt::handshake_ivl, static_cast<int>(kTcpHandshakeMs));
      s->set(zmq::sockopt::curve_server, true);
      s->set(zmq::sockopt::curve_secretkey, keys.secret_key);
      s->set(zmq::sockopt::zap_domain, s == &pub ? ZapHandler::kEventsDomain : ZapHandler::kDomain);
    }
    log_info(cat("CURVE server key ", created ? "created in " : "from ",
                 secret_key_path(dir, KeyRole::server).string(), "; public key ", keys.public_key,
                 " (clients: mugv --server tcp://HOST:PORT --server-key ", keys.public_key, ")"));
    if (clients == 0)
      log_warning(cat("no client key is authorised yet (", authorized.string(),
                      "); add one with `mugv keys authorize KEY`"));
    else
      log_info(cat(clients, " authorised client key(s) in ", authorized.string()));
  }

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
    protocol::publish(pub, topic, m);
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
        router, {identity},
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
    std::string endpoint = worker_endpoint;
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
    protocol::send(router, {identity}, m);
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
      if (std::atoi(ep.c_str() + ep.rfind(':') + 1) == port && zap) return;
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
    if (!zap || !server_keys)
      throw Error(ErrorCode::unsupported, cat("job ", job_id), "this server listens on no tcp endpoint");
    close_remote(job_id);  // a new submission's grant replaces the last one's
    zap->admit(grant.worker.public_key, job_id);
    remote_workers[job_id] = RemoteWorker{grant.token, grant.worker.public_key, ""};
  }

  RemoteLinkGrant open_remote(int64_t job_id, const ClusterProfile& profile) {
    check_link(profile);
    RemoteLinkGrant grant = make_remote_link_grant(profile.server_endpoint, server_keys->public_key);
    admit_remote(job_id, grant);
    return grant;
  }

  void close_remote(int64_t job_id) {
    auto it = remote_workers.find(job_id);
    if (it == remote_workers.end()) return;
    if (zap) zap->forget(it->second.public_key);
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

  // Pictures of one clip for clients that cannot read this machine's files (protocol.h, clip_frames). The
  // catalog is read and the source checked here, like a job's files, so a catalog entry pointing outside the
  // roots shows nothing; the decoding (up to 64 frames at 1024 px: seconds) runs on the reply pool, so that
  // it never holds up other requests or the workers' heartbeats.
  ReplyPool::Work on_clip_frames(const Message& m) {
    const auto& h = m.header;
    const int64_t id = h["clip"];
    const auto clip = get_clip(*catalog, id);
    if (!clip) throw Error(ErrorCode::not_found, cat("clip ", id), "no such clip");
    const auto source = get_source(*catalog, clip->source_id);
    if (!source)
      throw Error(ErrorCode::not_found, cat("clip ", id), "its source video is not in the catalog");
    confinement->check(cat("clip ", id), source->path.string());
    const int count = h.value("count", 1);
    const int max_side = h.value("max_side", 128);
    return [id, clip = *clip, path = source->path, count, max_side] {
      Message reply = decode_frames(cat("clip ", id), clip, path, count, max_side);
      reply.header["clip"] = id;
      return reply;
    };
  }

  // The same for a generated video (the labelling view shows both generations of a pair): the whole file.
  ReplyPool::Work on_generation_frames(const Message& m) {
    const auto& h = m.header;
    const int64_t id = h["generation"];
    const auto g = get_generation(*catalog, id);
    if (!g) throw Error(ErrorCode::not_found, cat("generation ", id), "no such generation");
    confinement->check(cat("generation ", id), g->output_path.string());
    Clip whole;
    whole.fps = g->settings.value("fps", 8.0);
    whole.end_s = whole.fps > 0 ? g->frames / whole.fps : 0;
    whole.width = g->width;
    whole.height = g->height;
    const int count = h.value("count", 1), max_side = h.value("max_side", 128);
    return [id, whole, path = g->output_path, count, max_side] {
      Message reply = decode_frames(cat("generation ", id), whole, path, count, max_side);
      reply.header["generation"] = id;
      return reply;
    };
  }

  // The videos a run rendered while training (train/run_samples.h), for clients that cannot read this
  // machine's files: the Runs page's sample gallery. The run and file names are checked here (the file must
  // stay inside the run's folder, then inside the server's roots); reading each video's metadata (its prompt)
  // and decoding run on the reply pool.
  ReplyPool::Work on_list_run_samples(const Message& m) {
    const std::string run = m.header["run"];
    const RunPaths paths = run_paths(run);  // Error(invalid_argument) for a name that is not a run name
    (void)read_run_manifest(paths);         // Error(not_found) naming the run and the known ones
    const size_t limit = m.header.value("limit", 100);
    return [run, paths, limit] {
      nlohmann::json samples = nlohmann::json::array();
      for (const RunSampleFile& f : list_run_samples(paths, limit)) {
        nlohmann::json entry = {{"step", f.step}, {"file", f.file}, {"size", f.size}};
        try {
          const MediaInfo info = probe(f.path, ProbeDepth::headers);
          const auto tag = [&](const char* key) {
            const auto it = info.metadata.find(key);
            return it == info.metadata.end() ? std::string() : it->second;
          };
          entry.update({{"prompt", tag("prompt")},
                        {"seed", tag("seed")},
                        {"width", info.width},
                        {"height", info.height},
                        {"frames", info.frame_count},
                        {"fps", info.fps}});
        } catch (const Error& e) {
          entry["error"] = e.what();  // a file still being written, or damaged: listed, not played
        }
        samples.push_back(std::move(entry));
      }
      return protocol::make_ok({{"run", run}, {"samples", samples}});
    };
  }

  ReplyPool::Work on_run_sample_frames(const Message& m) {
    const auto& h = m.header;
    const std::string run = h["run"], file = h["file"];
    const int64_t step = h["step"];
    const fs::path path = run_sample_path(run_paths(run), step, file);
    confinement->check(cat("run ", run, ", step ", step, ", ", file), path.string());
    const int count = h.value("count", 1), max_side = h.value("max_side", 128);
    return [run, step, file, path, count, max_side] {
      const MediaInfo info = probe(path, ProbeDepth::headers);
      Clip whole;
      whole.fps = info.fps > 0 ? info.fps : 8.0;
      whole.end_s = info.duration_s;
      whole.width = info.width;
      whole.height = info.height;
      Message reply =
          decode_frames(cat("run ", run, ", step ", step, ", ", file), whole, path, count, max_side);
      reply.header.update({{"run", run}, {"step", step}, {"file", file}});
      return reply;
    };
  }

  // Up to `count` rgb24 frames of `clip`'s span of `path`, evenly spread, the longer side at most `max_side`
  // (count 1: the middle frame). `what` names the video in errors ("clip 12").
  static Message decode_frames(const std::string& what, const Clip& clip, const fs::path& path, int count,
                               int max_side) {
    std::vector<RgbFrame> frames;
    double fps = clip.fps;
    if (count == 1) {
      frames.push_back(thumbnail(path, 0.5 * (clip.start_s + clip.end_s), max_side));
    } else {
      DecodeOptions d;
      // Never enlarge: the player scales on screen.
      const int side = std::min(max_side, std::max({clip.width, clip.height, 16}));
      const bool landscape = clip.width >= clip.height;
      d.width = landscape ? side : 0;
      d.height = landscape ? 0 : side;
      d.resize = ResizeMode::stretch;
      const double span = clip.end_s - clip.start_s;
      if (span > 0 && clip.fps > 0 && span * clip.fps > count) d.fps = fps = count / span;
      VideoDecoder decoder(path, d);
      if (decoder.seek(clip.start_s)) {
        while (static_cast<int>(frames.size()) < count) {
          auto f = decoder.next();
          if (!f || (span > 0 && f->pts_s >= clip.end_s - 1e-6)) break;
          frames.push_back(std::move(*f));
        }
      }
      if (frames.empty()) throw Error(ErrorCode::corrupt, path.string(), cat("no decodable frame in ", what));
    }
    Message reply = protocol::make_ok({{"width", frames.front().width},
                                       {"height", frames.front().height},
                                       {"fps", fps},
                                       {"format", "rgb24"},
                                       {"frames", frames.size()}});
    for (const auto& f : frames) reply.blobs.emplace_back(f.rgb.begin(), f.rgb.end());
    return reply;
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

  Message on_list_clusters(const Message&) {
    const ClusterProfileListing listing = list_cluster_profiles(o.home);
    nlohmann::json clusters = nlohmann::json::array(), problems = nlohmann::json::array();
    for (const auto& p : listing.profiles) clusters.push_back(p.to_json());
    for (const auto& [file, why] : listing.problems)
      problems.push_back({{"file", file.string()}, {"error", why}});
    return protocol::make_ok(
        {{"clusters", clusters}, {"problems", problems}, {"dir", cluster_profiles_dir(o.home).string()}});
  }

  Message on_list_commands(const Message&) {
    return protocol::make_ok({{"commands", o.commands.is_array() ? o.commands : nlohmann::json::array()}});
  }

  Message on_list_models(const Message&) {
    // Released models installed on this server, for the studio's model picker.
    nlohmann::json list = nlohmann::json::array();
    for (const auto& model : list_installed_models(o.home / "models")) list.push_back(to_json(model));
    return protocol::make_ok({{"models", list}, {"dir", (o.home / "models").string()}});
  }

  Message on_list_runs(const Message& m) {
    const auto& h = m.header;
    // One record shape for every run, whichever place knows it: the catalog's runs table and the run folders
    // the trainers write ($MUGV_HOME/runs/NAME/run.json), merged by name; what a place does not know is null.
    std::vector<nlohmann::json> runs;
    std::set<std::string> named;
    for (const auto& r : list_runs(*catalog)) {
      named.insert(r.name);
      runs.push_back({{"id", r.id},
                      {"name", r.name},
                      {"kind", to_string(r.kind)},
                      {"preset", r.preset},
                      {"dataset", nullptr},
                      {"vae_run", nullptr},
                      {"state", to_string(r.state)},
                      {"dir", r.dir.string()},
                      {"created_at_ms", r.created_at_ms},
                      {"base", nullptr},
                      {"lora", nullptr},
                      {"lineage", nullptr},
                      {"checkpoints", nullptr}});
    }
    for (const auto& name : list_run_names()) {
      if (named.count(name)) continue;
      try {
        const RunPaths paths = run_paths(name);
        const RunManifest m = read_run_manifest(paths);
        struct stat manifest_stat {};
        const int64_t written_ms =
            ::stat(paths.manifest().c_str(), &manifest_stat) == 0
                ? int64_t(manifest_stat.st_mtim.tv_sec) * 1000 + manifest_stat.st_mtim.tv_nsec / 1000000
                : 0;
        // Fine-tunes name their base; LoRA runs their adapter settings; checkpoints are listed by step (a
        // LoRA run's checkpoints are its adapters).
        const nlohmann::json& config = m.config.is_object() ? m.config : nlohmann::json::object();
        const nlohmann::json base = config.contains("base") ? config["base"] : nlohmann::json();
        const nlohmann::json train = config.value("train", nlohmann::json::object());
        const std::string lora = train.is_object() ? train.value("lora", std::string()) : std::string();
        nlohmann::json steps = nlohmann::json::array();
        for (const auto& c : CheckpointStore(paths.checkpoints()).list()) steps.push_back(c.step);
        // Runs made from other runs' weights say how (mugv grow, mugv lora merge, mugv ema).
        nlohmann::json lineage = nlohmann::json::object();
        for (const char* key : {"grown_from", "merged_from", "ema_from"})
          if (config.contains(key)) lineage[key] = config[key];
        // Post-trained fine-tunes: which stage made them from their base (SFT on a clip subset, DPO, KTO).
        if (base.is_object() && train.is_object()) {
          const std::string objective = train.value("objective", std::string("flow"));
          const std::string filter = train.value("clip_filter", std::string());
          if (objective != "flow" || !filter.empty())
            lineage["post_trained_from"] = {{"run", base.value("run", base.value("model", std::string()))},
                                            {"step", base.value("step", int64_t(0))},
                                            {"stage", objective != "flow" ? objective : "sft"},
                                            {"clip_filter", filter}};
        }
        runs.push_back({{"id", nullptr},
                        {"name", name},
                        {"kind", to_string(m.kind)},
                        {"preset", m.preset},
                        {"dataset", m.dataset},
                        {"vae_run", m.vae_run.empty() ? nlohmann::json() : nlohmann::json(m.vae_run)},
                        {"state", nullptr},
                        {"dir", paths.root.string()},
                        {"created_at_ms", written_ms},
                        {"base", base.is_object() ? base : nlohmann::json()},
                        {"lora", lora.empty() ? nlohmann::json() : nlohmann::json(lora)},
                        {"lineage", lineage.empty() ? nlohmann::json() : lineage},
                        {"checkpoints", steps}});
      } catch (const Error& e) {
        log_warning(cat("run ", name, " not listed: ", e.what()));  // a damaged folder is skipped
      }
    }
    nlohmann::json list = nlohmann::json::array();
    const size_t offset = h.value("offset", 0), limit = h.value("limit", 1000);
    for (size_t i = offset; i < runs.size() && list.size() < limit; ++i) list.push_back(runs[i]);
    return protocol::make_ok({{"runs", list}, {"total", runs.size()}});
  }

  // Each dataset with its latent caches by encoder (a VAE run or a released model) and their entry counts, so
  // a client knows what `mugv encode` still has to make before a DiT trains on it.
  Message on_list_datasets(const Message&) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& d : list_datasets(*catalog)) {
      ClipFilter f;
      f.dataset_id = d.id;
      nlohmann::json caches = nlohmann::json::object();
      for (const auto& [encoder, entries] : list_latent_caches(d.name)) caches[encoder] = entries;
      list.push_back({{"id", d.id},
                      {"name", d.name},
                      {"root", d.root_dir.string()},
                      {"clips", count_clips(*catalog, f)},
                      {"latent_caches", caches}});
    }
    return protocol::make_ok({{"datasets", list}});
  }

  Message on_list_clips(const Message& m) {
    const auto& h = m.header;
    auto d = find_dataset(*catalog, h["dataset"].get<std::string>());
    if (!d) throw Error(ErrorCode::not_found, h["dataset"].get<std::string>(), "no such dataset");
    ClipFilter f;
    f.dataset_id = d->id;
    if (h.contains("decision")) f.decision = clip_decision_from_string(h["decision"].get<std::string>());
    if (h.contains("reason")) f.reason = h["reason"].get<std::string>();
    if (h.contains("tag")) f.tag = h["tag"].get<std::string>();
    f.limit = h.value("limit", 500);
    f.offset = h.value("offset", 0);
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : list_clips(*catalog, f)) {
      auto caption = current_caption(*catalog, c.id);
      list.push_back(to_json(c, caption));
    }
    return protocol::make_ok({{"clips", list}, {"total", count_clips(*catalog, f)}});
  }

  Message on_edit_caption(const Message& m) {
    const auto& h = m.header;
    Caption c =
        add_caption(*catalog, h["clip"], h["text"].get<std::string>(), CaptionOrigin::human, "studio");
    return protocol::make_ok({{"caption", {{"id", c.id}, {"version", c.version}, {"current", c.current}}}});
  }

  Message on_list_prompts(const Message& m) {
    const auto& h = m.header;
    PromptQuery q;
    q.text_contains = h.value("query", "");
    q.tag = h.value("tag", "");
    q.limit = h.value("limit", 0);
    q.offset = h.value("offset", 0);
    nlohmann::json list = nlohmann::json::array();
    for (const auto& p : list_prompts(*catalog, q))
      list.push_back({{"id", p.id},
                      {"text", p.text},
                      {"negative", p.negative},
                      {"tags", p.tags},
                      {"created_at_ms", p.created_at_ms}});
    return protocol::make_ok({{"prompts", list}});
  }

  Message on_save_prompt(const Message& m) {
    const auto& h = m.header;
    Prompt p;
    p.text = h["text"].get<std::string>();
    p.negative = h.value("negative", "");
    if (h.contains("tags")) p.tags = h["tags"].get<std::vector<std::string>>();
    if (h.contains("id")) {
      p.id = h["id"];
      update_prompt(*catalog, p);
    } else {
      p = add_prompt(*catalog, p);
    }
    return protocol::make_ok({{"prompt", p.id}});
  }

  Message on_list_generations(const Message& m) {
    const auto& h = m.header;
    nlohmann::json list = nlohmann::json::array();
    auto gens = h.contains("prompt") ? list_generations_for_prompt(*catalog, h["prompt"], h.value("limit", 0))
                                     : list_generations(*catalog, h.value("limit", 0), h.value("offset", 0));
    for (const auto& g : gens)
      list.push_back({{"id", g.id},
                      {"prompt", g.prompt_text},
                      {"negative", g.negative},
                      {"seed", g.seed},
                      {"steps", g.steps},
                      {"cfg", g.cfg_scale},
                      {"width", g.width},
                      {"height", g.height},
                      {"frames", g.frames},
                      {"output", g.output_path.string()},
                      {"settings", g.settings}});
    return protocol::make_ok({{"generations", list}});
  }

  // The labelling queue: pending pairs, oldest first, with their prompt and generations.
  Message on_list_preferences(const Message& m) {
    PreferenceFilter pending;
    pending.pending = true;
    pending.pairs = true;
    pending.limit = m.header.value("limit", 100);
    nlohmann::json list = nlohmann::json::array();
    for (const auto& p : list_preferences(*catalog, pending)) list.push_back(pair_json(p));
    const auto c = count_preferences(*catalog);
    return protocol::make_ok({{"pairs", list},
                              {"counts",
                               {{"pending", c.pending},
                                {"preferred", c.preferred},
                                {"skipped", c.skipped},
                                {"good", c.good},
                                {"bad", c.bad}}}});
  }

  // A pair as the labelling view shows it.
  nlohmann::json pair_json(const Preference& p) {
    const auto a = get_generation(*catalog, p.generation_a);
    return {{"id", p.id},
            {"prompt", a ? a->prompt_text : std::string()},
            {"a", p.generation_a},
            {"b", p.generation_b.value_or(0)}};
  }

  // A person's label of a pair, or the undo of their most recent one (answered with the pair, so the view
  // shows it again wherever it stands in the queue).
  Message on_label_preference(const Message& m) {
    const auto& h = m.header;
    if (h.value("undo", false)) {
      PreferenceFilter human;
      human.labeller = "human";
      const auto last = last_labelled(*catalog, human);
      if (!last) throw Error(ErrorCode::not_found, "undo", "no label of a person to undo");
      label_preference(*catalog, last->id, PreferenceChoice::pending, "");
      return protocol::make_ok({{"id", last->id}, {"choice", "pending"}, {"pair", pair_json(*last)}});
    }
    if (!h.contains("id") || !h.contains("choice"))
      throw Error(ErrorCode::invalid_argument, "label_preference", "give \"id\" and \"choice\", or \"undo\"");
    const int64_t id = h["id"];
    const auto choice = preference_choice_from_string(h["choice"].get<std::string>());
    label_preference(*catalog, id, *choice, "human");
    return protocol::make_ok({{"id", id}, {"choice", h["choice"]}});
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

  // The requests a client may send and their handlers; anything else is a protocol error.
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
        {MessageType::list_clusters, &Impl::on_list_clusters},
        {MessageType::list_models, &Impl::on_list_models},
        {MessageType::list_commands, &Impl::on_list_commands},
        {MessageType::list_runs, &Impl::on_list_runs},
        {MessageType::list_datasets, &Impl::on_list_datasets},
        {MessageType::list_clips, &Impl::on_list_clips},
        {MessageType::edit_caption, &Impl::on_edit_caption},
        {MessageType::list_prompts, &Impl::on_list_prompts},
        {MessageType::save_prompt, &Impl::on_save_prompt},
        {MessageType::list_generations, &Impl::on_list_generations},
        {MessageType::list_preferences, &Impl::on_list_preferences},
        {MessageType::label_preference, &Impl::on_label_preference},
        {MessageType::sample_now, &Impl::on_sample_or_save_now},
        {MessageType::save_now, &Impl::on_sample_or_save_now},
        {MessageType::shutdown, &Impl::on_shutdown},
    };
    return routes;
  }

  // Requests whose work runs on the reply pool: the handler checks the request here and returns the rest.
  using DeferredHandler = ReplyPool::Work (Impl::*)(const Message&);
  static const std::map<MessageType, DeferredHandler>& deferred_routes() {
    static const std::map<MessageType, DeferredHandler> routes = {
        {MessageType::clip_frames, &Impl::on_clip_frames},
        {MessageType::generation_frames, &Impl::on_generation_frames},
        {MessageType::list_run_samples, &Impl::on_list_run_samples},
        {MessageType::run_sample_frames, &Impl::on_run_sample_frames},
    };
    return routes;
  }

  Message handle_request(const Message& m) {
    const auto& routes = request_routes();
    const auto route = routes.find(m.type);
    if (route == routes.end())
      throw Error(ErrorCode::protocol, to_string(m.type), "not a request a client can send");
    return (this->*(route->second))(m);
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
      protocol::send(router, {identity},
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
        protocol::send(router, {identity},
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
                      {"events", events},
                      {"heartbeat_ms", o.heartbeat_interval.count()}};
    protocol::send(router, {identity}, welcome);
  }

  void on_message(protocol::Incoming& in) {
    if (in.envelope.empty()) return;
    const std::string& identity = in.envelope.front();
    if (auto* err = std::get_if<protocol::ProtocolError>(&in.content)) {
      protocol::send(router, in.envelope, protocol::make_error(*err));
      return;
    }
    Message& m = std::get<Message>(in.content);
    // A connection made with a Slurm worker's key speaks for that one job's worker and nothing else.
    if (const int64_t keyed_job = ZapHandler::job_of_user_id(in.user_id);
        keyed_job > 0 &&
        (protocol::is_client_request(m.type) || m.header.value("job", int64_t(0)) != keyed_job ||
         (m.type == MessageType::hello && m.header.value("role", "") != "worker"))) {
      protocol::send(
          router, in.envelope,
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
        protocol::send(router, in.envelope, protocol::make_error("protocol", "say hello first"));
        return;
      }
    }
    if (peers[identity] == "worker") return handle_worker(identity, m);
    if (peers[identity] == "remote-worker") return handle_remote_worker(identity, m);
    if (!protocol::is_client_request(m.type)) {
      protocol::send(router, in.envelope,
                     protocol::make_error("protocol", cat(to_string(m.type), " is not a client request")));
      return;
    }
    try {
      if (const auto deferred = deferred_routes().find(m.type); deferred != deferred_routes().end()) {
        if (!heavy.submit(in.envelope, (this->*(deferred->second))(m)))
          throw Error(
              ErrorCode::conflict, to_string(m.type),
              cat("the server is busy with ", kMaxHeavyRequests, " such requests; ask again shortly"));
        return;
      }
      protocol::send(router, in.envelope, handle_request(m));
    } catch (const Error& e) {
      protocol::send(router, in.envelope, protocol::make_error(to_string(e.code()), e.what()));
    } catch (const std::exception& e) {
      protocol::send(router, in.envelope, protocol::make_error("internal", e.what()));
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
  return impl_->events;
}
std::string Server::worker_endpoint() const {
  return impl_->worker_endpoint;
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
  s.slurm =
      std::make_unique<SlurmExecutor>(*s.catalog, s.o.home, s.o.worker_executable, s.o.plan_shards, hooks);
  s.bind();
  s.recover();
  for (size_t i = 0; i < s.o.listen.size(); ++i)
    log_info(cat("serving on ", s.o.listen[i], " (events on ", s.events[i], ")"));
  log_info(cat("home ", s.o.home.string(), "; jobs may use files in ", s.confinement->describe_roots(),
               "; up to ", files, " open files"));
  while (!stop.cancel_requested() && !s.stopping) {
    if (auto in = protocol::receive(s.router, 1, std::chrono::milliseconds(s.heavy.pending() ? 5 : 50)))
      s.on_message(*in);
    s.heavy.drain([&s](const std::vector<std::string>& envelope, const Message& reply) {
      protocol::send(s.router, envelope, reply);
    });
    s.guard_descriptors();
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
