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
// libzmq accepts every CURVE client when no handler is bound, so construct this before binding any tcp://
// endpoint and destroy it after closing them. Runs its own thread with its own REP socket; the public
// functions are thread-safe.

#include <zmq.hpp>

#include <atomic>
#include <filesystem>
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

  // ZAP domain the server sets on its CURVE sockets.
  static constexpr const char* kDomain = "mugv";

  int64_t accepted() const { return accepted_.load(); }
  int64_t rejected() const { return rejected_.load(); }

 private:
  void serve();

  zmq::socket_t socket_;
  std::filesystem::path authorized_keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0}, rejected_{0};
  std::thread thread_;
};

}  // namespace mugv
