#pragma once
// The server's two sockets and what guards them: the ROUTER that takes requests and worker reports and the
// PUB that publishes events, bound to every endpoint the server listens on (each request endpoint has its
// events endpoint beside it, protocol.h events_endpoint_for), plus the private ipc endpoint the local
// workers connect to when no ipc endpoint is listed.
//
// tcp endpoints require CURVE: the server's key pair is loaded from (or made in) the keys folder, and a ZAP
// handler admits the keys of authorized_keys as clients; the PUB socket has its own ZAP domain, where only
// client keys are admitted (zap_handler.h). ipc endpoints are bound before the CURVE options are set, so the
// studio's and the workers' local sockets need no keys.
//
// guard_descriptors() stops listening on tcp while open file descriptors come within a reserve of the
// limit (libzmq aborts the process when accepting a connection finds none) and listens again once they are
// back down; ipc endpoints keep working throughout.
//
// Throws Error(io) naming an endpoint that cannot be bound, and the errors of the keys folder (a malformed
// authorized_keys file names its line). Not thread-safe: the server's thread alone uses the sockets.

#include "service/curve_keys.h"
#include "service/zap_handler.h"

#include <zmq.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

// The soft limit on open files, raised to the hard one (a server holds one descriptor per connection);
// returns the limit now in force.
size_t raise_open_file_limit();

class ServerEndpoints {
 public:
  // Binds `listen` (ipc:// and tcp:// endpoints) and the private worker endpoint when `listen` has no ipc
  // one. `keys_dir` empty: `home`'s keys folder (curve_keys.h).
  ServerEndpoints(const std::vector<std::string>& listen, const std::filesystem::path& home,
                  const std::filesystem::path& keys_dir);

  zmq::socket_t& router() { return router_; }
  zmq::socket_t& pub() { return pub_; }
  // Where the local workers connect: the first listed ipc endpoint, or the private one.
  const std::string& worker_endpoint() const { return worker_endpoint_; }
  // The events endpoint of each listed endpoint, in the order of `listen`.
  const std::vector<std::string>& events() const { return events_; }
  // The ZAP handler and the server's CURVE keys; null while no tcp endpoint is listed.
  ZapHandler* zap() { return zap_.get(); }
  const CurveKeyPair* server_keys() const { return server_keys_ ? &*server_keys_ : nullptr; }

  // Checks the open descriptors (at most every 20 ms) and pauses or resumes the tcp endpoints.
  void guard_descriptors();

 private:
  void bind_one(zmq::socket_t& socket, const std::string& endpoint);
  std::string bind_pair(const std::string& endpoint);
  void require_curve(const std::filesystem::path& home, const std::filesystem::path& keys_dir);

  zmq::context_t context_{1};
  // Declared before the sockets so that it is destroyed after them: libzmq lets every CURVE client in
  // while no ZAP handler is bound.
  std::unique_ptr<ZapHandler> zap_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  zmq::socket_t pub_{context_, zmq::socket_type::pub};
  std::optional<CurveKeyPair> server_keys_;
  std::string worker_endpoint_;
  std::vector<std::string> events_;

  struct TcpEndpoint {
    zmq::socket_t* socket;
    std::string endpoint;
    bool bound = true;
  };
  std::vector<TcpEndpoint> tcp_bound_;
  bool tcp_paused_ = false;
  std::chrono::steady_clock::time_point next_fd_check_{};
};

}  // namespace mugv
