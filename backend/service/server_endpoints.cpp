#include "service/server_endpoints.h"

#include "core/error.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/zmq_io.h"

#include <sys/resource.h>

#include <algorithm>
#include <functional>
#include <map>

namespace mugv {

using Clock = std::chrono::steady_clock;

namespace {

// A peer that has not finished the CURVE handshake within this time is dropped.
constexpr int kTcpHandshakeMs = 5000;

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

// Unix socket paths are limited to 107 bytes; a deep home gets its worker socket in the runtime dir instead,
// named after the home so that a restarted server finds its workers at the same place.
std::string private_worker_endpoint(const fs::path& home) {
  fs::path in_home = home / "ipc" / "workers.sock";
  if (in_home.string().size() < 100) return "ipc://" + in_home.string();
  return "ipc://" +
         (runtime_dir() / cat("workers-", std::hash<std::string>{}(home.string()), ".sock")).string();
}

}  // namespace

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

ServerEndpoints::ServerEndpoints(const std::vector<std::string>& listen, const fs::path& home,
                                 const fs::path& keys_dir) {
  protocol::apply_common_options(router_);
  protocol::apply_common_options(pub_);
  // An endpoint takes the socket's options as they are when it is bound: ipc endpoints are bound first,
  // before the CURVE options are set for the tcp ones.
  std::map<std::string, std::string> events_of;
  std::vector<std::string> secure;
  for (const auto& ep : listen) {
    if (starts_with(ep, "tcp://")) {
      secure.push_back(ep);
      continue;
    }
    if (starts_with(ep, "ipc://")) {
      ensure_private_dir(fs::path(ep.substr(6)).parent_path());
      if (worker_endpoint_.empty()) worker_endpoint_ = ep;
    }
    events_of[ep] = bind_pair(ep);
  }
  if (worker_endpoint_.empty()) {
    worker_endpoint_ = private_worker_endpoint(home);
    ensure_private_dir(fs::path(worker_endpoint_.substr(6)).parent_path());
    bind_one(router_, worker_endpoint_);
  }
  if (!secure.empty()) {
    require_curve(home, keys_dir);
    for (const auto& ep : secure) {
      events_of[ep] = bind_pair(ep);
      tcp_bound_.push_back({&router_, ep, true});
      tcp_bound_.push_back({&pub_, events_of[ep], true});
    }
  }
  for (const auto& ep : listen) events_.push_back(events_of[ep]);
}

void ServerEndpoints::bind_one(zmq::socket_t& socket, const std::string& ep) {
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
void ServerEndpoints::guard_descriptors() {
  if (tcp_bound_.empty() || Clock::now() < next_fd_check_) return;
  next_fd_check_ = Clock::now() + std::chrono::milliseconds(20);
  const size_t limit = open_file_limit(), open = open_file_count();
  // A quarter of the limit: with the 65,536 of the shipped systemd unit, a flood would have to open
  // 16,000 connections between two checks (at most one loop turn, 50 ms) to get past it.
  const size_t reserve = std::max<size_t>(32, limit / 4);
  if (!tcp_paused_ && open + reserve >= limit) {
    log_warning(cat(open, " of ", limit, " file descriptors in use: not accepting tcp connections for now"));
    for (auto& t : tcp_bound_) {
      try {
        t.socket->unbind(t.endpoint);
      } catch (const zmq::error_t&) {
      }
      t.bound = false;
    }
    tcp_paused_ = true;
  } else if (tcp_paused_ && open + 2 * reserve < limit) {
    for (auto& t : tcp_bound_) {
      if (t.bound) continue;
      try {
        t.socket->bind(t.endpoint);
        t.bound = true;
      } catch (const zmq::error_t& e) {
        log_warning(cat(t.endpoint, ": cannot listen again yet: ", e.what()));
        return;  // the rest at the next check
      }
    }
    tcp_paused_ = false;
    log_info(cat(open, " of ", limit, " file descriptors in use: accepting tcp connections again"));
  }
}

// Binds a request endpoint and its events endpoint; returns the latter.
std::string ServerEndpoints::bind_pair(const std::string& ep) {
  bind_one(router_, ep);
  std::string events_ep = protocol::events_endpoint_for(ep);
  bind_one(pub_, events_ep);
  return events_ep;
}

// The server key (made on first use), the ZAP handler, and CURVE on both sockets for what is bound next.
void ServerEndpoints::require_curve(const fs::path& home, const fs::path& keys_dir) {
  const fs::path dir = keys_dir.empty() ? mugv::keys_dir(home) : keys_dir;
  bool created = false;
  const CurveKeyPair keys = load_or_create_keypair(dir, KeyRole::server, &created);
  server_keys_ = keys;
  const fs::path authorized = dir / "authorized_keys";
  const size_t clients = read_authorized_keys(authorized).size();  // a malformed file stops the start here
  zap_ = std::make_unique<ZapHandler>(context_, authorized);
  for (zmq::socket_t* s : {&router_, &pub_}) {
    // A peer that has not finished the CURVE handshake within this time is dropped, so idle unauthenticated
    // connections cannot pile up (libzmq's default waits 30 s).
    s->set(zmq::sockopt::handshake_ivl, static_cast<int>(kTcpHandshakeMs));
    s->set(zmq::sockopt::curve_server, true);
    s->set(zmq::sockopt::curve_secretkey, keys.secret_key);
    s->set(zmq::sockopt::zap_domain, s == &pub_ ? ZapHandler::kEventsDomain : ZapHandler::kDomain);
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

}  // namespace mugv
