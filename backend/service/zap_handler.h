#pragma once
// The server's ZAP handler (ZeroMQ RFC 27): libzmq asks it, over inproc://zeromq.zap.01 in the server's
// context, whether a peer that completed a CURVE handshake may connect. It accepts exactly the client public
// keys listed in authorized_keys (curve_keys.h) and logs every rejection with the key and the address.
//
// The list is read again for every request, so `mugv keys authorize` and `revoke` take effect for the next
// connection without a restart (a handshake is rare, the file small). An unreadable or malformed file
// rejects everyone until fixed, rather than guessing. Revoking a key does not close a connection that is
// already open.
//
// Besides the listed clients it accepts the keys admitted at run time with admit(): the per-job keys of
// Slurm workers that report over tcp (remote_workers.h). Such a connection carries the User-Id
// "worker:<job id>" (ZMQ_METADATA "User-Id" of each message it sends), so the server can keep it to
// reporting for that one job; a listed client's User-Id is "client:" and its name (or key).
//
// libzmq accepts every CURVE client when no handler is bound, so construct this before binding any tcp://
// endpoint and destroy it after closing them. Runs its own thread with its own REP socket; the public
// functions are thread-safe.

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace mugv {

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `context` (Error(conflict) when another handler holds it) and starts
  // answering. The context must outlive the handler.
  ZapHandler(zmq::context_t& context, std::filesystem::path authorized_keys);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // ZAP domains the server sets on its CURVE sockets: requests (ROUTER) and events (PUB). Worker keys are
  // accepted on the first alone: a worker has no business reading every job's events.
  static constexpr const char* kDomain = "mugv";
  static constexpr const char* kEventsDomain = "mugv-events";

  // The User-Id of a connection made with a worker key admitted for `job_id`.
  static std::string worker_user_id(int64_t job_id);
  // The job a User-Id names, when it is a worker's; 0 otherwise.
  static int64_t job_of_user_id(const std::string& user_id);

  // Accepts `public_key` (Z85) from now on as the worker of `job_id`, until forget(). Error(invalid_argument)
  // for a malformed key.
  void admit(const std::string& public_key, int64_t job_id);
  // Stops accepting the key (connections already made stay open; the server stops listening to them).
  void forget(const std::string& public_key);

  int64_t accepted() const { return accepted_.load(); }
  int64_t rejected() const { return rejected_.load(); }

 private:
  void serve();

  zmq::socket_t socket_;
  std::filesystem::path authorized_keys_;
  std::mutex admitted_mutex_;
  std::map<std::string, int64_t> admitted_;  // Z85 public key -> job id
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0}, rejected_{0};
  std::thread thread_;
};

}  // namespace mugv
