#pragma once
// The client library every front end uses (the `mugv --server` commands, the studio, the monitor): one
// request at a time with a reply timeout, and a subscriber for the server's events. Not thread-safe: use
// a Client from one thread (the studio keeps it on its network thread, never the UI thread).

#include "service/protocol.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mugv {

class Client {
 public:
  // Connects and says hello. Error(timeout) "no MUG-V server answered at EP within N ms" when nobody is
  // there; Error(protocol) with the server's words when it refuses (e.g. a version mismatch).
  explicit Client(std::string endpoint, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Sends a request and returns the `ok` payload; an `error` reply becomes Error(code, message), no reply
  // in time Error(timeout). After a timeout the connection is reset, so a late reply is never mistaken
  // for the answer to the next request.
  nlohmann::json request(protocol::MessageType type, const nlohmann::json& header = nlohmann::json::object());
  const std::vector<std::string>& events_endpoints() const;
  const std::string& endpoint() const;
  // The server's `welcome` header: {"protocol", "server" (its version), "events", "heartbeat_ms"}.
  const nlohmann::json& server_info() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Receives server events whose topic starts with one of `topics` ("job/12", "job/" for all jobs).
class EventSubscriber {
 public:
  EventSubscriber(const std::string& events_endpoint, const std::vector<std::string>& topics);
  ~EventSubscriber();
  // The next event, or nullopt after `timeout`.
  std::optional<protocol::Message> next(std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
