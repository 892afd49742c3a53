#pragma once
// The client library every front end uses (the `mugv --server` commands, the studio, the monitor): one
// request at a time with a reply timeout, and a subscriber for the server's events. Not thread-safe: use
// a Client from one thread (the studio keeps it on its network thread, never the UI thread).
//
// tcp:// servers require CURVE (server.h): give the server's public key and this client's key pair, and the
// server must list the client's public key in its authorized_keys. A refused handshake is reported as such,
// at once, not as a timeout: the client watches its socket's handshake events.

#include "service/curve_keys.h"
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
  // `curve` is used for tcp:// endpoints only. Error(forbidden) "server at EP did not accept this client's
  // key (not authorised?)" when the server's ZAP handler refuses the key; Error(protocol) when the security
  // handshake fails otherwise (no keys for a CURVE server, a wrong server key, a server without CURVE).
  explicit Client(std::string endpoint, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000),
                  std::optional<CurveClientKeys> curve = std::nullopt);
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Sends a request and returns the `ok` payload; an `error` reply becomes Error(code, message), no reply
  // in time Error(timeout). After a timeout the connection is reset, so a late reply is never mistaken
  // for the answer to the next request. `blobs`, when given, receives the reply's binary frames
  // (clip_frames).
  nlohmann::json request(protocol::MessageType type, const nlohmann::json& header = nlohmann::json::object(),
                         std::vector<std::string>* blobs = nullptr);
  // The server's events endpoints, the one for this client's transport first (a tcp client gets the tcp
  // one, with a wildcard host such as 0.0.0.0 replaced by the host this client connected to).
  const std::vector<std::string>& events_endpoints() const;
  const std::string& endpoint() const;
  // The credentials given at construction (for an EventSubscriber on the same server).
  const std::optional<CurveClientKeys>& curve() const;
  // The server's `welcome` header: {"protocol", "server" (its version), "events", "heartbeat_ms"}.
  const nlohmann::json& server_info() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A job to queue: what a submit_job request carries (protocol.h). The job waits for every job in depends_on
// to succeed before it starts (catalog/jobs.h).
struct JobSubmission {
  std::string kind;  // a catalog job kind ("train", "encode", ...)
  nlohmann::json params = nlohmann::json::object();
  int priority = 0;
  std::vector<int64_t> depends_on;
  // The request header; priority and depends_on only when set.
  [[nodiscard]] nlohmann::json header() const;
};

// Queues `job` and returns the queued job as the server reports it (its "id", "waiting_on", ...). Throws as
// Client::request (a dependency that does not exist: Error(not_found) naming it).
nlohmann::json submit_job(Client& client, const JobSubmission& job);

// get_job with every stored event of the job (of `types`, all when empty), read page by page: the reply's
// shape with all the events. Throws as Client::request.
[[nodiscard]] nlohmann::json get_job_with_events(Client& client, int64_t job_id,
                                                 const std::vector<std::string>& types = {});

// Receives server events whose topic starts with one of `topics` ("job/12", "job/" for all jobs).
// `curve` as for Client (tcp:// only); a refused subscriber simply receives nothing.
class EventSubscriber {
 public:
  EventSubscriber(const std::string& events_endpoint, const std::vector<std::string>& topics,
                  const std::optional<CurveClientKeys>& curve = std::nullopt);
  ~EventSubscriber();
  // The next event, or nullopt after `timeout`.
  std::optional<protocol::Message> next(std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mugv
